"""`make demo`: run the example content pipeline against the bundled emulator and show what it made.

Airflow's home is ``.airflow/`` (SQLite); images land in ``demo-output/``. With
MINDVIDEO_API_KEY set, the pipeline runs against the real API instead (MINDVIDEO_BASE_URL,
default https://api.mindvideo.ai), and is charged for it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_HOME = ROOT / ".airflow"
OUTPUT = ROOT / "demo-output"
DAG_ID = "mindvideo_content_pipeline"
BIN = Path(sys.executable).parent


def main() -> int:
    AIRFLOW_HOME.mkdir(exist_ok=True)
    OUTPUT.mkdir(exist_ok=True)
    for old in OUTPUT.glob("*.png"):  # show what this run made, not an earlier one
        old.unlink()
    conf = json.dumps({"destination": OUTPUT.as_uri()})
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
    }
    if not os.environ.get("MINDVIDEO_API_KEY"):
        # The emulator serves its images on 127.0.0.1, which downloads refuse unless allowed.
        env["AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS"] = "true"
    step("Preparing Airflow (SQLite in .airflow/)")
    airflow(["db", "migrate"], env)
    with mindvideo_api() as (base_url, api_key, where):
        env["AIRFLOW_CONN_MINDVIDEO_DEFAULT"] = json.dumps(
            {"conn_type": "mindvideo", "host": base_url, "password": api_key}
        )
        step(f"Running {DAG_ID} with `airflow dags test` on {where}")
        log = AIRFLOW_HOME / "demo-run.log"
        started = time.monotonic()
        airflow(["dags", "test", DAG_ID, "--conf", conf], env, log=log)
        run_id, state, summary = latest_run()
        step(f"Run {run_id} ended {state} in {time.monotonic() - started:.0f} s (log: {log.relative_to(ROOT)})")
        if summary is None:
            print(f"No summary was produced; see {log}", file=sys.stderr)
            return 1
    rows = [
        (image["prompt"], image["task_id"], image["status"], str(image["cost"]), ", ".join(map(shown, image["files"])))
        for image in summary["images"]
    ]

    print()
    table(("prompt", "MindVideo task", "status", "cost", "file"), rows)
    print(f"\n{len(rows)} image(s), total cost {summary['total_cost']}; saved by the pipeline's `save` task")
    return 0 if state == "success" else 1


@contextmanager
def mindvideo_api() -> Iterator[tuple[str, str, str]]:
    """The real API if MINDVIDEO_API_KEY is set, else the emulator in a process of its own."""
    key = os.environ.get("MINDVIDEO_API_KEY")
    if key:
        base_url = os.environ.get("MINDVIDEO_BASE_URL", "https://api.mindvideo.ai")
        yield base_url, key, f"the real MindVideo API at {base_url} (charged)"
        return
    from airflow_provider_mindvideo.emulator.server import emulator_process

    with emulator_process() as base_url:
        yield base_url, "mv_test_emulator", f"the bundled emulator at {base_url}"


def airflow(args: list[str], env: dict[str, str], log: Path | None = None) -> None:
    with open(log or os.devnull, "w") as out:
        result = subprocess.run([str(BIN / "airflow"), *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0 and log is None:
        raise SystemExit(f"`airflow {' '.join(args)}` failed")


def latest_run() -> tuple[str, str, dict[str, Any] | None]:
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        run_id, state = db.execute(
            "select run_id, state from dag_run where dag_id = ? order by id desc limit 1", (DAG_ID,)
        ).fetchone()
        row = db.execute(
            "select value from xcom where dag_id = ? and run_id = ? and task_id = 'summarize' and key = 'return_value'",
            (DAG_ID, run_id),
        ).fetchone()
    return run_id, state, json.loads(row[0]) if row else None


def shown(stored: str) -> str:
    """A stored file's URL, relative to the project when it is in it."""
    path = Path(stored.removeprefix("file://"))
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else stored


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    def width(text: str) -> int:  # CJK characters take two columns in a terminal
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)

    widths = [max(width(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell + " " * (w - width(cell)) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())

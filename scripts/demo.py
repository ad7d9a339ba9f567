"""`make demo`: run the example content pipeline against the bundled emulator and show what it made.

Airflow's home is ``.airflow/`` (SQLite); images land in ``demo-output/``, replacing the previous
demo's only once the new run has succeeded. With MINDVIDEO_API_KEY set, the pipeline runs against
the real API instead (MINDVIDEO_BASE_URL, default https://api.mindvideo.ai), and is charged for
it; the API and the key are checked first, without creating anything, so that an unreachable
API or a refused key fails in seconds. MINDVIDEO_DEMO_HOME moves ``.airflow/`` and
``demo-output/`` out of the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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
HOME = Path(os.environ.get("MINDVIDEO_DEMO_HOME") or ROOT)
AIRFLOW_HOME = HOME / ".airflow"
OUTPUT = HOME / "demo-output"
# This run's images, moved into OUTPUT only if the run succeeds.
INCOMING = AIRFLOW_HOME / "demo-incoming"
DAG_ID = "mindvideo_content_pipeline"
BIN = Path(sys.executable).parent
# The cause of a failed run: the last line of each traceback (``package.SomeError: message``).
ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Exit|Interrupt)\b.*$")
MAX_CAUSES = 5


def main() -> int:
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    OUTPUT.mkdir(exist_ok=True)
    shutil.rmtree(INCOMING, ignore_errors=True)
    INCOMING.mkdir()
    conf = json.dumps({"destination": INCOMING.as_uri()})
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        # `airflow dags test` runs triggers in line: no fast-resume race to hold events back for.
        "AIRFLOW__MINDVIDEO__RESUME_NOT_BEFORE": "0",
    }
    if not os.environ.get("MINDVIDEO_API_KEY"):
        # The emulator serves its images on 127.0.0.1, which downloads refuse unless allowed.
        env["AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS"] = "true"
    with mindvideo_api() as (base_url, api_key, where):
        env["AIRFLOW_CONN_MINDVIDEO_DEFAULT"] = json.dumps(
            {"conn_type": "mindvideo", "host": base_url, "password": api_key}
        )
        step(f"Checking that {base_url} answers and accepts the key (creates nothing)")
        problem = api_problem(env)
        if problem:
            print(f"\nCannot run the demo: {problem}", file=sys.stderr)
            print(f"Nothing was created or charged, and {kept()}", file=sys.stderr)
            return 1
        step(f"Preparing Airflow (SQLite in {shown(AIRFLOW_HOME)}/)")
        airflow(["db", "migrate"], env)
        step(f"Running {DAG_ID} with `airflow dags test` on {where}")
        log = AIRFLOW_HOME / "demo-run.log"
        started, previous = time.monotonic(), newest_run_number()
        airflow(["dags", "test", DAG_ID, "--conf", conf], env, log=log)
        run_id, state, summary = run_after(previous)
        step(f"Run {run_id} ended {state} in {time.monotonic() - started:.0f} s (log: {shown(log)})")
        if state != "success" or summary is None:
            report_failure(run_id, log)
            return 1
    saved = publish(summary)
    rows = [
        (image["prompt"], image["task_id"], image["status"], str(image["cost"]), ", ".join(saved[image["task_id"]]))
        for image in summary["images"]
    ]

    print()
    table(("prompt", "MindVideo task", "status", "cost", "file"), rows)
    print(f"\n{len(rows)} image(s), total cost {summary['total_cost']}; saved by the pipeline's `save` task")
    return 0


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


def api_problem(env: dict[str, str]) -> str | None:
    """Why the API cannot be used (unreachable, key refused), or None; creates nothing.

    The hook's connection test looks up a task id that cannot exist, once, without retries:
    a 404 proves the address and the key. Run in a child process so that this one never
    imports Airflow with the demo's settings.
    """
    probe = (
        "import json\n"
        "from airflow_provider_mindvideo.hooks import MindVideoHook\n"
        "print(json.dumps(MindVideoHook(timeout=15).test_connection()))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return "the connection check crashed:\n" + "\n".join(result.stderr.strip().splitlines()[-MAX_CAUSES:])
    ok, message = json.loads(result.stdout.strip().splitlines()[-1])
    return None if ok else str(message)


def report_failure(run_id: str, log: Path) -> None:
    """The cause on the console: failed tasks and the last distinct errors of the run's log."""
    failed = failed_tasks(run_id)
    if failed:
        print(f"\nFailed tasks: {', '.join(failed)}", file=sys.stderr)
    causes = error_lines(log.read_text(errors="replace"))
    if causes:
        print("Cause:", file=sys.stderr)
        for cause in causes:
            print(f"  {cause}", file=sys.stderr)
    else:
        print(f"No error found in the log; its last lines (full log: {shown(log)}):", file=sys.stderr)
        for line in [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-15:]:
            print(f"  {line}", file=sys.stderr)
    print(f"\nThis run's files (if any) are in {shown(INCOMING)}/; {kept()}", file=sys.stderr)


def error_lines(log_text: str) -> list[str]:
    """The log's distinct exception lines (at most MAX_CAUSES, the latest), in the order they last occurred."""
    causes: dict[str, str] = {}
    for line in log_text.splitlines():
        if ERROR_LINE.match(line):
            # Mapped tasks fail alike: the same cause with another request id or timing is said once.
            cause = re.sub(r"request_id=\w+|\d+(?:\.\d+)?", "#", line)
            causes.pop(cause, None)
            causes[cause] = line
    return list(causes.values())[-MAX_CAUSES:]


def failed_tasks(run_id: str) -> list[str]:
    """The run's task instances that failed themselves (not those skipped because of them)."""
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        rows = db.execute(
            "select task_id, map_index from task_instance where dag_id = ? and run_id = ? and state = 'failed' "
            "order by task_id, map_index",
            (DAG_ID, run_id),
        ).fetchall()
    return [f"{task}[{index}]" if index >= 0 else task for task, index in rows]


def publish(summary: dict[str, Any]) -> dict[str, list[str]]:
    """Replace the previous demo's images with this run's; returns each task's files as shown."""
    for old in OUTPUT.glob("*.png"):
        old.unlink()
    saved: dict[str, list[str]] = {}
    for image in summary["images"]:
        for stored in image["files"]:
            source = Path(stored.removeprefix("file://"))
            target = OUTPUT / source.name
            shutil.move(source, target)
            saved.setdefault(image["task_id"], []).append(shown(target))
    return saved


def kept() -> str:
    """What became of the previous demo's images (nothing: they stay until a run succeeds)."""
    earlier = len(list(OUTPUT.glob("*.png")))
    if not earlier:
        return "there were no earlier images to keep."
    return f"the previous demo's {earlier} image(s) in {shown(OUTPUT)}/ are kept."


def airflow(args: list[str], env: dict[str, str], log: Path | None = None) -> None:
    """Run an Airflow command; its output goes to ``log``, else it is shown only if the command fails."""
    command = [str(BIN / "airflow"), *args]
    if log is not None:
        with open(log, "w") as out:
            subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        return
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        last = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"`airflow {' '.join(args)}` failed:\n{last}")


def newest_run_number() -> int:
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        return int(db.execute("select coalesce(max(id), 0) from dag_run where dag_id = ?", (DAG_ID,)).fetchone()[0])


def run_after(previous: int) -> tuple[str, str, dict[str, Any] | None]:
    """The run that `dags test` started (never an earlier demo's): id, state and summary."""
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        found = db.execute(
            "select run_id, state from dag_run where dag_id = ? and id > ? order by id desc limit 1", (DAG_ID, previous)
        ).fetchone()
        if found is None:
            return "(none started)", "not started", None
        run_id, state = found
        row = db.execute(
            "select value from xcom where dag_id = ? and run_id = ? and task_id = 'summarize' and key = 'return_value'",
            (DAG_ID, run_id),
        ).fetchone()
    return run_id, state, json.loads(row[0]) if row else None


def shown(path: Path) -> str:
    """A path relative to the working directory when it is inside it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


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

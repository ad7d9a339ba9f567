"""Server time per MindVideo page at 100,000 ledger rows and a 10,000-item batch run (p50, p90).

Fills a SQLite ledger with ``--rows`` creates over 90 days in 40 DAGs and 6 models (one run of
one DAG holding a ``--items``-item batch with its manifest), then times each JSON route the pages
call, through the plugin's FastAPI app in process (``TestClient``: no network, no browser). The
user is given directly (Airflow's token check is Airflow's cost, not the page's); the auth
manager grants 20 of the 40 DAGs, so the figures are filtered as for a real viewer.

Each route is timed twice: with the ledger unchanged between requests (an answer the app keeps
while the ledger's fingerprint stays the same, ui.freshness), and with one ledger row of the big
run changed before every request (outside the timing), so that every answer is computed anew: the
time a page takes while runs are writing the ledger.

``python benchmarks/ui_pages.py [--rows 100000] [--items 10000] [-n 30] [--write]`` prints
milliseconds; ``--write`` also writes benchmarks/ui-results.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HOME = tempfile.mkdtemp(prefix="mindvideo-ui-bench-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__MINDVIDEO__BATCH_FOLDER"] = f"file://{_HOME}/batches"

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert, update  # noqa: E402

from airflow_provider_mindvideo.batch.plan import ItemResult, dump_manifest  # noqa: E402
from airflow_provider_mindvideo.spend.engines import engine_for_url  # noqa: E402
from airflow_provider_mindvideo.spend.schema import ensure_schema, spend  # noqa: E402

DAGS = [f"dag_{n:02d}" for n in range(40)]
MODELS = ["flux-1", "gpt-image-2", "kling-2", "veo-3", "sdxl", "wan-2"]


class _HalfTheDags:
    """An auth manager's two calls the app makes: every even-numbered DAG is readable."""

    def filter_authorized_dag_ids(self, *, dag_ids: set[str], user: Any, method: str = "GET") -> set[str]:
        return {dag for dag in dag_ids if int(dag.rsplit("_", 1)[-1]) % 2 == 0}

    def is_authorized_dag(self, **_: Any) -> bool:
        return False


def fill(rows: int, items: int) -> None:
    engine = engine_for_url(f"sqlite:///{_HOME}/mindvideo_ledger.db")
    ensure_schema(engine)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    batch: list[dict[str, Any]] = []
    with engine.begin() as connection:
        for n in range(rows):
            big = n < items  # the first rows are the big run's items
            state = "released" if n % 50 == 7 else ("reserved" if n % 97 == 3 else "settled")
            batch.append(
                {
                    "idempotency_key": f"key-{n}",
                    "account": "mindvideo_default",
                    "dag_id": "dag_00" if big else DAGS[n % len(DAGS)],
                    "run_id": "big_run" if big else f"run_{n % 300}",
                    "task_id": "batch" if big else "make",
                    "map_index": None,
                    "try_number": 1,
                    "model": MODELS[n % len(MODELS)],
                    "mindvideo_task_id": f"mv_{n}",
                    "budgets": "account",
                    "reserved": 50_000,
                    "estimated": 40_000,
                    "actual": 40_000,
                    "cost": 0 if state == "released" else 40_000,
                    "state": state,
                    "created_at": now - dt.timedelta(minutes=(n * 1297) % (90 * 24 * 60)),
                }
            )
            if len(batch) == 5000:
                connection.execute(insert(spend), batch)
                batch = []
        if batch:
            connection.execute(insert(spend), batch)
    folder = Path(_HOME) / "batches" / "dag_00" / "big_run" / "batch"
    folder.mkdir(parents=True)
    manifest = [
        ItemResult(
            line=n + 2,
            position=n,
            model=MODELS[n % len(MODELS)],
            status="succeeded",
            task_id=f"mv_{n}",
            idempotency_key=f"key-{n}",
            cost_estimate=0.04,
            output_urls=[f"https://cdn.example/out/{n}.png"],
        )
        for n in range(items)
    ]
    (folder / "manifest.jsonl").write_text(dump_manifest(manifest))


def client() -> TestClient:
    from airflow.api_fastapi import app as airflow_app
    from airflow.api_fastapi.core_api.security import get_user

    from airflow_provider_mindvideo.ui.app import app

    airflow_app._AuthManagerState.instance = _HalfTheDags()  # type: ignore[assignment]
    app.dependency_overrides[get_user] = lambda: object()
    server = FastAPI()
    server.mount("/mindvideo", app)
    return TestClient(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("-n", type=int, default=30, help="requests per page")
    parser.add_argument("--write", action="store_true", help="write benchmarks/ui-results.md")
    args = parser.parse_args()
    started = time.perf_counter()
    # The gallery reads the run's XComs from Airflow's metadata DB: a real (empty) one, as on a server.
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    fill(args.rows, args.items)
    print(f"filled {args.rows} ledger rows and a {args.items}-item manifest in {time.perf_counter() - started:.1f} s")
    http = client()
    pages = {
        "spend page, 30 days by DAG": ("/api/spend", {"days": 30}),
        "spend page, 90 days by model": ("/api/spend", {"days": 90, "by": "model"}),
        "spend page, one DAG": ("/api/spend", {"days": 90, "dag_id": "dag_02"}),
        "gallery, 10,000-item run, page 1": ("/api/items", {"dag_id": "dag_00", "run_id": "big_run"}),
        "gallery, 10,000-item run, page 100": ("/api/items", {"dag_id": "dag_00", "run_id": "big_run", "page": 100}),
        "gallery, one task of it": ("/api/items", {"dag_id": "dag_00", "run_id": "big_run", "task_id": "batch"}),
        "recent-task thumbnail lookup": (
            "/api/items",
            {"dag_id": "dag_00", "run_id": "big_run", "mindvideo_task_id": "mv_9000", "per_page": 1},
        ),
    }
    engine = engine_for_url(f"sqlite:///{_HOME}/mindvideo_ledger.db")
    changes = iter(range(1, 10**9))

    def change_a_row() -> None:
        # One create of the big run gets one micro-unit dearer: every fingerprint changes.
        with engine.begin() as connection:
            connection.execute(update(spend).where(spend.c.id == 1 + next(changes) % 50).values(cost=spend.c.cost + 1))

    lines = [f"| {'page':40} | kept p50 | kept p90 | changed p50 | changed p90 |", f"|{'-' * 42}|---:|---:|---:|---:|"]
    print(lines[0])
    for name, (path, params) in pages.items():
        assert http.get(f"/mindvideo{path}", params=params).status_code == 200  # warm: the manifest's parse
        figures = []
        for before in (None, change_a_row):
            times = []
            for _ in range(args.n):
                if before is not None:
                    before()
                start = time.perf_counter()
                response = http.get(f"/mindvideo{path}", params=params)
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, response.text
            times.sort()
            figures += [statistics.median(times), times[int(0.9 * (len(times) - 1))]]
        lines.append(f"| {name:40} | " + " | ".join(f"{f:.0f}" for f in figures) + " |")
        print(lines[-1])
    if args.write:
        _write(args, lines, time.perf_counter() - started)


def _write(args: argparse.Namespace, lines: list[str], seconds: float) -> None:
    load = os.getloadavg()
    page = [
        "# MindVideo UI pages: server time per request",
        "",
        f"`python benchmarks/ui_pages.py --rows {args.rows} --items {args.items} -n {args.n} --write`, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min); "
        f"{seconds:.0f} s in all.",
        "",
        f"A SQLite ledger of {args.rows:,} creates over 90 days in 40 DAGs (the viewer may read 20) and one run "
        f"of a {args.items:,}-item batch; milliseconds per request through the plugin's FastAPI app in process. "
        "*kept*: the ledger unchanged between requests (the app gives its kept answer after checking the "
        "ledger's fingerprint); *changed*: one ledger row changed before every request, so every answer "
        "is computed anew.",
        "",
        *lines,
        "",
    ]
    (Path(__file__).parent / "ui-results.md").write_text("\n".join(page))


if __name__ == "__main__":
    main()

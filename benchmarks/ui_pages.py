"""Server time per MindVideo page at 100,000 ledger rows and a 10,000-item batch run (p50, p90).

Fills a SQLite ledger with ``--rows`` creates over 90 days in 40 DAGs and 6 models (one run of
one DAG holding a ``--items``-item batch with its manifest), then times each JSON route the pages
call, through the plugin's FastAPI app in process (``TestClient``: no network, no browser). The
user is given directly (Airflow's token check is Airflow's cost, not the page's); the auth
manager grants 20 of the 40 DAGs, so the figures are filtered as for a real viewer.

``python benchmarks/ui_pages.py [--rows 100000] [--items 10000] [-n 30]`` prints milliseconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
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
from sqlalchemy import insert  # noqa: E402

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
    print(f"{'page':40} {'p50 ms':>8} {'p90 ms':>8}")
    for name, (path, params) in pages.items():
        assert http.get(f"/mindvideo{path}", params=params).status_code == 200  # warm: the manifest's parse
        times = []
        for _ in range(args.n):
            start = time.perf_counter()
            response = http.get(f"/mindvideo{path}", params=params)
            times.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.text
        times.sort()
        print(f"{name:40} {statistics.median(times):8.1f} {times[int(0.9 * (len(times) - 1))]:8.1f}")


if __name__ == "__main__":
    main()

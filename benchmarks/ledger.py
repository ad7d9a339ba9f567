"""Client time per create added by the spend ledger: one ``reserve`` + one ``settle`` (two transactions).

Against the embedded SQLite file and a private PostgreSQL cluster on loopback (started here with
initdb/pg_ctl when its binaries are installed: ``bash scripts/install_distributed_deps.sh``).
Wall time per pair is what a create waits; CPU time (``time.thread_time``) is what the worker or
triggerer pays. Each create counts against an account day budget and a named month budget.

``python benchmarks/ledger.py [-n 2000]`` prints p50 and p99 of both, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from airflow_provider_mindvideo.spend.budgets import budgets_from_extras
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.ledger import Ledger
from airflow_provider_mindvideo.spend.records import CreateRecord

EXTRAS = {"budgets": {"account": {"day": 10**9}, "marketing": {"month": 10**9}}}


def measure(url: str, count: int) -> tuple[list[float], list[float]]:
    ledger = Ledger(engine_for_url(url))
    config = budgets_from_extras(EXTRAS, "mindvideo_default")
    walls, cpus = [], []
    for n in range(count):
        create = CreateRecord(f"bench-{count}-{n}", "gpt-image-2", dag_id="bench", run_id="r", task_id="t", map_index=n)
        wall, cpu = time.perf_counter(), time.thread_time()
        ledger.reserve(create, 0.04, config, "marketing")
        ledger.settle(create.idempotency_key, estimated=0.04, mindvideo_task_id=f"task-{n}")
        cpus.append((time.thread_time() - cpu) * 1000)
        walls.append((time.perf_counter() - wall) * 1000)
    return walls, cpus


def percentiles(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100)
    return f"p50 {cuts[49]:6.2f} ms  p99 {cuts[98]:6.2f} ms"


@contextmanager
def postgres() -> Iterator[str | None]:
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not binaries:
        yield None
        return
    bin_dir = binaries[-1].parent
    data = Path(tempfile.mkdtemp(prefix="mindvideo-ledger-bench-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    quiet = {"check": True, "stdout": subprocess.DEVNULL}
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "airflow"], **quiet)
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    pg_ctl = [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "log"), "-w"]
    subprocess.run([*pg_ctl, "start"], **quiet)
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield f"postgresql+psycopg2://airflow@127.0.0.1:{port}/postgres"
    finally:
        with suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGQUIT)
        time.sleep(1)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="creates per database")
    count = parser.parse_args().n
    with tempfile.TemporaryDirectory() as folder, postgres() as pg_url:
        targets = {"sqlite (WAL, file)": f"sqlite:///{folder}/ledger.db", "postgresql (loopback)": pg_url}
        print(f"reserve + settle, {count} creates each, one client thread")
        for name, url in targets.items():
            if url is None:
                print(f"{name:24} skipped: no PostgreSQL binaries (bash scripts/install_distributed_deps.sh)")
                continue
            measure(url, min(100, count))  # warm: tables, connections, caches
            walls, cpus = (
                measure(url.replace("ledger.db", "ledger2.db"), count) if "sqlite" in url else measure(url, count)
            )
            print(f"{name:24} wall {percentiles(walls)}   cpu {percentiles(cpus)}")


if __name__ == "__main__":
    main()

"""What the spend ledger costs a batch: the batch trigger with and without a budget, on SQLite and loopback PostgreSQL.

Each configuration runs the batch trigger (``MindVideoBatchTrigger.run``, the triggerer's event
loop, ledger calls in its threads) in a fresh process of its own against the batch benchmark's
emulator (rate-limited like an account): first a 200-item warm-up batch (imports, pools, the
ledger's tables), then the measured one. Per configuration: wall time of the measured batch and
the process's CPU (user + system, every thread) per item; ratios against the run without a
budget measured in the same invocation. Targets (issue 27): wall <= 1.1x, CPU per item <= 1.2x;
printed as met or not, never asserted. Then ``benchmarks/ledger.py``'s client time per create
(reserve + settle) on both databases, p50 and p99.

The ledger's own database server (PostgreSQL) runs in other processes: its CPU is not in the
trigger's figure and is reported apart.

Usage: ``python benchmarks/ledger_batch.py [--items 10000] [--rounds 1] [--creates 2000]``;
writes ``benchmarks/ledger-results.md`` (not with ``--quick``: 500 items, a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.batch import CLIENT_RATE, bench_emulator, emulator_bound_minimum
from benchmarks.ledger import measure as measure_creates
from benchmarks.ledger import postgres
from benchmarks.machine import machine

RESULTS = Path(__file__).with_name("ledger-results.md")
WALL_TARGET = 1.1
CPU_TARGET = 1.2
WARM_UP_ITEMS = 200
# Never reached: the benchmark measures the books, not refusals.
BUDGETS = {"account": {"day": 10**9}}


@dataclass
class Run:
    ledger: str
    items: int
    wall_s: float
    cpu_s: float
    server_cpu_s: float | None
    counts: dict[str, int]

    @property
    def cpu_ms_per_item(self) -> float:
        return self.cpu_s / self.items * 1000


# -- the child: one configuration in a process of its own -------------------------------------------


async def run_batch(folder: Path, name: str, items: int) -> dict[str, Any]:
    from airflow_provider_mindvideo.batch.plan import dump_work_list, entries_from_list, work_list
    from airflow_provider_mindvideo.batch.trigger import MindVideoBatchTrigger
    from benchmarks.batch_trigger_probe import Ti

    prompts = [{"prompt": f"ledger {name} picture {i}", "size": "16:9"} for i in range(items)]
    work = work_list(entries_from_list(prompts), "gpt-image-2", Ti(run_id=f"manual__{name}"))
    (folder / f"{name}.work.jsonl").write_text(dump_work_list(work))
    trigger = MindVideoBatchTrigger(
        f"file://{folder}/{name}.work.jsonl",
        f"file://{folder}/{name}.jsonl",
        max_active=400,
        poll_interval=4.5,
        max_poll_interval=30.0,
        progress_interval=15.0,
        creator={"dag_id": "bench_ledger", "run_id": f"manual__{name}", "task_id": "generate", "map_index": -1},
    )
    events = [event.payload async for event in trigger.run()]
    return dict(events[0]["summary"]["counts"])


def child(items: int, folder: Path) -> None:
    asyncio.run(run_batch(folder, "warmup", WARM_UP_ITEMS))
    wall, cpu = time.perf_counter(), time.process_time()
    counts = asyncio.run(run_batch(folder, "measured", items))
    result = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "counts": counts}
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent: the emulator, the databases, one child per configuration ---------------------------


def connection_env(emulator: str, ledger_url: str | None, home: Path) -> dict[str, str]:
    """The child's environment: the MindVideo connection, with budgets and the ledger's connection when there is one."""
    extra: dict[str, Any] = {"max_requests_per_second": CLIENT_RATE}
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    if ledger_url is not None:
        extra["budgets"] = BUDGETS
        env["AIRFLOW__MINDVIDEO__LEDGER_CONN_ID"] = "bench_ledger"
        env["AIRFLOW_CONN_BENCH_LEDGER"] = ledger_connection(ledger_url)
    env["AIRFLOW_CONN_MINDVIDEO_DEFAULT"] = json.dumps(
        {"conn_type": "mindvideo", "host": emulator, "password": "mv_test_emulator", "extra": extra}
    )
    return env


def server_cpu(url: str | None) -> float | None:
    """CPU of the ledger's PostgreSQL cluster (its postmaster found by port), backends that ended included.

    A backend ends with its connection: its times are then in the postmaster's ``children_*``.
    """
    if url is None or not url.startswith("postgres"):
        return None
    port = url.rsplit(":", 1)[1].split("/")[0]
    for process in psutil.process_iter(["name", "cmdline"]):
        argv = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and any(a == "-p" and b == port for a, b in itertools.pairwise(argv)):
            tree = [process, *process.children(recursive=True)]
            own = sum(p.cpu_times().user + p.cpu_times().system for p in tree)
            reaped = process.cpu_times()
            return own + reaped.children_user + reaped.children_system
    return None


def measure(emulator: str, ledger: str, ledger_url: str | None, items: int, home: Path) -> Run:
    import httpx

    httpx.post(f"{emulator}/_emulator/reset", timeout=60).raise_for_status()
    env = connection_env(emulator, ledger_url, home)
    folder = Path(tempfile.mkdtemp(prefix=f"ledger-batch-{ledger}-", dir=home))
    before = server_cpu(ledger_url)
    done = subprocess.run(
        [sys.executable, __file__, "--child", "--items", str(items), "--folder", str(folder)],
        env=env,
        capture_output=True,
        text=True,
    )
    after = server_cpu(ledger_url)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {ledger} run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    server = None if before is None or after is None else after - before
    run = Run(ledger, items, result["wall_s"], result["cpu_s"], server, result["counts"])
    print(
        f"{ledger:10} {items:,} items: wall {run.wall_s:.1f} s, CPU {run.cpu_ms_per_item:.2f} ms/item"
        + (f", PostgreSQL {server / items * 1000:.2f} ms/item" if server is not None else "")
        + f"; {run.counts}",
        flush=True,
    )
    return run


def ledger_connection(url: str) -> str:
    """An Airflow connection (JSON) for a SQLAlchemy URL of the ledger."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return json.dumps({"conn_type": "sqlite", "host": parsed.database})
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": parsed.host,
            "port": parsed.port,
            "login": parsed.username,
            "schema": parsed.database,
        }
    )


def percentile(values: list[float], cut: int) -> float:
    return statistics.quantiles(values, n=100)[cut - 1]


def render(runs: list[Run], creates: dict[str, tuple[list[float], list[float]]], args: argparse.Namespace) -> str:
    by: dict[str, list[Run]] = {}
    for run in runs:
        by.setdefault(run.ledger, []).append(run)
    base_wall = statistics.median(r.wall_s for r in by["none"])
    base_cpu = statistics.median(r.cpu_ms_per_item for r in by["none"])
    items = runs[0].items
    notes = [
        f"- {items:,} items per batch" + (
            " (reduced from 10,000: the machine was shared)" if items < 10_000 else ""
        ),
        f"- 1-minute load average {args.load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
        f"- {args.rounds} round(s) of every configuration, interleaved; medians of the rounds",
    ]  # fmt: skip
    lines = [
        "# The spend ledger's cost: benchmark results",
        "",
        "Generated by `python benchmarks/ledger_batch.py` (`make bench`); do not edit by hand.",
        "",
        *machine(("apache-airflow", "sqlalchemy", "psycopg2-binary"), *notes),
        "",
        "## A batch through the batch trigger, with and without a budget",
        "",
        "The batch trigger in a process of its own (the triggerer's event loop; ledger calls in its threads) against"
        " the emulator in another, rate-limited like an account; one account day budget never reached. CPU is the"
        " trigger process's (user + system, every thread); the PostgreSQL server's own CPU is apart. Ratios are"
        f" against the run without a budget in the same invocation. Emulator-bound minimum:"
        f" {emulator_bound_minimum(items):.0f} s.",
        "",
        "| ledger | wall (s) | wall ratio | trigger CPU per item (ms) | CPU ratio | PostgreSQL CPU per item (ms) |"
        " items succeeded |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for ledger, name in (("none", "none (no budget)"), ("sqlite", "SQLite file"), ("postgres", "PostgreSQL, loopback")):
        if ledger not in by:
            lines.append(f"| {name} | skipped | | | | | |")
            continue
        wall = statistics.median(r.wall_s for r in by[ledger])
        cpu = statistics.median(r.cpu_ms_per_item for r in by[ledger])
        servers = [r.server_cpu_s for r in by[ledger] if r.server_cpu_s is not None]
        server = f"{statistics.median(servers) / items * 1000:.2f}" if servers else "-"
        succeeded = by[ledger][-1].counts.get("succeeded", 0)
        lines.append(
            f"| {name} | {wall:.1f} | {wall / base_wall:.2f}x | {cpu:.2f} | {cpu / base_cpu:.2f}x | {server} |"
            f" {succeeded:,} |"
        )
        if ledger != "none":
            verdicts.append(
                f"- {name}: wall {wall / base_wall:.2f}x (target <= {WALL_TARGET}x:"
                f" {'met' if wall / base_wall <= WALL_TARGET else 'not met'}), CPU per item {cpu / base_cpu:.2f}x"
                f" (target <= {CPU_TARGET}x: {'met' if cpu / base_cpu <= CPU_TARGET else 'not met'})"
            )
    lines += ["", *verdicts, "", "## Client time per create (reserve + settle, `benchmarks/ledger.py`)", ""]
    lines += [
        f"{args.creates:,} creates on each database, one client thread, each counting against an account day"
        " budget and a named month budget (two windows).",
        "",
        "| ledger | wall p50 (ms) | wall p99 (ms) | CPU p50 (ms) | CPU p99 (ms) |",
        "|---|---|---|---|---|",
    ]
    for name, (walls, cpus) in creates.items():
        lines.append(
            f"| {name} | {percentile(walls, 50):.2f} | {percentile(walls, 99):.2f} | {percentile(cpus, 50):.2f} |"
            f" {percentile(cpus, 99):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--creates", type=int, default=2000, help="creates per database for the client-time figure")
    parser.add_argument("--quick", action="store_true", help="500 items, 200 creates; results not written")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.items, args.folder)
        return 0
    if args.quick:
        args.items, args.creates = 500, 200
    args.load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mindvideo-ledger-bench-") as tmp, postgres() as pg_url:
        home = Path(tmp)
        home.chmod(0o755)
        urls = {"sqlite": f"sqlite:///{home}/ledger.db", "postgres": pg_url}
        runs: list[Run] = []
        with bench_emulator() as emulator:
            for _ in range(args.rounds):
                for ledger in ("none", "sqlite", "postgres"):
                    url = urls.get(ledger)
                    if ledger == "postgres" and url is None:
                        print("postgres skipped: no PostgreSQL binaries (bash scripts/install_distributed_deps.sh)")
                        continue
                    runs.append(measure(emulator, ledger, url, args.items, home))
        creates = {}
        for name, url in (("SQLite file", f"sqlite:///{home}/creates.db"), ("PostgreSQL, loopback", pg_url)):
            if url is None:
                continue
            measure_creates(url, min(100, args.creates))  # warm: tables, connections, caches
            creates[name] = measure_creates(url, args.creates)
    page = render(runs, creates, args)
    print(page)
    if not args.quick:
        RESULTS.write_text(page)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

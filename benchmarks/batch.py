"""The batch operator on real Airflow processes, beside the mapped content pipeline: what Airflow costs per prompt.

An ``airflow standalone``-like set of processes (api-server, scheduler with the LocalExecutor,
dag-processor, triggerer; SQLite; a throwaway home) and the emulator in a process of its own,
rate-limited like an account. In one run:

- **batch**: ``MindVideoBatchGenerateOperator`` at 1,000 and 10,000 prompts (JSONL inputs,
  outputs saved with ``download_to``);
- **mapped**: the example content pipeline (``example_dags/mindvideo_content_pipeline.py``:
  submit, deferred sensor and save per prompt) at 200 prompts, the baseline.

Measured per run: Airflow CPU (every Airflow process and its reaped children: user + system
of each process tree, with ``children_*`` times), wall time from ``airflow dags trigger`` to the
run's end against the emulator-bound minimum, triggerer and worker peak RSS, rows added to the
metadata database (per table, counted before and after), requests per item and double charges
(the emulator's counters). Targets are printed as met or not met; they are never assertions.

Usage: ``python benchmarks/batch.py [--quick]``. Writes ``benchmarks/batch-results.md`` (not with
``--quick``, a few-minute smoke run with small sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider_mindvideo.emulator.server import emulator_process
from benchmarks.machine import machine, targets_table
from scripts.processes import ROOT, LocalAirflow, wait_for

RESULTS = Path(__file__).with_name("batch-results.md")
MiB = 2**20

#: The account's rate limit the emulator enforces (requests a second per key), and what the
#: connection is told (``max_requests_per_second``), a little under it, as a user would set it.
RATE_LIMIT = 100.0
CLIENT_RATE = 95.0
#: The emulator's time to an image: queued, then processing.
QUEUED_SECONDS = 0.2
IMAGE_SECONDS = 3.0
#: Requests an item needs at the least: its create and one look once it is done.
MIN_REQUESTS_PER_ITEM = 2

BATCH_DAG = """
from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator

with DAG(
    "mindvideo_bench_batch",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"inputs_path": Param("", type="string"), "download_to": Param("", type="string")},
):
    MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs_path="{{ params.inputs_path }}",
        download_to="{{ params.download_to }}",
        max_active=%(max_active)d,
        # The first look comes after the image is certainly done (3.2 s at the emulator, the
        # interval is spread by +/- 20%%): one look per item.
        poll_interval=%(poll_interval)r,
        max_poll_interval=30.0,
        progress_interval=15.0,
        timeout=3600,
    )
"""
BATCH_SETTINGS = {"max_active": 400, "poll_interval": 4.5}


def tree_cpu(root: psutil.Process) -> float:
    """CPU seconds of a process and all its descendants, living and reaped (children_* times)."""
    total = 0.0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # its parent's children_* times count it once it is reaped
        total += times.user + times.system + times.children_user + times.children_system
    return total


def tree_rss(root: psutil.Process, *, include_root: bool = True) -> list[int]:
    try:
        processes = [root, *root.children(recursive=True)] if include_root else root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    sizes = []
    for process in processes:
        try:
            sizes.append(process.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return sizes


@dataclass
class Peaks:
    """Peak RSS seen while a run goes: the triggerer's processes, and the largest worker process."""

    triggerer: int = 0
    worker: int = 0
    samples: int = 0


class Airflow(LocalAirflow):
    """api-server, scheduler (LocalExecutor), dag-processor and triggerer, each in a process group of its own."""

    def __init__(self, home: Path, emulator: str) -> None:
        self.dags = home / "dags"
        self.dags.mkdir(parents=True)
        super().__init__(home, self.dags)
        # The figures are Airflow's at its default heartbeats, not the tests' quicker ones.
        for setting in ("SCHEDULER__SCHEDULER_HEARTBEAT_SEC", "TRIGGERER__JOB_HEARTBEAT_SEC"):
            del self.settings[f"AIRFLOW__{setting}"]
        del self.settings["AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD"]
        self.connect("mindvideo_default", emulator, max_requests_per_second=CLIENT_RATE)

    @property
    def env(self) -> dict[str, str]:
        # Without PYTHONDONTWRITEBYTECODE (set on this machine): an installed deployment has its
        # bytecode, and a process per task that compiled the provider's source would pay for it.
        # Bytecode goes beside the source; a PYTHONPYCACHEPREFIX would hide Airflow's own.
        inherited = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        return {**inherited, **self.settings}

    def start_bench(self) -> None:
        shutil.copy(ROOT / "example_dags" / "mindvideo_content_pipeline.py", self.dags)
        (self.dags / "mindvideo_bench_batch.py").write_text(BATCH_DAG % BATCH_SETTINGS)
        self.start_airflow("mindvideo_bench_batch", "mindvideo_content_pipeline")

    def roots(self) -> dict[str, psutil.Process]:
        return {name: psutil.Process(process.pid) for name, process in self.processes.items()}

    def cpu(self) -> float:
        return sum(tree_cpu(root) for root in self.roots().values())

    def idle_cpu_per_second(self, seconds: float = 30.0) -> float:
        """What the processes burn doing nothing (heartbeats, parsing, polling the database)."""
        time.sleep(10)  # past the start-up's first parse
        before = self.cpu()
        time.sleep(seconds)
        return (self.cpu() - before) / seconds

    def rows(self) -> Counter[str]:
        with sqlite3.connect(self.home / "airflow.db", timeout=60) as db:
            tables = [name for (name,) in db.execute("select name from sqlite_master where type = 'table'")]
            return Counter({table: db.execute(f'select count(*) from "{table}"').fetchone()[0] for table in tables})

    def state(self, run_id: str) -> str | None:
        rows = self.query("select state from dag_run where run_id = ?", run_id)
        return rows[0][0] if rows else None

    @contextmanager
    def watching(self) -> Iterator[Peaks]:
        """Sample RSS every half second while the block runs."""
        peaks, stop = Peaks(), threading.Event()

        def sample() -> None:
            while not stop.is_set():
                roots = self.roots()
                peaks.triggerer = max(peaks.triggerer, sum(tree_rss(roots["triggerer"])))
                workers = tree_rss(roots["scheduler"], include_root=False)
                peaks.worker = max(peaks.worker, max(workers, default=0))
                peaks.samples += 1
                stop.wait(0.5)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield peaks
        finally:
            stop.set()
            thread.join()


@dataclass
class Result:
    kind: str
    items: int
    state: str
    wall_s: float
    cpu_s: float
    minimum_s: float
    triggerer_rss_before: int
    triggerer_rss_peak: int
    worker_rss_peak: int
    rows: Counter[str]
    requests: dict[str, int]
    charged: int
    double_charges: int
    rate_limited: int
    creates_per_key: dict[str, int] = field(default_factory=dict)
    generation_s: float = 0.0
    #: The machine's 1-minute load average at the run's end: other work on the same cores stretches wall times.
    load: float = 0.0

    @property
    def cpu_per_item_ms(self) -> float:
        return 1000 * self.cpu_s / self.items

    @property
    def api_requests(self) -> int:
        return sum(count for route, count in self.requests.items() if route != "files")

    @property
    def triggerer_growth_mib(self) -> float:
        return (self.triggerer_rss_peak - self.triggerer_rss_before) / MiB


def emulator_bound_minimum(items: int) -> float:
    """The least wall time the emulator allows: every item's minimum requests under its rate limit, then one image."""
    return items * MIN_REQUESTS_PER_ITEM / RATE_LIMIT + QUEUED_SECONDS + IMAGE_SECONDS


def measure(airflow: Airflow, emulator: str, kind: str, items: int) -> Result:
    httpx.post(f"{emulator}/_emulator/reset", timeout=60).raise_for_status()
    tag = f"{kind}-{items}-{time.time_ns()}"
    prompts = [f"benchmark {tag} picture {i}" for i in range(items)]
    media = airflow.home / "media" / tag
    if kind == "batch":
        inputs = airflow.home / f"{tag}.jsonl"
        inputs.write_text("".join(json.dumps({"prompt": p, "size": "16:9"}) + "\n" for p in prompts))
        dag_id, conf = "mindvideo_bench_batch", {"inputs_path": inputs.as_uri(), "download_to": media.as_uri()}
    else:
        dag_id, conf = "mindvideo_content_pipeline", {"prompts": prompts, "size": "16:9", "destination": media.as_uri()}
    time.sleep(5)  # let the last run's stragglers (processes ending, the scheduler's bookkeeping) settle
    rows_before = airflow.rows()
    triggerer_before = sum(tree_rss(airflow.roots()["triggerer"]))
    cpu_before = airflow.cpu()
    with airflow.watching() as peaks:
        run_id = airflow.trigger(dag_id, conf, f"bench__{time.time_ns()}")
        # From the run's creation (the CLI returned): the CLI's own start-up is not the run's.
        started = time.monotonic()
        state = wait_for(
            lambda: (s := airflow.state(run_id)) in ("success", "failed") and s, f"{kind} {items}", timeout=7200
        )
        wall = time.monotonic() - started
    cpu = airflow.cpu() - cpu_before
    rows = airflow.rows()
    rows.subtract(rows_before)
    snapshot = httpx.get(f"{emulator}/_emulator/state", timeout=120).json()
    charges = Counter(task["prompt"] for task in snapshot["tasks"])
    ready = [task["terminal_at"] for task in snapshot["tasks"] if task["terminal_at"] is not None]
    result = Result(
        kind=kind,
        items=items,
        state=str(state),
        wall_s=wall,
        cpu_s=cpu,
        minimum_s=emulator_bound_minimum(items),
        triggerer_rss_before=triggerer_before,
        triggerer_rss_peak=max(peaks.triggerer, triggerer_before),
        worker_rss_peak=peaks.worker,
        rows=+rows,
        requests=dict(snapshot["requests"]),
        charged=snapshot["charged_tasks"],
        double_charges=sum(count - 1 for count in charges.values() if count > 1),
        rate_limited=snapshot["rate_limited"],
        creates_per_key=snapshot.get("creates_per_key", {}),
        # First create (its image's ready time less the image's time) to the last image ready.
        generation_s=max(ready) - min(ready) + QUEUED_SECONDS + IMAGE_SECONDS if ready else 0.0,
        load=os.getloadavg()[0],
    )
    print(
        f"    {state}: wall {wall:.1f} s (minimum {result.minimum_s:.1f} s), Airflow CPU {cpu:.1f} s "
        f"= {result.cpu_per_item_ms:.1f} ms/item, {result.api_requests / items:.2f} requests/item, "
        f"{result.charged} charged, {result.double_charges} double",
        flush=True,
    )
    return result


def bench_emulator() -> AbstractContextManager[str]:
    """The emulator these figures are measured against, in a process of its own; its base URL."""
    return emulator_process(
        "--rate-limit", str(RATE_LIMIT), "--queued-seconds", str(QUEUED_SECONDS), "--image-seconds", str(IMAGE_SECONDS)
    )


def targets(results: list[Result]) -> list[tuple[str, str, bool]]:
    mapped = next(r for r in results if r.kind == "mapped")
    checks = []
    for batch in (r for r in results if r.kind == "batch"):
        n = f"{batch.items:,}"
        ratio = mapped.cpu_per_item_ms / batch.cpu_per_item_ms
        checks += [
            (
                f"{n}: Airflow CPU per prompt <= 1/30 of the mapped pipeline's ({mapped.cpu_per_item_ms / 30:.1f} ms)",
                f"{batch.cpu_per_item_ms:.1f} ms (1/{ratio:.0f})",
                batch.cpu_per_item_ms <= mapped.cpu_per_item_ms / 30,
            ),
            (
                f"{n}: wall time <= 1.25x the emulator-bound minimum ({batch.minimum_s:.0f} s)",
                f"{batch.wall_s:.0f} s = {batch.wall_s / batch.minimum_s:.2f}x",
                batch.wall_s <= 1.25 * batch.minimum_s,
            ),
            (f"{n}: 0 double charges", str(batch.double_charges), batch.double_charges == 0),
            (f"{n}: the run succeeded, every item charged once", f"{batch.state}, {batch.charged} charged",
             batch.state == "success" and batch.charged == batch.items),
        ]  # fmt: skip
    largest = max((r for r in results if r.kind == "batch"), key=lambda r: r.items)
    checks.append(
        (
            f"{largest.items:,}: triggerer RSS growth <= 50 MiB",
            f"{largest.triggerer_growth_mib:.1f} MiB",
            largest.triggerer_growth_mib <= 50,
        )
    )
    checks.append(("mapped baseline: 0 double charges", str(mapped.double_charges), mapped.double_charges == 0))
    return checks


def render(
    results: list[Result], checks: list[tuple[str, str, bool]], quick: bool, seconds: float, idle: float
) -> list[str]:
    columns = [f"{r.kind} {r.items:,}" for r in results]
    table: list[tuple[str, Callable[[Result], str]]] = [
        ("run state", lambda r: r.state),
        ("wall time, trigger to end (s)", lambda r: f"{r.wall_s:.1f}"),
        ("... of which generating: first create to last image ready (s)", lambda r: f"{r.generation_s:.1f}"),
        ("emulator-bound minimum (s)", lambda r: f"{r.minimum_s:.1f}"),
        ("wall / minimum", lambda r: f"{r.wall_s / r.minimum_s:.2f}x"),
        ("machine load average at the end (2 cores)", lambda r: f"{r.load:.1f}"),
        ("Airflow CPU, all processes (s)", lambda r: f"{r.cpu_s:.1f}"),
        ("Airflow CPU per prompt (ms)", lambda r: f"{r.cpu_per_item_ms:.1f}"),
        ("triggerer RSS before (MiB)", lambda r: f"{r.triggerer_rss_before / MiB:.0f}"),
        ("triggerer RSS peak (MiB)", lambda r: f"{r.triggerer_rss_peak / MiB:.0f}"),
        ("triggerer RSS growth (MiB)", lambda r: f"{r.triggerer_growth_mib:.1f}"),
        ("largest worker process, peak RSS (MiB)", lambda r: f"{r.worker_rss_peak / MiB:.0f}"),
        ("metadata rows added", lambda r: f"{sum(r.rows.values()):,}"),
        ("metadata rows added per prompt", lambda r: f"{sum(r.rows.values()) / r.items:.2f}"),
        ("API requests per prompt (create, get, events)", lambda r: f"{r.api_requests / r.items:.2f}"),
        ("file downloads per prompt", lambda r: f"{r.requests.get('files', 0) / r.items:.2f}"),
        ("429 answers", lambda r: f"{r.rate_limited:,}"),
        ("Idempotency-Keys, by creates sent", lambda r: ", ".join(f"{k:,} {n}x" for n, k in r.creates_per_key.items())),
        ("charged tasks / double charges", lambda r: f"{r.charged:,} / {r.double_charges}"),
    ]  # fmt: skip
    lines = [
        "# Batch benchmark" + (" (quick run: not the published figures)" if quick else ""),
        "",
        f"Generated by `python benchmarks/batch.py` in {seconds / 60:.0f} min. Machine:",
        "",
        *machine(
            ("apache-airflow", "httpx", "uvicorn"),
            "- Airflow: api-server, scheduler (LocalExecutor, parallelism 8), dag-processor, triggerer; SQLite.",
            f"- The emulator in its own process on the same cores: {RATE_LIMIT:g} requests/s per key (429 beyond), "
            f"images ready {QUEUED_SECONDS + IMAGE_SECONDS:g} s after their create; the connection's "
            f"`max_requests_per_second` is {CLIENT_RATE:g}.",
        ),
        "",
        "- **batch**: `MindVideoBatchGenerateOperator` (JSONL inputs, `download_to`, "
        f"`max_active={BATCH_SETTINGS['max_active']}`, `poll_interval={BATCH_SETTINGS['poll_interval']}`).",
        "- **mapped**: the example content pipeline (submit, deferred sensor, save: three task instances per "
        "prompt), unchanged.",
        "",
        "Airflow CPU is user + system time of every Airflow process tree (api-server, scheduler with its "
        "LocalExecutor workers and task processes, dag-processor, triggerer), reaped children included, "
        "from just before `airflow dags trigger` to the run's end. The emulator-bound minimum is "
        f"{MIN_REQUESTS_PER_ITEM} requests per prompt (its create, one look) under the emulator's rate limit, "
        "plus one image's time. Metadata rows: `count(*)` per table before and after. Wall time runs from the "
        "run's creation (`airflow dags trigger` returned) to its end, downloads included.",
        "",
        f"Idle, the Airflow processes burn {idle:.2f} CPU s per second (heartbeats, parsing, database polls): "
        "that share of each run's CPU is time, not prompts.",
        "",
        "| measure | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
        *(f"| {label} | " + " | ".join(cell(r) for r in results) + " |" for label, cell in table),
        "",
        "## Targets",
        "",
        *targets_table(checks),
        "",
        "## Metadata rows added, per table",
        "",
        "| table | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    tables = sorted({t for r in results for t in r.rows}, key=lambda t: -max(r.rows.get(t, 0) for r in results))
    lines += [f"| {t} | " + " | ".join(f"{r.rows.get(t, 0):,}" for r in results) + " |" for t in tables]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not the figures")
    parser.add_argument("--sizes", help="instead of the plan: comma-separated kind:items, e.g. batch:500")
    parser.add_argument("--keep", action="store_true", help="keep the Airflow home (its logs) and print where")
    args = parser.parse_args()
    plan = [("mapped", 20), ("batch", 100), ("batch", 500)] if args.quick else [
        ("mapped", 200), ("batch", 1_000), ("batch", 10_000),
    ]  # fmt: skip
    if args.sizes:
        plan = [(kind, int(items)) for kind, _, items in (size.partition(":") for size in args.sizes.split(","))]
    started = time.monotonic()
    results: list[Result] = []
    idle = 0.0
    with tempfile.TemporaryDirectory(prefix="mindvideo-batch-bench-") as tmp:
        home = Path(tempfile.mkdtemp(prefix="mindvideo-batch-bench-")) if args.keep else Path(tmp)
        print(f"==> Airflow home {home / 'airflow'}", flush=True)
        with bench_emulator() as emulator:
            airflow = Airflow(home / "airflow", emulator)
            try:
                print("==> starting Airflow", flush=True)
                airflow.start_bench()
                idle = airflow.idle_cpu_per_second()
                print(f"==> idle Airflow: {idle:.3f} CPU s per second", flush=True)
                for kind, items in plan:
                    print(f"==> {kind}, {items:,} prompts", flush=True)
                    results.append(measure(airflow, emulator, kind, items))
            finally:
                airflow.stop_all(grace=30)
    if not any(r.kind == "mapped" for r in results) or not any(r.kind == "batch" for r in results):
        return 0  # a partial plan (--sizes): the figures above, no comparison
    checks = targets(results)
    report = render(results, checks, args.quick, time.monotonic() - started, idle)
    print("\n".join(report))
    if not args.quick:
        RESULTS.write_text("\n".join(report) + "\n")
        print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

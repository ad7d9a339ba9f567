"""A batch as a good neighbour: thousands of waits and a 10,000-item batch in one triggerer, in Airflow's own runner.

Airflow's ``TriggerRunnerSupervisor`` forks its ``TriggerRunner`` (the harness of
``benchmarks/triggerer.py``: no metadata database, the workloads handed over directly), which
runs every trigger in one asyncio loop. Against the emulator in a process of its own, rate-limited
per key as an account is (the batch's key and the waits' key apart: the waits are other
deployments' tasks on the same triggerer, not the batch's account). Four runs, each a fresh
triggerer:

- **waits**: N ``MindVideoTaskTrigger`` waits alone (task durations spread over a range);
- **waits + batch**: the same waits and one batch (``max_active=100000``, ``download_to``);
- **batch**: the batch alone;
- **two batches**: two batches of the same size in one loop, on one connection (one account).

Measured: the runner loop's lag (a 50 ms ticker in the loop) while the batch runs; the waits'
detection delay (event arrival less the task's end); the supervisor's view of the runner (the
longest silence it saw at a heartbeat: past ``runner_health_check_threshold`` it skips the
heartbeat and the triggers are re-assigned) and the runner's own "async thread was blocked"
lines; the batch's wall time against the emulator-bound minimum and the runner's CPU per item;
with two batches, each one's creates per interval. Figures, never assertions.

Usage: ``python benchmarks/fairness.py [--quick] [--waits N] [--items N] [--page PATH]``. Writes
``benchmarks/fairness-results.md`` (with ``--quick``, a few-minute smoke run, only with ``--page``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider_mindvideo.emulator.server import emulator_process
from benchmarks.machine import machine, targets_table
from benchmarks.triggerer import ROOT, Workload, quantile

RESULTS = Path(__file__).with_name("fairness-results.md")
BATCH_KEY = "mv_test_emulator"
WAITS_KEY = "mv_test_waits"
#: As ``benchmarks/batch.py``: the account's limit at the emulator, what the connection is told, an image's time.
RATE_LIMIT = 100.0
CLIENT_RATE = 95.0
QUEUED_SECONDS = 0.2
IMAGE_SECONDS = 3.0
#: The batch's settings: a ``max_active`` far past what a loop serves (the issue's), the benchmark's polls.
BATCH_SETTINGS = {"max_active": 100_000, "poll_interval": 4.5, "max_poll_interval": 30.0, "progress_interval": 15.0}
WARM_UP_ITEMS = 20
BLOCKED = "Triggerer's async thread was blocked"


@dataclass(frozen=True)
class Plan:
    waits: Workload
    items: int


# -- the child: one triggerer ------------------------------------------------------------------------


class _CountedReady(collections.deque):  # type: ignore[type-arg]
    taken = 0

    def __init__(self, loop: CountingLoop) -> None:
        super().__init__()
        self.loop = loop

    def popleft(self) -> Any:
        self.taken += 1
        self.loop.fan_out = max(self.loop.fan_out, self.loop.scheduled)  # by the callback that just ended
        self.loop.scheduled = 0
        return super().popleft()


class CountingLoop(asyncio.SelectorEventLoop):
    """The runner's loop, counting the callbacks (task steps, answers, timers) each of its turns runs.

    Unlike the lag, the count does not depend on how busy the machine is: a turn that runs a step of
    every item of a batch shows as thousands, however fast the machine runs them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._ready: _CountedReady = _CountedReady(self)
        self.turns = self.largest = self.scheduled = self.fan_out = 0
        self.over: Counter[int] = Counter()  # turns that ran more than 100, 200, 1,000 callbacks

    def call_soon(self, *args: Any, **kwargs: Any) -> asyncio.Handle:
        self.scheduled += 1
        return super().call_soon(*args, **kwargs)

    def _run_once(self) -> None:
        self._ready.taken = 0
        super()._run_once()  # type: ignore[misc]
        taken = self._ready.taken
        self.turns += 1
        self.largest = max(self.largest, taken)
        for bound in (100, 200, 1000):
            self.over[bound] += taken > bound

    def close(self) -> None:
        path = os.environ.get("MINDVIDEO_BENCH_TURNS")
        if path:
            Path(path).write_text(
                json.dumps({"turns": self.turns, "largest": self.largest, "over": self.over, "fan_out": self.fan_out})
            )
        super().close()


class CountingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return CountingLoop()


def child_main(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow.executors.workloads import RunTrigger
    from airflow.executors.workloads.task import TaskInstanceDTO
    from airflow.jobs.triggerer_job_runner import TriggerRunnerSupervisor
    from airflow.models.trigger import Trigger
    from airflow.triggers.base import BaseTrigger, TriggerEvent

    from airflow_provider_mindvideo.batch.trigger import MindVideoBatchTrigger
    from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger
    from benchmarks.triggerer import _proc_cpu_s, _runner_main

    arrived: dict[int, float] = {}
    payloads: dict[int, Any] = {}
    pending: list[RunTrigger] = []
    silences: list[float] = []  # how long the runner had been silent, at each heartbeat

    class BenchSupervisor(TriggerRunnerSupervisor):  # type: ignore[misc]
        @classmethod
        def run_in_process(cls) -> None:
            asyncio.set_event_loop_policy(CountingPolicy())
            _runner_main()

        def load_triggers(self) -> None:
            while pending:
                self.creating_triggers.append(pending.pop(0))

        def heartbeat(self) -> None:
            # Airflow skips the heartbeat (and the scheduler re-assigns every trigger of this
            # triggerer) once the runner has been silent past runner_health_check_threshold.
            silent = time.monotonic() - self._last_runner_comms
            if silent != float("inf"):
                silences.append(silent)

        def metric_tags(self) -> dict[str, str]:
            return {"hostname": "bench"}

        def clean_unused(self) -> None:
            pass

        def on_trigger_event(self, trigger_id: int, event: TriggerEvent) -> None:
            arrived[trigger_id], payloads[trigger_id] = time.time(), event.payload

        def on_trigger_failure(self, trigger_id: int, exc: list[str] | None) -> None:
            arrived[trigger_id], payloads[trigger_id] = time.time(), {"status": "failure", "error": exc}

    def workload_for(trigger_id: int, trigger: BaseTrigger) -> RunTrigger:
        classpath, kwargs = trigger.serialize()
        ti = TaskInstanceDTO(
            id=uuid.uuid4(),
            task_id="bench",
            dag_id="mindvideo_fairness",
            run_id="bench",
            try_number=1,
            map_index=trigger_id,
            dag_version_id=uuid.uuid4(),
            pool_slots=1,
            priority_weight=1,
        )
        return RunTrigger(
            id=trigger_id, classpath=classpath, encrypted_kwargs=Trigger(classpath, kwargs).encrypted_kwargs, ti=ti
        )

    def wait(task_id: str, started_at: float) -> BaseTrigger:
        waits = spec["workload"]
        return MindVideoTaskTrigger(
            task_id,
            mindvideo_conn_id="mindvideo_waits",
            poll_interval=waits["poll_interval"],
            max_poll_interval=waits["max_poll_interval"],
            started_at=started_at,
        )

    def batch(stem: str, started_at: float) -> BaseTrigger:
        folder = spec["folder"]
        return MindVideoBatchTrigger(
            f"file://{folder}/{stem}.work.jsonl",
            f"file://{folder}/{stem}.jsonl",
            download_to=f"file://{folder}/{stem}-media",
            download_allow_private_urls=True,
            started_at=started_at,
            **BATCH_SETTINGS,
        )

    total = 2 + len(spec["waits"]) + len(spec["batches"])
    supervisor = BenchSupervisor.start(job=None, capacity=total)
    pid = supervisor.pid

    def serve_until(count: int, limit: float = 7200) -> None:
        deadline = time.monotonic() + limit
        while len(arrived) < count:
            if not supervisor.is_alive():
                raise RuntimeError(f"the trigger runner died (exit code {supervisor._exit_code})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(arrived)} events after {limit:.0f} s")
            supervisor.run_once()

    # Warm-up: a wait and a small batch, so that imports and first-use caches are not the measured run's.
    now = time.time()
    pending += [workload_for(1, wait(spec["warm_up_wait"], now)), workload_for(2, batch("warm-up", now))]
    serve_until(2, limit=300)
    for _ in range(2):
        supervisor.run_once()
    silences.clear()
    cpu_before = _proc_cpu_s(pid)
    started_at = time.time()
    waits = {3 + i: task_id for i, task_id in enumerate(spec["waits"])}
    batches = {3 + len(waits) + i: stem for i, stem in enumerate(spec["batches"])}
    pending += [workload_for(i, wait(task_id, started_at)) for i, task_id in waits.items()]
    pending += [workload_for(i, batch(stem, started_at)) for i, stem in batches.items()]
    serve_until(total)
    cpu = _proc_cpu_s(pid) - cpu_before
    supervisor.kill(escalation_delay=10, force=True)
    probe = json.loads(Path(os.environ["MINDVIDEO_BENCH_PROBE"]).read_text())
    failed = [payloads[i] for i in waits if payloads[i].get("status") != "success"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(waits)} waits failed, e.g. {failed[0]}")
    return {
        "started_at": started_at,
        "cpu_s": cpu,
        "lags": probe["lags"],
        "collections": probe.get("collections", []),
        "silences": silences,
        "wait_done_at": {task_id: arrived[i] for i, task_id in waits.items()},
        "batches": {stem: {"done_at": arrived[i], "event": payloads[i]} for i, stem in batches.items()},
    }


# -- the parent: emulator, tasks, work lists, children ------------------------------------------------


def run_scenario(name: str, plan: Plan, base_url: str, with_waits: bool, batches: list[str]) -> dict[str, Any]:
    from airflow_provider_mindvideo.batch.plan import dump_work_list, entries_from_list, work_list
    from benchmarks.batch_trigger_probe import Ti

    waits = plan.waits
    headers = {"Authorization": f"Bearer {WAITS_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client, tempfile.TemporaryDirectory() as tmp:
        client.post("/_emulator/reset").raise_for_status()
        for seconds in {waits.duration(i) for i in range(waits.waits)} | {0}:
            script = {"match": f"[d={seconds}]", "outcome": "succeeded", "queued_seconds": 0}
            client.post("/_emulator/scripts", json={**script, "processing_seconds": seconds}).raise_for_status()
        create = {"model": "gpt-image-2", "input": {"prompt": "[d=0] warm-up"}}
        warm_up = create_task(client, create)
        task_ids = []
        for i in range(waits.waits if with_waits else 0):
            prompt = {"model": "gpt-image-2", "input": {"prompt": f"[d={waits.duration(i)}] wait {i}"}}
            task_ids.append(create_task(client, prompt))
        folder = Path(tmp)
        for stem, count in [("warm-up", WARM_UP_ITEMS), *((stem, plan.items) for stem in batches)]:
            entries = entries_from_list([{"prompt": f"{stem} picture {i}", "size": "16:9"} for i in range(count)])
            (folder / f"{stem}.work.jsonl").write_text(
                dump_work_list(work_list(entries, "gpt-image-2", Ti(run_id=stem)))
            )
        spec = {
            "waits": task_ids,
            "warm_up_wait": warm_up,
            "batches": batches,
            "folder": str(folder),
            "workload": asdict(waits),
        }
        before = client.get("/_emulator/state").json()
        probe, result, log_path = folder / "probe.json", folder / "result.json", folder / "triggerer.log"
        with open(log_path, "w+") as log:
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.fairness", "child", str(result)],
                input=json.dumps(spec),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=ROOT,
                env={
                    **os.environ,
                    **child_env(base_url),
                    "MINDVIDEO_BENCH_PROBE": str(probe),
                    "MINDVIDEO_BENCH_TURNS": str(folder / "turns.json"),
                },
                check=False,
            )
        output = log_path.read_text()
        if child.returncode != 0 or not result.exists():
            raise RuntimeError(f"{name}: the triggerer run failed:\n{output[-3000:]}")
        measured = json.loads(result.read_text())
        turns = folder / "turns.json"
        measured["turns"] = json.loads(turns.read_text()) if turns.exists() else None
        after = client.get("/_emulator/state").json()
    return summarise(name, plan, task_ids, measured, before, after, output)


def create_task(client: httpx.Client, body: dict[str, Any]) -> str:
    """A task of the waits' account, waiting out the emulator's rate limit (the waits are made before the run)."""
    while (answer := client.post("/api/v1/tasks", json=body)).status_code == 429:
        time.sleep(float(answer.headers.get("Retry-After", "0.1")))
    answer.raise_for_status()
    return str(answer.json()["task_id"])


def child_env(base_url: str) -> dict[str, str]:
    connection = {"conn_type": "mindvideo", "host": base_url}
    return {
        "AIRFLOW__MINDVIDEO__RESUME_NOT_BEFORE": "0",  # detection is measured, not the fast-resume hold
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT": json.dumps(
            {**connection, "password": BATCH_KEY, "extra": {"max_requests_per_second": CLIENT_RATE}}
        ),
        # Paced too, as a user who knows the account's limit sets it: 2,000 first checks in a second
        # would otherwise collect 429s, and their retries would blur the delays measured.
        "AIRFLOW_CONN_MINDVIDEO_WAITS": json.dumps(
            {**connection, "password": WAITS_KEY, "extra": {"max_requests_per_second": CLIENT_RATE}}
        ),
    }


def summarise(
    name: str,
    plan: Plan,
    task_ids: list[str],
    measured: dict[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
    output: str,
) -> dict[str, Any]:
    started_at = measured["started_at"]
    tasks = {task["task_id"]: task for task in after["tasks"]}
    delays = [measured["wait_done_at"][t] - max(tasks[t]["terminal_at"], started_at) for t in task_ids]
    batches = measured["batches"]
    batch_end = max((b["done_at"] for b in batches.values()), default=None)
    # The lag while the batch ran (alone: the waits' whole run, the same window as with a batch).
    window_end = batch_end or max(measured["wait_done_at"].values())
    lags = [lag for at, lag in measured["lags"] if started_at <= at <= window_end]
    summary: dict[str, Any] = {
        "name": name,
        "waits": len(task_ids),
        "cpu_s": measured["cpu_s"],
        "lag_p99_ms": 1000 * quantile(lags, 0.99),
        "lag_max_ms": 1000 * max(lags),
        "lag_window_s": window_end - started_at,
        "longest_runner_silence_s": max(measured["silences"], default=0.0),
        "blocked_lines": output.count(BLOCKED),
        "rate_limited": after["rate_limited"] - before["rate_limited"],
        "turns": measured["turns"],
        # The longest full garbage collection in the window (it holds the loop as long), and the worst lags.
        "gc_max_ms": 1000
        * max((took for end, _, took in measured["collections"] if started_at <= end <= window_end), default=0.0),
        "full_collections": [
            (round(end - started_at, 1), round(1000 * took))
            for end, generation, took in measured["collections"]
            if generation == 2 and started_at <= end <= window_end
        ],
        "worst_lags": sorted(
            (
                (round(at - started_at, 1), round(1000 * lag))
                for at, lag in measured["lags"]
                if started_at <= at <= window_end
            ),
            key=lambda pair: -pair[1],
        )[:5],
    }
    if delays:
        summary |= {"delay_p50_s": statistics.median(delays), "delay_p95_s": quantile(delays, 0.95)}
    per_batch = {}
    for stem, batch in batches.items():
        counts = batch["event"].get("summary", {}) or {}
        created = sorted(t["created_at"] for t in after["tasks"] if str(t["prompt"]).startswith(f"{stem} "))
        per_batch[stem] = {
            "wall_s": batch["done_at"] - started_at,
            "status": batch["event"].get("status"),
            "counts": counts.get("counts"),
            "created": created,
        }
    summary["batches"] = per_batch
    summary["items"] = plan.items * len(batches)
    return summary


def buckets(created: list[float], start: float, width: float, count: int) -> list[int]:
    bins = Counter(int((at - start) // width) for at in created)
    return [bins.get(i, 0) for i in range(count)]


def minimum_s(items: int) -> float:
    """The least wall time the emulator allows: a create and a look per item under its rate limit, then an image."""
    return items * 2 / RATE_LIMIT + QUEUED_SECONDS + IMAGE_SECONDS


def render(plan: Plan, runs: dict[str, dict[str, Any]], quick: bool, seconds: float) -> list[str]:
    alone, mixed, batch, two = runs["waits"], runs["waits + batch"], runs["batch"], runs["two batches"]
    mixed_batch = mixed["batches"]["batch"]
    batch_cpu_mixed = (mixed["cpu_s"] - alone["cpu_s"]) / plan.items
    batch_cpu_alone = batch["cpu_s"] / plan.items
    minimum = minimum_s(plan.items)
    n, items = f"{plan.waits.waits:,}", f"{plan.items:,}"
    p50, p95 = mixed["delay_p50_s"] / alone["delay_p50_s"], mixed["delay_p95_s"] / alone["delay_p95_s"]
    walled, cpu_ratio = mixed_batch["wall_s"], batch_cpu_mixed / batch_cpu_alone
    checks = [
        (f"{n} waits' loop lag p99 while the batch runs <= 50 ms", f"{mixed['lag_p99_ms']:.0f} ms",
         mixed["lag_p99_ms"] <= 50),
        ("... and its max <= 1 s", f"{mixed['lag_max_ms']:.0f} ms", mixed["lag_max_ms"] <= 1000),
        ("waits' detection delay p50 within 1.2x of the waits alone",
         f"{mixed['delay_p50_s']:.2f} s vs {alone['delay_p50_s']:.2f} s = {p50:.2f}x", p50 <= 1.2),
        ("... and p95", f"{mixed['delay_p95_s']:.2f} s vs {alone['delay_p95_s']:.2f} s = {p95:.2f}x", p95 <= 1.2),
        ("no heartbeat missed: the runner never silent past runner_health_check_threshold (30 s)",
         f"longest silence {mixed['longest_runner_silence_s']:.1f} s", mixed["longest_runner_silence_s"] < 30),
        ("no 'async thread was blocked' line in the triggerer's log (threshold 0.2 s)",
         f"{mixed['blocked_lines']} lines", mixed["blocked_lines"] == 0),
        (f"the {items}-item batch beside the waits: within 1.25x of the emulator-bound minimum ({minimum:.0f} s)",
         f"{walled:.0f} s = {walled / minimum:.2f}x", walled <= 1.25 * minimum),
        ("its runner CPU per item within 1.1x of alone",
         f"{1000 * batch_cpu_mixed:.2f} ms vs {1000 * batch_cpu_alone:.2f} ms = {cpu_ratio:.2f}x", cpu_ratio <= 1.1),
    ]  # fmt: skip
    command = "python benchmarks/fairness.py" + (" --quick" if quick else "")
    columns = list(runs)
    rows = [
        ("waits", lambda r: f"{r['waits']:,}"),
        ("batch items", lambda r: f"{r['items']:,}"),
        ("loop lag p99, while the batch runs (ms)", lambda r: f"{r['lag_p99_ms']:.0f}"),
        ("loop lag max (ms)", lambda r: f"{r['lag_max_ms']:.0f}"),
        ("... window measured (s)", lambda r: f"{r['lag_window_s']:.0f}"),
        ("waits' detection delay p50 (s)", lambda r: f"{r['delay_p50_s']:.2f}" if "delay_p50_s" in r else "-"),
        ("waits' detection delay p95 (s)", lambda r: f"{r['delay_p95_s']:.2f}" if "delay_p95_s" in r else "-"),
        ("longest runner silence at a heartbeat (s)", lambda r: f"{r['longest_runner_silence_s']:.1f}"),
        ("'async thread was blocked' lines", lambda r: str(r["blocked_lines"])),
        ("longest garbage collection in the window (ms)", lambda r: f"{r['gc_max_ms']:.0f}"),
        ("turns of the loop (whole run)", lambda r: f"{r['turns']['turns']:,}" if r["turns"] else "?"),
        (
            "most callbacks one turn ran (timers due after a stall included)",
            lambda r: f"{r['turns']['largest']:,}" if r["turns"] else "?",
        ),
        (
            "most callbacks one callback made ready (a step's fan-out)",
            lambda r: f"{r['turns']['fan_out']:,}" if r["turns"] else "?",
        ),
        ("turns running > 200 callbacks", lambda r: f"{r['turns']['over']['200']:,}" if r["turns"] else "?"),
        ("batch wall time (s)", lambda r: ", ".join(f"{b['wall_s']:.0f}" for b in r["batches"].values()) or "-"),
        ("runner CPU (s)", lambda r: f"{r['cpu_s']:.1f}"),
        ("429 answers", lambda r: f"{r['rate_limited']:,}"),
        (
            "batch items succeeded",
            lambda r: ", ".join(f"{(b['counts'] or {}).get('succeeded', 0):,}" for b in r["batches"].values()) or "-",
        ),
    ]
    lines = [
        "# A batch as a good neighbour in a shared triggerer"
        + (" (quick run: not the published figures)" if quick else ""),
        "",
        f"Generated by `{command}` in {seconds / 60:.0f} min. Machine:",
        "",
        *machine(
            ("apache-airflow", "httpx", "aiohttp"),
            "- Airflow's `TriggerRunnerSupervisor` and its forked `TriggerRunner` (the harness of "
            "`benchmarks/triggerer.py`: no metadata database, workloads handed over directly).",
            f"- The emulator in its own process: {RATE_LIMIT:g} requests/s per key (429 beyond), images ready "
            f"{QUEUED_SECONDS + IMAGE_SECONDS:g} s after their create; the batch's connection has "
            f"`max_requests_per_second={CLIENT_RATE:g}`. The waits use another key (another account), paced the same.",
            f"- Waits: {plan.waits.waits:,} `MindVideoTaskTrigger`, task durations {plan.waits.shortest:g}-"
            f"{plan.waits.longest:g} s (real time, not scaled), `poll_interval={plan.waits.poll_interval:g}`, "
            f"`max_poll_interval={plan.waits.max_poll_interval:g}`.",
            f"- Batch: `MindVideoBatchTrigger`, {items} items, `max_active={BATCH_SETTINGS['max_active']}` (clamped "
            f"to the loop's bound), `download_to` a local folder, `poll_interval={BATCH_SETTINGS['poll_interval']}`.",
        ),
        "",
        "Loop lag: a 50 ms ticker in the runner's loop, from the hand-over to the (last) batch's event (the waits "
        "alone: to their last event). Detection delay: a wait's event arriving at the supervisor less its task's "
        "end. A missed heartbeat: Airflow's supervisor skips it once the runner has been silent past "
        "`runner_health_check_threshold` (30 s), and the scheduler then re-assigns the triggerer's triggers; the "
        "harness has no trigger table, so the supervisor's longest silence at a heartbeat and the runner's own "
        "blocked-loop lines stand for it. Runner CPU: the runner process, hand-over to last event; the batch's "
        "CPU beside the waits is that run's less the waits alone.",
        "",
        "| measure | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
        *(f"| {label} | " + " | ".join(cell(runs[c]) for c in columns) + " |" for label, cell in rows),
        "",
        "## Targets",
        "",
        *targets_table(checks),
        "",
        "## Two batches in one loop: creates per interval",
        "",
    ]
    first, second = two["batches"].values()
    start = min(first["created"][0], second["created"][0])
    end = max(first["created"][-1], second["created"][-1])
    width = max(1.0, round((end - start) / 12))
    count = int((end - start) // width) + 1
    a, b = buckets(first["created"], start, width, count), buckets(second["created"], start, width, count)
    both_until = min(first["created"][-1], second["created"][-1])
    shared = [sum(at <= both_until for at in batch["created"]) for batch in (first, second)]
    lines += [
        f"While both were creating (the first {both_until - start:.0f} s): {shared[0]:,} and {shared[1]:,} creates "
        f"({shared[0] / max(1, sum(shared)):.0%} / {shared[1] / max(1, sum(shared)):.0%}).",
        "",
        f"Both batches on one connection (one account, {CLIENT_RATE:g} requests/s); each {items} items. "
        f"Wall times {first['wall_s']:.0f} s and {second['wall_s']:.0f} s (a single batch's minimum: "
        f"{minimum:.0f} s; both together: {minimum_s(2 * plan.items):.0f} s).",
        "",
        f"| from (s) | {' | '.join(two['batches'])} |",
        "|---|---|---|",
        *(f"| {i * width:.0f} | {x} | {y} |" for i, (x, y) in enumerate(zip(a, b, strict=True))),
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", nargs="?", choices=["child"])
    parser.add_argument("result", nargs="?")
    parser.add_argument("--quick", action="store_true", help="200 waits of 5-40 s, 1,000 items: a smoke run")
    parser.add_argument("--waits", type=int)
    parser.add_argument("--only", help="run only this scenario (waits, batch, ...): figures printed, no page")
    parser.add_argument("--items", type=int)
    parser.add_argument(
        "--page", help="write the page here (default: benchmarks/fairness-results.md, not with --quick)"
    )
    args = parser.parse_args()
    if args.mode == "child":
        from benchmarks.triggerer_probe import count_connections

        count_connections()
        result = child_main(json.loads(sys.stdin.read()))
        Path(args.result).write_text(json.dumps(result))
        return 0
    shortest, longest = (5.0, 40.0) if args.quick else (10.0, 300.0)
    waits = Workload(args.waits or (200 if args.quick else 2_000), 5.0, 60.0, shortest, longest)
    plan = Plan(waits, args.items or (1_000 if args.quick else 10_000))
    started = time.monotonic()
    emulator = ["--rate-limit", str(RATE_LIMIT), "--queued-seconds", str(QUEUED_SECONDS)]
    emulator += ["--image-seconds", str(IMAGE_SECONDS), "--api-key", BATCH_KEY, "--api-key", WAITS_KEY]
    runs: dict[str, dict[str, Any]] = {}
    with emulator_process(*emulator) as base_url:
        for name, with_waits, batches in [
            ("waits", True, []),
            ("waits + batch", True, ["batch"]),
            ("batch", False, ["batch"]),
            ("two batches", False, ["first", "second"]),
        ]:
            if args.only and name != args.only:
                continue
            print(f"==> {name}", flush=True)
            runs[name] = run_scenario(name, plan, base_url, with_waits, batches)
            shown = {k: v for k, v in runs[name].items() if k != "batches"}
            print(
                json.dumps(shown | {"batch_walls": [b["wall_s"] for b in runs[name]["batches"].values()]}), flush=True
            )
    if args.only:
        return 0
    report = render(plan, runs, args.quick, time.monotonic() - started)
    print("\n".join(report))
    page = Path(args.page) if args.page else (None if args.quick else RESULTS)
    if page is not None:
        page.write_text("\n".join(report) + "\n")
        print(f"\nwritten to {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

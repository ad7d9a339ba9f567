"""Thousands of waits in Airflow's own trigger runner: MindVideoTaskTrigger against the HTTP provider's pattern.

The parent process runs the emulator (a process of its own), creates N MindVideo tasks that
finish after a spread of durations, then starts one child process per workload: a triggerer.
The child is Airflow's ``TriggerRunnerSupervisor`` (the class ``airflow triggerer`` runs) and
forks Airflow's ``TriggerRunner``, which runs every trigger in one asyncio loop exactly as in
production: greenback portal, log context, a span, the runner's log lines sent to the
supervisor, events handed over at each state sync. Only the metadata database is left out:
the supervisor is given the N trigger workloads (each bound to a task instance) instead of
reading trigger rows, records each event's arrival instead of writing it, and writes no
per-trigger log files (its log lines go to one file: at N=20,000 per-trigger files alone
would need 20,000 open files in the supervisor, for ours and the baseline alike).

Measured in the runner process (where the triggers live): RSS and CPU (from ``/proc``), TCP
connections opened (aiohttp's connector, which all kinds send through), event-loop lag (a
50 ms ticker in the runner's loop, each sample timestamped). In the supervisor: when each
event arrived, which is when Airflow would resume the task. The emulator counts requests and
knows when each task became terminal.

- ``ours``: ``MindVideoTaskTrigger`` with the operators' schedule.
- ``ours_fixed``: ``MindVideoTaskTrigger`` polling at the baseline's fixed interval
  (``max_poll_interval = poll_interval``): the cost of a request, schedule aside.
- ``floor``: the practical floor of a poll, at the baseline's interval: one shared
  ``aiohttp.ClientSession``, a bare GET and a JSON read, nothing else.
- ``baseline``: what a user gets from the HTTP provider: ``HttpAsyncHook.run()`` with a new
  ``aiohttp.ClientSession`` per poll (as ``HttpSensorTrigger`` does), at a fixed interval,
  reading the JSON status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

API_KEY = "mv_test_emulator"
TERMINAL = {"succeeded", "failed", "cancelled"}
TICK = 0.05
ROOT = Path(__file__).resolve().parents[1]
KINDS = ("ours", "ours_cold", "ours_fixed", "baseline", "floor")


#: The drift mix's models: (model, typical duration as a point of the shortest..longest range).
#: In the full run (10-300 s): image models of about 15, 25 and 50 s, video models of 90, 150 and
#: 240 s. Each task lasts its model's typical duration +/- DRIFT_SPREAD.
DRIFT_MODELS = (
    ("gpt-image-2", 5 / 290),
    ("gemini-3-1-flash-image-preview", 15 / 290),
    ("doubao-seedream-5-0-lite", 40 / 290),
    ("doubao-seedance-1-0-pro-fast", 80 / 290),
    ("doubao-seedance-1-5-pro", 140 / 290),
    ("doubao-seedance-1-0-pro-quality", 230 / 290),
)
DRIFT_SPREAD = 0.1
#: The model whose tasks take twice as long from the middle of the measured arrivals on.
DRIFTING = "gemini-3-1-flash-image-preview"
#: The drift mix's tasks start one after another over this many times the longest duration: the
#: first half warms the triggerer up (as one that has run a while), the second half is measured.
DRIFT_ARRIVALS = 2.0
#: The first drift-mix task starts this long after the tasks are created: the triggerer is up by then.
DRIFT_LEAD = 30.0


@dataclass(frozen=True)
class Workload:
    waits: int
    poll_interval: float  # all: the first interval; the baseline and ours_fixed keep it
    max_poll_interval: float  # ours: the poll cap
    shortest: float  # task durations, seconds, spread evenly between these
    longest: float
    #: "spread": every task of one model, all started at once, durations spread evenly (the
    #: original workload). "drift": tasks of six models start one after another over twice the
    #: longest duration, each model's within +/- 10% of its own typical duration; the first half
    #: warms the triggerer up, the second is measured, and from its middle on one model's tasks
    #: take twice as long.
    mix: str = "spread"

    @property
    def short_up_to(self) -> float:
        """Tasks up to this long are the "short images" (60 s with the full run's 10-300 s spread)."""
        return self.shortest + (self.longest - self.shortest) * 50 / 290

    @property
    def long_from(self) -> float:
        """Tasks from this long on are the "long videos" (2 minutes in the full run)."""
        return self.shortest + (self.longest - self.shortest) * 110 / 290

    def duration(self, i: int) -> int:
        # Golden-ratio spacing: an even spread that does not depend on N.
        spread = (i * 0.6180339887) % 1.0
        if self.mix == "spread":
            return round(self.shortest + (self.longest - self.shortest) * spread)
        model, point = DRIFT_MODELS[i % len(DRIFT_MODELS)]
        typical = self.shortest + (self.longest - self.shortest) * point
        if model == DRIFTING and i >= self.waits * 3 // 4:
            typical *= 2
        return max(1, round(typical * (1 - DRIFT_SPREAD + 2 * DRIFT_SPREAD * spread)))

    def model(self, i: int) -> str:
        return "gpt-image-2" if self.mix == "spread" else DRIFT_MODELS[i % len(DRIFT_MODELS)][0]

    def measured(self, i: int) -> bool:
        """Whether task ``i``'s detection counts (the drift mix's warm-up half does not)."""
        return self.mix == "spread" or i >= self.waits // 2

    def starts_after(self, i: int) -> float:
        """Seconds after the tasks are created that task ``i`` starts (and its wait with it)."""
        if self.mix == "spread":
            return 0.0
        return DRIFT_LEAD + i * DRIFT_ARRIVALS * self.longest / self.waits


# -- the baseline, as a trigger the runner can run ----------------------------------------------------


class HttpPollingTrigger(BaseTrigger):
    """The HTTP provider's machinery as ``HttpSensorTrigger`` uses it, reading the JSON status."""

    def __init__(self, mindvideo_task_id: str, poll_interval: float) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.mindvideo_task_id = mindvideo_task_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "benchmarks.triggerer.HttpPollingTrigger",
            {"mindvideo_task_id": self.mindvideo_task_id, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import aiohttp
        from airflow.providers.http.hooks.http import HttpAsyncHook

        hook = HttpAsyncHook(method="GET", http_conn_id="mindvideo_http")
        while True:
            async with aiohttp.ClientSession() as session:
                response = await hook.run(
                    session=session,
                    endpoint=f"api/v1/tasks/{self.mindvideo_task_id}",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                )
                body = await response.json()
            if body["status"] in TERMINAL:
                yield TriggerEvent({"status": "success" if body["status"] == "succeeded" else body["status"]})
                return
            await asyncio.sleep(self.poll_interval)


_floor_sessions: dict[int, Any] = {}


class SharedSessionTrigger(BaseTrigger):
    """The practical floor: one shared ``aiohttp.ClientSession`` per loop, a bare GET and a JSON read.

    Its first GETs are spread as ours are (the provider's own helper), so that the memory and the
    stall at start compare the triggers, not a burst of first checks against a spread one.
    """

    def __init__(self, mindvideo_task_id: str, poll_interval: float, base_url: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.mindvideo_task_id = mindvideo_task_id
        self.poll_interval = poll_interval
        self.base_url = base_url

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "benchmarks.triggerer.SharedSessionTrigger",
            {
                "mindvideo_task_id": self.mindvideo_task_id,
                "poll_interval": self.poll_interval,
                "base_url": self.base_url,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import aiohttp

        loop = id(asyncio.get_running_loop())
        if loop not in _floor_sessions:
            _floor_sessions[loop] = aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"})
        session = _floor_sessions[loop]
        url = f"{self.base_url}/api/v1/tasks/{self.mindvideo_task_id}"
        from airflow_provider_mindvideo.triggers import _first_check_delay

        if held := _first_check_delay():
            await asyncio.sleep(held)
        while True:
            async with session.get(url) as response:
                body = await response.json()
            if body["status"] in TERMINAL:
                yield TriggerEvent({"status": "success" if body["status"] == "succeeded" else body["status"]})
                return
            await asyncio.sleep(self.poll_interval)


def trigger_for(kind: str, task_id: str, workload: Workload, started_at: float, model: str | None) -> BaseTrigger:
    if kind == "baseline":
        return HttpPollingTrigger(task_id, workload.poll_interval)
    if kind == "floor":
        return SharedSessionTrigger(task_id, workload.poll_interval, os.environ["MINDVIDEO_BENCH_URL"])
    from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger

    cap = workload.poll_interval if kind == "ours_fixed" else workload.max_poll_interval
    # ours_cold names no model, as before the triggers learnt: the backoff alone, the schedule of old.
    return MindVideoTaskTrigger(
        task_id,
        poll_interval=workload.poll_interval,
        max_poll_interval=cap,
        started_at=started_at,
        model=model if kind == "ours" else None,
    )


# -- the runner process: Airflow's TriggerRunner with a lag ticker ----------------------------------


def _runner_main() -> None:
    """What the supervisor forks: Airflow's TriggerRunner, plus the benchmark's own ticker."""
    from airflow.jobs.triggerer_job_runner import TriggerRunner

    from benchmarks.triggerer_probe import Probe

    class MeasuredRunner(TriggerRunner):  # type: ignore[misc]
        async def arun(self) -> None:
            probe = Probe(os.environ["MINDVIDEO_BENCH_PROBE"], TICK)
            # The warm-up's trigger is gone before the N waits arrive: every trigger alive is one of them.
            ticking = asyncio.create_task(probe.tick(lambda: len(self.triggers)))
            try:
                await super().arun()
            finally:
                ticking.cancel()
                probe.write()

        async def sync_state_to_supervisor(self, finished_ids: list[int]) -> None:
            if not self.triggers:
                Probe.current.idle()
            started = time.time()
            await super().sync_state_to_supervisor(finished_ids)
            if len(self.to_create) > 1:  # the N waits arrived: Airflow decoded their workloads
                Probe.current.handed_over(started, time.time())

        async def create_triggers(self) -> None:
            creating = len(self.to_create)
            if creating:
                Probe.current.creating(creating)
            await super().create_triggers()
            if creating:
                Probe.current.created(creating)

    profile_to = os.environ.get("MINDVIDEO_BENCH_PROFILE")  # a path: where to write a cProfile of the runner
    if not profile_to:
        MeasuredRunner().run()
        return
    import cProfile

    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        MeasuredRunner().run()
    finally:
        profiler.disable()
        profiler.dump_stats(profile_to)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def triggerer_main(
    kind: str, task_ids: list[str], starts: list[float], warm_up_id: str, workload: Workload, out: Path
) -> dict[str, Any]:
    from airflow.executors.workloads import RunTrigger
    from airflow.executors.workloads.task import TaskInstanceDTO
    from airflow.jobs.triggerer_job_runner import TriggerRunnerSupervisor
    from airflow.models.trigger import Trigger

    arrived: dict[int, float] = {}
    failed: dict[int, Any] = {}
    pending: list[RunTrigger] = []
    # Waits handed over as their tasks start (the drift mix): (when, workload), soonest last.
    scheduled: list[tuple[float, RunTrigger]] = []

    class BenchSupervisor(TriggerRunnerSupervisor):  # type: ignore[misc]
        """The triggerer's supervisor, with the metadata database replaced by the benchmark's lists."""

        @classmethod
        def run_in_process(cls) -> None:
            _runner_main()

        def load_triggers(self) -> None:
            now = time.time()
            while scheduled and scheduled[-1][0] <= now:
                pending.append(scheduled.pop()[1])
            while pending:
                self.creating_triggers.append(pending.pop(0))

        def heartbeat(self) -> None:
            pass

        def metric_tags(self) -> dict[str, str]:
            return {"hostname": "bench"}

        def clean_unused(self) -> None:
            pass

        def on_trigger_event(self, trigger_id: int, event: TriggerEvent) -> None:
            arrived[trigger_id] = time.time()
            if event.payload.get("status") != "success":
                failed[trigger_id] = event.payload

        def on_trigger_failure(self, trigger_id: int, exc: list[str] | None) -> None:
            arrived[trigger_id] = time.time()
            failed[trigger_id] = exc

    dag_version = uuid.uuid4()

    def workload_for(trigger_id: int, trigger: BaseTrigger) -> RunTrigger:
        classpath, kwargs = trigger.serialize()
        # A deferred task's trigger carries its task instance (the runner binds it to the log
        # context and the trigger), as the triggerer's own workloads do.
        ti = TaskInstanceDTO(
            id=uuid.uuid4(),
            task_id="wait_for_mindvideo",
            dag_id="mindvideo_bench",
            run_id="bench",
            try_number=1,
            map_index=trigger_id,
            dag_version_id=dag_version,
            pool_slots=1,
            priority_weight=1,
        )
        return RunTrigger(
            id=trigger_id, classpath=classpath, encrypted_kwargs=Trigger(classpath, kwargs).encrypted_kwargs, ti=ti
        )

    supervisor = BenchSupervisor.start(job=None, capacity=len(task_ids) + 1)
    pid = supervisor.pid

    def serve_until(done: Any, sample: Any = None, limit: float = 3600) -> None:
        deadline = time.monotonic() + limit
        while not done():
            if not supervisor.is_alive():
                raise RuntimeError(f"the trigger runner died (exit code {supervisor._exit_code})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(arrived)} events after {limit:.0f} s")
            supervisor.run_once()
            if sample is not None:
                sample()

    # Warm up: every code path once, so that the RSS growth measured next is the waits' own.
    pending.append(workload_for(1, trigger_for(kind, warm_up_id, workload, time.time(), None)))
    serve_until(lambda: 1 in arrived, limit=120)
    if failed:
        raise RuntimeError(f"the warm-up wait failed: {failed}")
    for _ in range(2):
        supervisor.run_once()
    rss_before, cpu_before = _proc_rss(pid), _proc_cpu_s(pid)
    supervisor_cpu_before = time.process_time()
    peak_rss = rss_before

    def sample() -> None:
        nonlocal peak_rss
        peak_rss = max(peak_rss, _proc_rss(pid))

    ids = range(2, len(task_ids) + 2)
    started_at, wall_before = time.time(), time.perf_counter()
    if workload.mix == "spread":
        pending.extend(
            workload_for(trigger_id, trigger_for(kind, task_id, workload, started_at, workload.model(i)))
            for i, (trigger_id, task_id) in enumerate(zip(ids, task_ids, strict=True))
        )
        starts = [started_at] * len(task_ids)
    else:
        # Each wait starts as its task does (as an operator defers right after its create).
        scheduled.extend(
            (start, workload_for(trigger_id, trigger_for(kind, task_id, workload, start, workload.model(i))))
            for i, (trigger_id, task_id, start) in enumerate(zip(ids, task_ids, starts, strict=True))
        )
        scheduled.sort(key=lambda item: -item[0])
    serve_until(lambda: len(arrived) == len(task_ids) + 1, sample)
    wall = time.perf_counter() - wall_before
    cpu = _proc_cpu_s(pid) - cpu_before
    supervisor_cpu = time.process_time() - supervisor_cpu_before
    supervisor.kill(escalation_delay=10, force=True)
    probe = json.loads(Path(os.environ["MINDVIDEO_BENCH_PROBE"]).read_text())
    if failed:
        example = next(iter(failed.values()))
        if isinstance(example, list) and example:  # a traceback: its last line says what went wrong
            example = example[-1].strip()
        raise RuntimeError(f"{len(failed)} of {len(task_ids)} waits failed, e.g. {example}")
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "supervisor_cpu_s": supervisor_cpu,
        "rss_before": probe["rss_before"],
        "memory": probe["memory"],
        "peak_rss": peak_rss,
        "handover": probe["handover"],
        "all_created_at": probe["all_created_at"],
        "lags": probe["lags"],
        "connections": probe["connections"],
        "collections": probe.get("collections", []),
        "started_at": started_at,
        "starts": dict(zip(task_ids, starts, strict=True)),
        "done_at": {task_id: arrived[i] for i, task_id in zip(ids, task_ids, strict=True)},
        "supervisor_max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the parent: emulator, tasks, children ----------------------------------------------------------


def run_workload(kind: str, workload: Workload, base_url: str, python: str = sys.executable) -> dict[str, Any]:
    """One triggerer process running N waits of ``kind``; its figures, or ``{"died": reason}``."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as client:
        client.post("/_emulator/reset").raise_for_status()
        for seconds in {workload.duration(i) for i in range(workload.waits)} | {0}:
            script = {"match": f"[d={seconds}]", "outcome": "succeeded", "queued_seconds": 0}
            client.post("/_emulator/scripts", json={**script, "processing_seconds": seconds}).raise_for_status()
        if workload.mix != "spread":
            # Each task is queued until its start, then takes its duration; its wait starts with it.
            for i in range(workload.waits):
                script = {"match": f"[t={i}]", "outcome": "succeeded", "queued_seconds": workload.starts_after(i)}
                script["processing_seconds"] = workload.duration(i)
                client.post("/_emulator/scripts", json=script).raise_for_status()
        warm_up = client.post("/api/v1/tasks", json={"model": "gpt-image-2", "input": {"prompt": "[d=0] warm-up"}})
        task_ids = asyncio.run(create_tasks(base_url, workload))
        before = client.get("/_emulator/state").json()
        created = {task["task_id"]: task for task in before["tasks"]}
        starts = [created[task_id]["terminal_at"] - workload.duration(i) for i, task_id in enumerate(task_ids)]
        with tempfile.TemporaryDirectory() as tmp:
            result, probe = Path(tmp) / "result.json", Path(tmp) / "probe.json"
            with open(Path(tmp) / "triggerer.log", "w+") as log:
                child = subprocess.run(
                    [python, "-m", "benchmarks.triggerer", "child", kind, json.dumps(workload.__dict__), str(result)],
                    input=json.dumps({"task_ids": task_ids, "starts": starts, "warm_up": warm_up.json()["task_id"]}),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                    cwd=ROOT,
                    env={**os.environ, **child_env(base_url), "MINDVIDEO_BENCH_PROBE": str(probe)},
                    check=False,
                )
                log.seek(0)
                output = log.read()
            if child.returncode != 0 or not result.exists():
                return {"kind": kind, "waits": workload.waits, "died": died_of(output)}
            measured = json.loads(result.read_text())
        after = client.get("/_emulator/state").json()
    return summarise(kind, workload, task_ids, measured, before, after)


def died_of(output: str) -> str:
    """How a triggerer run ended early, in its own words: what gave out, and the error it logged."""
    ended = next(
        (
            line.split("RuntimeError:", 1)[1].strip()
            for line in reversed(output.splitlines())
            if "RuntimeError:" in line
        ),
        None,
    )
    cause = next((needle for needle in ("Too many open files", "MemoryError", "Killed") if needle in output), None)
    if ended and cause:
        return f"{ended[:160]} ({cause})"
    lines = [line for line in output.splitlines() if "Error" in line or "error" in line]
    return (ended or cause or (lines[-1] if lines else output.strip()[-200:] or "no output"))[:200]


def summarise(
    kind: str,
    workload: Workload,
    task_ids: list[str],
    measured: dict[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
) -> dict[str, Any]:
    tasks = {task["task_id"]: task for task in after["tasks"]}
    started_at = measured["started_at"]
    delays, raw_delays, by_kind = [], [], {"short": [], "long": []}  # type: ignore[var-annotated]
    ended_before = 0
    for i, task_id in enumerate(task_ids):
        # The N tasks are created before the triggerer starts (at N=5,000 on a busy machine that
        # takes minutes), so some end before any wait exists: no trigger could see them earlier
        # than the hand-over. In production a wait starts as its task is created.
        terminal_at = tasks[task_id]["terminal_at"]
        start = measured.get("starts", {}).get(task_id, started_at)
        ended_before += terminal_at < start
        delay = measured["done_at"][task_id] - max(terminal_at, start)
        if not workload.measured(i):
            continue
        raw_delays.append(measured["done_at"][task_id] - terminal_at)
        delays.append(delay)
        duration = workload.duration(i)
        if duration <= workload.short_up_to:
            by_kind["short"].append(delay / duration)
        elif duration >= workload.long_from:
            by_kind["long"].append(delay / duration)
    requests = after["requests"].get("get", 0) - before["requests"].get("get", 0) - 1  # minus the warm-up's
    lags = measured["lags"]
    # Before the shortest task ends, the loop does nothing but start and poll N waits.
    starting = [(at, lag) for at, lag in lags if started_at <= at < started_at + workload.shortest * 0.9]
    running = [lag for at, lag in lags if at >= started_at]
    # Airflow's own part of the start: the runner decoding the N workloads handed over in one message.
    h0, h1 = measured["handover"] or (0.0, 0.0)
    decoding = [lag for at, lag in starting if at - lag < h1 and at > h0]
    triggers_start = [(at, lag) for at, lag in starting if not (at - lag < h1 and at > h0)]
    # Full garbage collections walk every object of the runner (Airflow's modules and each trigger's
    # wrapper as well as the waits'): a lag sample that overlaps one is shown apart.
    collections = [(end - took, end) for end, generation, took in measured.get("collections", []) if generation == 2]

    def collecting(at: float, lag: float) -> bool:
        return any(start < at and end > at - lag - TICK for start, end in collections)

    full_collections = [end - start for start, end in collections if started_at <= end < started_at + workload.shortest]
    n = workload.waits
    return {
        "kind": kind,
        "waits": n,
        "wall_s": measured["wall_s"],
        "cpu_s": measured["cpu_s"],
        "cpu_per_wait_ms": 1000 * measured["cpu_s"] / n,
        "cpu_per_request_ms": 1000 * measured["cpu_s"] / requests,
        "supervisor_cpu_per_wait_ms": 1000 * measured["supervisor_cpu_s"] / n,
        "peak_rss_mib": measured["peak_rss"] / 2**20,
        "rss_per_wait_kib": rss_per_wait(measured["memory"], measured["rss_before"]) / 1024,
        "connections": measured["connections"],
        "requests": requests,
        "requests_per_wait": requests / n,
        "lag_p50_ms": 1000 * statistics.median(running),
        "lag_p99_ms": 1000 * quantile(running, 0.99),
        "lag_max_ms": 1000 * max(running),
        "start_stall_ms": 1000 * max((lag for _, lag in starting), default=0.0),
        "handover_ms": 1000 * (h1 - h0),
        "creation_s": (measured["all_created_at"] or h1) - h1,
        "lag_timeline": [(round(at - started_at, 1), round(1000 * lag)) for at, lag in lags if lag > 0.1],
        "handover_stall_ms": 1000 * max(decoding, default=0.0),
        "start_stall_waits_ms": 1000 * max((lag for _, lag in triggers_start), default=0.0),
        "start_full_collection_ms": 1000 * max(full_collections, default=0.0),
        "start_stall_not_collecting_ms": 1000
        * max((lag for at, lag in triggers_start if not collecting(at, lag)), default=0.0),
        "latency_p50_s": statistics.median(delays),
        "latency_from_task_end_p50_s": statistics.median(raw_delays),
        "ended_before_handover": ended_before / n,
        "latency_p95_s": quantile(delays, 0.95),
        "latency_max_s": max(delays),
        "short_delay_p50": statistics.median(by_kind["short"]),
        "short_delay_p95": quantile(by_kind["short"], 0.95),
        "long_delay_p50": statistics.median(by_kind["long"]),
        "long_delay_p95": quantile(by_kind["long"], 0.95),
    }


def rss_per_wait(memory: list[tuple[int, int]], rss_before: int) -> float:
    """The RSS grown since the N waits arrived, per wait alive: the most seen while at least 80% of the
    most waits alive at once were alive (their first checks made, few ended yet)."""
    most = max((alive for alive, _ in memory), default=0)
    return max(((rss - rss_before) / alive for alive, rss in memory if alive and alive >= 0.8 * most), default=0.0)


async def create_tasks(base_url: str, workload: Workload) -> list[str]:
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    ) as client:
        limit = asyncio.Semaphore(32)

        async def create(i: int) -> str:
            async with limit:
                prompt = f"[d={workload.duration(i)}] [t={i}] wait {i}"
                body = {"model": workload.model(i), "input": {"prompt": prompt}}
                answer = await client.post("/api/v1/tasks", json=body)
                return str(answer.json()["task_id"])

        return await asyncio.gather(*(create(i) for i in range(workload.waits)))


def child_env(base_url: str) -> dict[str, str]:
    host, port = base_url.removeprefix("http://").split(":")
    return {
        "MINDVIDEO_BENCH_URL": base_url,
        # Detection is measured, not the hold against Airflow's fast-resume race (the page says so).
        "AIRFLOW__MINDVIDEO__RESUME_NOT_BEFORE": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT": json.dumps({"conn_type": "mindvideo", "host": base_url, "password": API_KEY}),
        "AIRFLOW_CONN_MINDVIDEO_HTTP": json.dumps(
            {"conn_type": "http", "host": host, "port": int(port), "schema": "http"}
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["child"])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("workload")
    parser.add_argument("result")
    args = parser.parse_args()
    workload = Workload(**json.loads(args.workload))
    given = json.loads(sys.stdin.read())
    from benchmarks.triggerer_probe import count_connections

    count_connections()  # before the fork: the runner inherits the counting connector
    result = triggerer_main(
        args.kind, given["task_ids"], given["starts"], given["warm_up"], workload, Path(args.result)
    )
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()

"""Thousands of waits in one event loop: MindVideoTaskTrigger against the HTTP provider's pattern.

The parent process runs the emulator (a process of its own), creates N MindVideo tasks that
finish after a spread of durations, then starts one child process per workload that waits
for all of them in one asyncio loop, as a triggerer does, and reports what it cost. The
emulator counts requests and TCP connections and knows when each task became terminal.

- ``ours``: N ``MindVideoTaskTrigger.run()`` generators, each consumed until its first event
  (how Airflow's trigger runner drives them).
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
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

API_KEY = "mv_test_emulator"
TERMINAL = {"succeeded", "failed", "cancelled"}
TICK = 0.05


@dataclass(frozen=True)
class Workload:
    waits: int
    poll_interval: float  # both: the first interval; the baseline keeps it
    max_poll_interval: float  # ours: the poll cap
    shortest: float  # task durations, seconds, spread evenly between these
    longest: float

    def duration(self, i: int) -> int:
        # Golden-ratio spacing: an even spread that does not depend on N.
        return round(self.shortest + (self.longest - self.shortest) * ((i * 0.6180339887) % 1.0))


# -- the child: one event loop, N waits -------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def ours(task_id: str, workload: Workload, started_at: float) -> None:
    from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger

    trigger = MindVideoTaskTrigger(
        task_id,
        poll_interval=workload.poll_interval,
        max_poll_interval=workload.max_poll_interval,
        started_at=started_at,
    )
    events: AsyncIterator[Any] = trigger.run()
    try:
        event = await anext(events)
    finally:
        await events.aclose()  # the trigger runner closes a trigger once it fired
    assert event.payload["status"] == "success", event.payload


async def baseline(task_id: str, workload: Workload, started_at: float) -> None:
    import aiohttp
    from airflow.providers.http.hooks.http import HttpAsyncHook

    hook = HttpAsyncHook(method="GET", http_conn_id="mindvideo_http")
    while True:
        async with aiohttp.ClientSession() as session:
            response = await hook.run(
                session=session,
                endpoint=f"api/v1/tasks/{task_id}",
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            body = await response.json()
        if body["status"] in TERMINAL:
            assert body["status"] == "succeeded", body
            return
        await asyncio.sleep(workload.poll_interval)


def count_connections() -> list[int]:
    """Count TCP connections opened by aiohttp, which both workloads send through."""
    from aiohttp.connector import TCPConnector

    opened = [0]
    create = TCPConnector._create_connection

    async def counting(self: TCPConnector, *args: Any, **kwargs: Any) -> Any:
        opened[0] += 1
        return await create(self, *args, **kwargs)

    TCPConnector._create_connection = counting  # type: ignore[method-assign]
    return opened


async def child_main(kind: str, task_ids: list[str], workload: Workload, profiler: Any = None) -> dict[str, Any]:
    wait: Callable[[str, Workload, float], Any] = {"ours": ours, "baseline": baseline}[kind]
    opened = count_connections()
    await warm_up(kind, workload)
    if profiler is not None:
        profiler.enable()
    rss_before = rss_bytes()
    opened_before = opened[0]
    lags: list[float] = []
    done_at: dict[str, float] = {}

    async def ticker() -> None:
        while True:
            expected = time.perf_counter() + TICK
            await asyncio.sleep(TICK)
            lags.append(time.perf_counter() - expected)

    async def one(task_id: str) -> None:
        await wait(task_id, workload, started_at)
        done_at[task_id] = time.time()

    ticking = asyncio.create_task(ticker())
    cpu_before, started_at, wall_before = time.process_time(), time.time(), time.perf_counter()
    waits = [asyncio.create_task(one(task_id)) for task_id in task_ids]
    # Every wait has made its first check well before the first interval ends, and none has
    # finished yet (the shortest task takes longer): this is N waiting tasks.
    await asyncio.sleep(workload.poll_interval * 0.8)
    rss_waiting = rss_bytes()
    await asyncio.gather(*waits)
    wall, cpu = time.perf_counter() - wall_before, time.process_time() - cpu_before
    ticking.cancel()
    if profiler is not None:
        profiler.disable()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before": rss_before,
        "rss_waiting": rss_waiting,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "lag_p50_ms": 1000 * statistics.median(lags),
        "lag_p99_ms": 1000 * quantile(lags, 0.99),
        "connections": opened[0] - opened_before,
        "started_at": started_at,
        "done_at": done_at,
    }


async def warm_up(kind: str, workload: Workload) -> None:
    """Import and exercise every code path once, so that RSS growth is the waits' own."""
    client = httpx.Client(base_url=os.environ["MINDVIDEO_BENCH_URL"], headers={"Authorization": f"Bearer {API_KEY}"})
    task_id = client.post("/api/v1/tasks", json={"model": "gpt-image-2", "input": {"prompt": "[d=0] warm-up"}}).json()
    client.close()
    await {"ours": ours, "baseline": baseline}[kind](task_id["task_id"], workload, time.time())


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the parent: emulator, tasks, children ----------------------------------------------------------


def run_workload(kind: str, workload: Workload, base_url: str, python: str = sys.executable) -> dict[str, Any]:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as client:
        client.post("/_emulator/reset").raise_for_status()
        for seconds in {workload.duration(i) for i in range(workload.waits)} | {0}:
            script = {"match": f"[d={seconds}]", "outcome": "succeeded", "queued_seconds": 0}
            client.post("/_emulator/scripts", json={**script, "processing_seconds": seconds}).raise_for_status()
        task_ids = asyncio.run(create_tasks(base_url, workload))
        before = client.get("/_emulator/state").json()
        child = subprocess.run(
            [python, __file__, "child", kind, json.dumps(workload.__dict__)],
            input=json.dumps(task_ids),
            capture_output=True,
            text=True,
            env={**os.environ, **connections_env(base_url)},
            check=False,
        )
        if child.returncode != 0:
            raise RuntimeError(f"{kind} child failed:\n{child.stderr[-3000:]}")
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        after = client.get("/_emulator/state").json()
    terminal_at = {task["task_id"]: task["terminal_at"] for task in after["tasks"]}
    latencies = [measured["done_at"][task_id] - terminal_at[task_id] for task_id in task_ids]
    requests = after["requests"].get("get", 0) - before["requests"].get("get", 0) - 1  # minus the warm-up's
    return {
        "kind": kind,
        "waits": workload.waits,
        "wall_s": measured["wall_s"],
        "cpu_s": measured["cpu_s"],
        "cpu_per_wait_ms": 1000 * measured["cpu_s"] / workload.waits,
        "peak_rss_mib": measured["peak_rss"] / 2**20,
        "rss_per_wait_kib": (measured["rss_waiting"] - measured["rss_before"]) / workload.waits / 1024,
        "connections": measured["connections"],
        "requests": requests,
        "requests_per_wait": requests / workload.waits,
        "lag_p50_ms": measured["lag_p50_ms"],
        "lag_p99_ms": measured["lag_p99_ms"],
        "latency_p50_s": statistics.median(latencies),
        "latency_p99_s": quantile(latencies, 0.99),
        # A poking HttpSensor (what response_check forces) holds a worker slot for the whole wait.
        # Deferred, ours holds no worker slot; the baseline stands for a poking HttpSensor, which
        # holds one from the start of the wait until it sees the task finish.
        "slot_s_per_wait": 0.0
        if kind == "ours"
        else statistics.mean(done - measured["started_at"] for done in measured["done_at"].values()),
    }


async def create_tasks(base_url: str, workload: Workload) -> list[str]:
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    ) as client:
        limit = asyncio.Semaphore(32)

        async def create(i: int) -> str:
            async with limit:
                prompt = f"[d={workload.duration(i)}] wait {i}"
                answer = await client.post("/api/v1/tasks", json={"model": "gpt-image-2", "input": {"prompt": prompt}})
                return str(answer.json()["task_id"])

        return await asyncio.gather(*(create(i) for i in range(workload.waits)))


def connections_env(base_url: str) -> dict[str, str]:
    host, port = base_url.removeprefix("http://").split(":")
    return {
        "MINDVIDEO_BENCH_URL": base_url,
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT": json.dumps({"conn_type": "mindvideo", "host": base_url, "password": API_KEY}),
        "AIRFLOW_CONN_MINDVIDEO_HTTP": json.dumps(
            {"conn_type": "http", "host": host, "port": int(port), "schema": "http"}
        ),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["child"])
    parser.add_argument("kind", choices=["ours", "baseline"])
    parser.add_argument("workload")
    args = parser.parse_args()
    workload = Workload(**json.loads(args.workload))
    task_ids = json.loads(sys.stdin.read())
    profile_to = os.environ.get("MINDVIDEO_BENCH_PROFILE")  # a path: where to write a cProfile of the child
    if profile_to:
        import cProfile

        profiler = cProfile.Profile(time.process_time)
        result = asyncio.run(child_main(args.kind, task_ids, workload, profiler))
        profiler.dump_stats(f"{profile_to}.{args.kind}")
    else:
        result = asyncio.run(child_main(args.kind, task_ids, workload))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""What the benchmark measures inside the trigger runner process: loop lag, connections, memory by origin.

Kept apart from ``triggerer.py`` so that the runner, a fork of the supervisor, imports nothing
more than it needs. With ``MINDVIDEO_BENCH_TRACEMALLOC=<path>`` set, the runner also traces
allocations and writes, to that path, where the memory of the N waits went (the growth
between the moment they are handed over and the moment the first is due to end).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

_opened = [0]


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def count_connections() -> None:
    """Count TCP connections opened by aiohttp, which every kind sends through."""
    from aiohttp.connector import TCPConnector

    create = TCPConnector._create_connection

    async def counting(self: TCPConnector, *args: Any, **kwargs: Any) -> Any:
        _opened[0] += 1
        return await create(self, *args, **kwargs)

    TCPConnector._create_connection = counting  # type: ignore[method-assign]


class Probe:
    current: ClassVar[Probe]

    def __init__(self, path: str, tick: float) -> None:
        self.path, self.tick_seconds = Path(path), tick
        self.lags: list[tuple[float, float]] = []
        self.connections_before = 0
        self.all_created_at: float | None = None
        self._before: tracemalloc.Snapshot | None = None
        self.handover: tuple[float, float] | None = None
        self.rss_before: int | None = None  # just before the N waits arrive
        self.warm_up_created = False
        self.memory: list[tuple[int, int]] = []  # (waits alive, RSS) every half second after the hand-over
        # Garbage collections that held the loop (when, generation, seconds): a full collection
        # walks every object of the process, so it shows as one long lag sample.
        self.collections: list[tuple[float, int, float]] = []
        self._collecting_since = 0.0
        gc.callbacks.append(self._on_collection)
        # With MINDVIDEO_BENCH_OBJECTS set: the objects the collector tracks, before the waits arrive and
        # MINDVIDEO_BENCH_TRACE_AFTER seconds after they were created (counting them holds the loop).
        self.count_objects = bool(os.environ.get("MINDVIDEO_BENCH_OBJECTS"))
        self.objects: dict[str, int] = {}
        self.trace_to = os.environ.get("MINDVIDEO_BENCH_TRACEMALLOC")
        self.trace_after = float(os.environ.get("MINDVIDEO_BENCH_TRACE_AFTER", "8"))
        if self.trace_to:
            tracemalloc.start(12)
        Probe.current = self

    async def tick(self, alive: Callable[[], int]) -> None:
        """Sample the loop's lag every tick, and every tenth the RSS with the number of waits alive."""
        ticks = 0
        while True:
            expected = time.perf_counter() + self.tick_seconds
            await asyncio.sleep(self.tick_seconds)
            self.lags.append((time.time(), time.perf_counter() - expected))
            ticks += 1
            if ticks % 10 == 0 and self.rss_before is not None:
                self.memory.append((alive(), rss_bytes()))

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._collecting_since = time.perf_counter()
            return
        took = time.perf_counter() - self._collecting_since
        if took >= 0.005:
            self.collections.append((time.time(), info["generation"], took))

    def creating(self, count: int) -> None:
        """The runner is about to create ``count`` triggers in one go (1: the warm-up; then the N waits)."""
        if count == 1:
            self.warm_up_created = True
            if self.count_objects:
                self.objects["before"] = len(gc.get_objects())
            # Before the N waits' workloads arrive: their decoding is part of what they cost.
            self._before = tracemalloc.take_snapshot() if self.trace_to else None
            return
        self.connections_before = _opened[0]

    def idle(self) -> None:
        """The runner runs no trigger: note the RSS, until the N waits arrive (the last note stays)."""
        if self.warm_up_created and self.handover is None:
            self.rss_before = rss_bytes()

    def handed_over(self, started: float, ended: float) -> None:
        self.handover = (started, ended)

    def created(self, count: int) -> None:
        if count == 1:
            return
        self.all_created_at = time.time()
        if self.count_objects:
            asyncio.get_running_loop().call_later(self.trace_after, self._count_objects, count)
        if self._before is not None:
            asyncio.get_running_loop().call_later(self.trace_after, self._trace, self._before, count)

    def _count_objects(self, count: int) -> None:
        self.objects["after"] = len(gc.get_objects())
        self.objects["waits"] = count

    def _trace(self, before: tracemalloc.Snapshot, count: int) -> None:
        after = tracemalloc.take_snapshot()
        assert self.trace_to is not None
        before.dump(f"{self.trace_to}.before")
        after.dump(f"{self.trace_to}.after")
        alive = len(asyncio.all_tasks())
        lines = [f"# growth of {count} waits ({alive} asyncio tasks alive), per wait, by allocation site"]
        for key in ("lineno", "traceback"):
            stats = after.compare_to(before, key)
            total = sum(stat.size_diff for stat in stats)
            lines.append(f"\n## by {key}: {total / count:.0f} B per wait in all")
            for stat in stats[:25]:
                where = stat.traceback.format(limit=6 if key == "traceback" else 1)
                lines.append(
                    f"{stat.size_diff / count:8.0f} B  {stat.count_diff / count:6.2f} blocks  "
                    + " <- ".join(where[::-1])
                )
        Path(self.trace_to).write_text("\n".join(lines) + "\n")

    def write(self) -> None:
        self.path.write_text(
            json.dumps(
                {
                    "lags": self.lags,
                    "connections": _opened[0] - self.connections_before,
                    "all_created_at": self.all_created_at,
                    "handover": self.handover,
                    "rss_before": self.rss_before,
                    "memory": self.memory,
                    "collections": self.collections,
                    "objects": self.objects,
                }
            )
        )

"""What the benchmark measures inside the trigger runner process: loop lag, connections, memory by origin.

Kept apart from ``triggerer.py`` so that the runner, a fork of the supervisor, imports nothing
more than it needs. With ``MINDVIDEO_BENCH_TRACEMALLOC=<path>`` set, the runner also traces
allocations and writes, to that path, where the memory of the N waits went (the growth
between the moment they are handed over and the moment the first is due to end).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any, ClassVar

_opened = [0]


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
        self.trace_to = os.environ.get("MINDVIDEO_BENCH_TRACEMALLOC")
        self.trace_after = float(os.environ.get("MINDVIDEO_BENCH_TRACE_AFTER", "8"))
        if self.trace_to:
            tracemalloc.start(12)
        Probe.current = self

    async def tick(self) -> None:
        while True:
            expected = time.perf_counter() + self.tick_seconds
            await asyncio.sleep(self.tick_seconds)
            self.lags.append((time.time(), time.perf_counter() - expected))

    def created(self, count: int) -> None:
        """The runner created ``count`` triggers in one go (1: the warm-up; then the N waits)."""
        if count == 1:
            return
        self.connections_before = _opened[0]
        self.all_created_at = time.time()
        if self.trace_to:
            before = tracemalloc.take_snapshot()
            asyncio.get_running_loop().call_later(self.trace_after, self._trace, before, count)

    def _trace(self, before: tracemalloc.Snapshot, count: int) -> None:
        after = tracemalloc.take_snapshot()
        lines = [f"# growth of {count} waits, per wait, by allocation site"]
        for key in ("lineno", "traceback"):
            stats = after.compare_to(before, key)
            total = sum(stat.size_diff for stat in stats)
            lines.append(f"\n## by {key}: {total / count:.0f} B per wait in all")
            for stat in stats[:25]:
                where = stat.traceback.format(limit=6 if key == "traceback" else 1)
                lines.append(f"{stat.size_diff / count:8.0f} B  {stat.count_diff / count:6.2f} blocks  " + " <- ".join(where[::-1]))
        assert self.trace_to is not None
        Path(self.trace_to).write_text("\n".join(lines) + "\n")

    def write(self) -> None:
        self.path.write_text(
            json.dumps(
                {
                    "lags": self.lags,
                    "connections": _opened[0] - self.connections_before,
                    "all_created_at": self.all_created_at,
                }
            )
        )

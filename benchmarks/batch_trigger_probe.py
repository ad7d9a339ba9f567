"""The batch trigger alone, in this process, against the emulator in another: request rate, memory, and where it goes.

What ``benchmarks/batch.py`` cannot take apart on a whole Airflow: how close to the
connection's ``max_requests_per_second`` the trigger's creates and looks come, how much the
process grows over a batch (after a small warm-up batch, as a triggerer that has run batches
before), and -- with ``--tracemalloc`` (slower: its rates mean nothing) -- which lines hold
the memory at the batch's peak.

Usage: ``python benchmarks/batch_trigger_probe.py [--items 10000] [--download] [--tracemalloc]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The same emulator, with the same rate limit and durations, as the batch benchmark's.
from benchmarks.batch import CLIENT_RATE, IMAGE_SECONDS, QUEUED_SECONDS, RATE_LIMIT, bench_emulator

MiB = 2**20


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Ti:
    dag_id: str = "probe"
    task_id: str = "generate"
    run_id: str = "manual__probe"
    map_index: int = -1


class Peak:
    """RSS sampled every 0.1 s; with tracemalloc, the snapshot taken when traced memory was highest."""

    def __init__(self, trace: bool) -> None:
        self.rss = rss()
        self.trace = trace
        self.traced = 0
        self.snapshot: tracemalloc.Snapshot | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.rss = max(self.rss, rss())

    async def watch_traced(self) -> None:
        while self.trace:
            await asyncio.sleep(5)
            current, _ = tracemalloc.get_traced_memory()
            if current > self.traced:
                self.traced, self.snapshot = current, tracemalloc.take_snapshot()

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def run_batch(folder: Path, name: str, items: int, download: bool, peak: Peak | None) -> dict[str, Any]:
    from airflow_provider_mindvideo.batch.plan import dump_work_list, entries_from_list, work_list
    from airflow_provider_mindvideo.batch.trigger import MindVideoBatchTrigger

    prompts = [{"prompt": f"probe {name} picture {i}", "size": "16:9"} for i in range(items)]
    work = work_list(entries_from_list(prompts), "gpt-image-2", Ti(run_id=f"manual__{name}"))
    (folder / f"{name}.work.jsonl").write_text(dump_work_list(work))
    del prompts, work
    trigger = MindVideoBatchTrigger(
        f"file://{folder}/{name}.work.jsonl",
        f"file://{folder}/{name}.jsonl",
        max_active=400,
        poll_interval=4.5,
        max_poll_interval=30.0,
        progress_interval=15.0,
        # Only with --download: the trigger of a version before saving took neither.
        **({"download_to": f"file://{folder}/{name}-media", "download_allow_private_urls": True} if download else {}),
    )
    watcher = asyncio.create_task(peak.watch_traced()) if peak else None
    started = time.monotonic()
    events = [event.payload async for event in trigger.run()]
    wall = time.monotonic() - started
    if watcher:
        watcher.cancel()
    return {"wall": wall, "event": events[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--download", action="store_true", help="with download_to (saving in the trigger)")
    parser.add_argument("--tracemalloc", action="store_true", help="where the memory is at the peak (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mindvideo-probe-") as tmp, bench_emulator() as base_url:
        folder = Path(tmp)
        os.environ["AIRFLOW_CONN_MINDVIDEO_DEFAULT"] = json.dumps(
            {"conn_type": "mindvideo", "host": base_url, "password": "mv_test_emulator",
             "extra": {"max_requests_per_second": CLIENT_RATE}}
        )  # fmt: skip
        asyncio.run(run_batch(folder, "warmup", 200, args.download, None))  # imports, pools, first-use caches
        httpx.post(f"{base_url}/_emulator/reset", timeout=60).raise_for_status()
        if args.tracemalloc:
            tracemalloc.start(10)
        with Peak(args.tracemalloc) as peak:
            before = rss()
            result = asyncio.run(run_batch(folder, "measured", args.items, args.download, peak))
        state = httpx.get(f"{base_url}/_emulator/state", timeout=120).json()
    ready = [task["terminal_at"] for task in state["tasks"] if task["terminal_at"] is not None]
    generating = max(ready) - min(ready) + QUEUED_SECONDS + IMAGE_SECONDS
    api = sum(count for route, count in state["requests"].items() if route != "files")
    minimum = args.items * 2 / RATE_LIMIT + QUEUED_SECONDS + IMAGE_SECONDS
    print(f"items {args.items:,}, download {args.download}: {result['event']['summary']['counts']}")
    print(f"wall {result['wall']:.1f} s (emulator-bound minimum {minimum:.1f} s: {result['wall'] / minimum:.2f}x)")
    print(f"generating (first create to last image ready) {generating:.1f} s")
    print(f"API requests {api:,} ({api / args.items:.2f}/item): {api / generating:.1f}/s while generating")
    print(f"429 answers {state['rate_limited']}, file downloads {state['requests'].get('files', 0):,}")
    print(
        f"RSS before {before / MiB:.0f} MiB, peak {peak.rss / MiB:.0f} MiB: growth {(peak.rss - before) / MiB:.1f} MiB"
    )
    if peak.snapshot is not None:
        print(f"traced at the peak: {peak.traced / MiB:.1f} MiB; largest holders:")
        for stat in peak.snapshot.statistics("lineno")[:20]:
            print(f"  {stat.size / MiB:7.2f} MiB {stat.count:>8,} blocks  {stat.traceback[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Batches are good neighbours in a shared event loop: small steps, loop-wide bounds, fair shares.

Counted, never timed: how many callbacks one turn of the loop runs (a loop that counts them),
requests the emulator saw at once, the order the emulator saw creates in.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo.batch import sharing
from airflow_provider_mindvideo.batch.plan import SUCCEEDED, dump_work_list, entries_from_list, work_list
from airflow_provider_mindvideo.batch.sharing import FairSlots, stepped_aside
from airflow_provider_mindvideo.batch.trigger import DONE, MindVideoBatchTrigger
from airflow_provider_mindvideo.emulator import MindVideoEmulator


@dataclass
class Ti:
    dag_id: str = "sharing_dag"
    task_id: str = "generate"
    run_id: str = "manual__sharing"
    map_index: int = -1


def _trigger(folder: Path, name: str, count: int, **options: Any) -> MindVideoBatchTrigger:
    items = work_list(
        entries_from_list([{"prompt": f"{name} {i}"} for i in range(count)]), "gpt-image-2", Ti(run_id=name)
    )
    (folder / f"{name}.work.jsonl").write_text(dump_work_list(items))
    settings: dict[str, Any] = {"poll_interval": 0.05, "max_poll_interval": 0.1, "progress_interval": 60.0, **options}
    return MindVideoBatchTrigger(f"file://{folder}/{name}.work.jsonl", f"file://{folder}/{name}.jsonl", **settings)


async def _events(trigger: MindVideoBatchTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


class _CountedReady(collections.deque):  # type: ignore[type-arg]
    """The loop's queue of callbacks ready to run: as one is taken, the previous one has ended."""

    def __init__(self, loop: CountingLoop) -> None:
        super().__init__()
        self.loop = loop

    def popleft(self) -> Any:
        self.loop.most = max(self.loop.most, self.loop.scheduled)
        self.loop.scheduled = 0
        return super().popleft()


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that notes the most callbacks one callback (one step of a task) made ready.

    A step that starts a task per item, or wakes every item waiting on one future, shows as
    thousands; timers coming due together (a busy machine) do not count: each wakes one task,
    in a callback of its own. So the count does not depend on how loaded the machine is.
    """

    def __init__(self) -> None:
        super().__init__()
        self._ready: _CountedReady = _CountedReady(self)
        self.scheduled = self.most = 0

    def call_soon(self, *args: Any, **kwargs: Any) -> asyncio.Handle:
        self.scheduled += 1
        return super().call_soon(*args, **kwargs)


def test_no_step_of_a_batch_wakes_or_starts_more_than_a_step_of_items_and_max_active_is_clamped_once(
    emulator: MindVideoEmulator,
    tmp_path: Path,
    debug_logs: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1,500 items at max_active=100000: unbounded, one step started 1,500 workers, and another
    # (their intents stored as one group) woke all 1,500.
    monkeypatch.setattr(sharing, "LOOP_ACTIVE", 1000)
    trigger = _trigger(tmp_path, "big", 1500, max_active=100_000)
    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        events = runner.run(_events(trigger))
        loop = runner.get_loop()
        assert isinstance(loop, CountingLoop)
        most = loop.most
    assert events[0]["status"] == DONE and events[0]["summary"]["counts"][SUCCEEDED] == 1500
    # A step starts or wakes at most WORK_PER_STEP items (and makes ready a few of its own: itself, a timer's).
    assert most <= sharing.WORK_PER_STEP + 4, most
    said = [str(log["event"]) % tuple(log.get("positional_args", ())) for log in debug_logs]
    clamped = [line for line in said if "max_active=100000" in line]
    assert len(clamped) == 1 and "clamped to 1000" in clamped[0], clamped


def test_two_batches_in_one_loop_share_its_bounds_and_neither_starves(
    emulator: MindVideoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sharing, "LOOP_ACTIVE", 4)
    monkeypatch.setattr(sharing, "LOOP_REQUESTS", 3)
    # The greedy batch has ten times the workers of the modest one, and starts first.
    greedy = _trigger(tmp_path, "greedy", 60, max_active=40)
    modest = _trigger(tmp_path, "modest", 60, max_active=4)

    async def both() -> list[list[dict[str, Any]]]:
        return list(await asyncio.gather(_events(greedy), _events(modest)))

    results = asyncio.run(both())
    assert [events[0]["status"] for events in results] == [DONE, DONE]
    assert emulator.state.max_in_flight <= 3 + 1  # the loop's requests in flight, and the control API's look
    creates = [task["prompt"].split()[0] for task in emulator.state.snapshot()["tasks"]]
    assert sorted(collections.Counter(creates).values()) == [60, 60]
    # While both had items to create, the loop's slots went round-robin: the modest batch made
    # about half of those creates, not the tenth its share of workers would have given it.
    both_running = creates[: 2 * min(creates.index("modest") + 60, len(creates)) // 2]
    first_half = both_running[: len(both_running) // 2]
    share = first_half.count("modest") / len(first_half)
    assert share >= 0.35, (share, "".join(name[0] for name in creates))


def test_fair_slots_go_round_robin_between_tenants_and_survive_cancelled_waiters() -> None:
    async def scenario() -> list[str]:
        slots = FairSlots(1)
        order: list[str] = []
        await slots.acquire("first")

        async def wait(tenant: str) -> None:
            async with slots.slot(tenant):
                order.append(tenant)

        greedy = [asyncio.create_task(wait("greedy")) for _ in range(4)]
        await asyncio.sleep(0)
        lost = asyncio.create_task(wait("lost"))
        modest = [asyncio.create_task(wait("modest")) for _ in range(2)]
        await asyncio.sleep(0)
        lost.cancel()
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*greedy, *modest)
        assert slots.held == 0 and slots.waiting == 0
        return order

    assert asyncio.run(scenario()) == ["greedy", "modest", "greedy", "modest", "greedy", "greedy"]


def test_an_item_waiting_for_money_or_a_pause_lends_its_slot_to_the_other_batches() -> None:
    async def scenario() -> list[str]:
        slots = FairSlots(1)
        order: list[str] = []
        reset = asyncio.Event()

        async def waiting_for_a_budget_window() -> None:
            async with slots.slot("spent"):
                order.append("spent: reserves")
                async with stepped_aside():
                    await reset.wait()
                order.append("spent: creates")

        async def other(i: int) -> None:
            async with slots.slot("other"):
                order.append(f"other {i}")

        spent = asyncio.create_task(waiting_for_a_budget_window())
        await asyncio.sleep(0)
        # Held by a task that waits for the window: without stepping aside these never start.
        await asyncio.gather(*(other(i) for i in range(3)))
        reset.set()
        await spent
        assert slots.held == 0
        return order

    order = asyncio.run(asyncio.wait_for(scenario(), 60))  # a guard against a hang, not a timing
    assert order == ["spent: reserves", "other 0", "other 1", "other 2", "spent: creates"]

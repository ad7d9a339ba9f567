"""Attacks on the batch trigger's guarantees of issue 29 (two runs at once; the loop's shared bounds).

Each test is a way the guarantees were found to break, kept so they stay fixed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo.batch.lease import lease_path
from airflow_provider_mindvideo.batch.sharing import FairSlots, stepped_aside
from airflow_provider_mindvideo.batch.trigger import DONE
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from tests.test_batch_twice import LEASE_SECONDS, Runner, batch, check_the_journal, short_lease, wait_for

__all__ = ["batch", "short_lease"]  # the fixtures, used by name


@pytest.mark.parametrize("damage", ["", "{", '{"holder": "x", "beat"', "[1, 2]", "null"])
def test_a_damaged_lease_file_does_not_keep_the_batch_from_running(
    batch: Any, emulator: MindVideoEmulator, damage: str
) -> None:
    """A lease file emptied or truncated from outside (a full disk, a hand edit) names no holder: it is free.

    It used to read as free, then the claim's create-if-absent found the file there and failed,
    and the run waited for "no run" forever.
    """
    work = batch(2)
    lease_file = Path(lease_path(work.result_path).removeprefix("file://"))
    lease_file.write_text(damage)
    runner = Runner(work.trigger(max_active=2), "triggerer-1")
    # A bound that only turns the hang into a failure: a free lease is claimed at once.
    wait_for(lambda: bool(runner.events), "the batch's event", timeout=5 * LEASE_SECONDS)
    (event,) = runner.join()
    assert event["status"] == DONE and event["summary"]["counts"]["succeeded"] == 2
    assert emulator.state.charged_tasks == 2
    check_the_journal(work, 2)


def test_an_item_cancelled_while_stepped_aside_ends_without_waiting_for_a_slot() -> None:
    """A batch cancelled while its items wait for money (their slots lent out) ends at once.

    Its items used to take a slot back on the way out, so the cancellation waited until another
    batch's item (a 300 s video) freed one -- and the trigger's lease hand-over with it.
    """

    async def scenario() -> None:
        slots = FairSlots(1)
        aside, others_hold, let_go = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def waiting_for_money() -> None:
            async with slots.slot("batch a"), stepped_aside():
                aside.set()
                await asyncio.Event().wait()

        async def other_batch() -> None:
            async with slots.slot("batch b"):
                others_hold.set()
                await let_go.wait()

        item = asyncio.ensure_future(waiting_for_money())
        await aside.wait()
        other = asyncio.ensure_future(other_batch())
        await others_hold.wait()
        item.cancel()
        for _ in range(20):  # loop turns, not time: a cancelled item needs a couple
            await asyncio.sleep(0)
        ended = item.done()
        let_go.set()
        await asyncio.gather(item, other, return_exceptions=True)
        assert ended, "the cancelled item waited for a slot another batch held"
        assert slots.held == 0 and slots.waiting == 0

    asyncio.run(scenario())


def test_a_retry_started_while_the_earlier_try_still_runs_takes_the_batch_over(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    """Try 1's triggerer lost the database but not the storage: its run renews the lease for ever.

    Airflow has moved on to try 2; try 2 used to wait for try 1's run to end (never, while its
    tasks run), and time out. Try 1's run stands down instead, and try 2 goes on from its journal.
    """
    work = batch(4)
    emulator.script("item", "never")
    first = Runner(work.trigger(1, max_active=2), "triggerer-1")
    wait_for(lambda: emulator.state.charged_tasks == 2, "try 1's creates")
    second = Runner(work.trigger(2, max_active=2), "triggerer-2")
    wait_for(lambda: bool(first.events), "try 1's run standing down", timeout=5 * LEASE_SECONDS)
    (stood_down,) = first.join()
    assert stood_down["status"] != DONE and "later try" in stood_down["message"], stood_down
    emulator.state.scripts.clear()
    emulator.state.release("item")
    (event,) = second.join()
    assert event["status"] == DONE and event["summary"]["counts"]["succeeded"] == 4, event
    # Try 1's two tasks were adopted by try 2, not paid again.
    assert emulator.state.charged_tasks == 4
    check_the_journal(work, 4)


def test_a_run_cancelled_while_its_claim_is_on_its_way_leaves_the_lease_free(
    batch: Any, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow cancels a trigger whose claim is in the lease's thread (a slow store, a busy lock).

    The thread goes on and takes the lease; nobody renews or releases it, so a run that waits for
    the batch (the triggerer Airflow moved it to) used to wait a whole lease period for nothing.
    """
    import threading

    from airflow_provider_mindvideo.batch.lease import BatchLease

    work = batch(1)
    claiming, go_on = threading.Event(), threading.Event()
    claim = BatchLease._claim

    def slow_claim(self: BatchLease) -> Any:
        claiming.set()
        go_on.wait()
        return claim(self)

    monkeypatch.setattr(BatchLease, "_claim", slow_claim)
    runner = Runner(work.trigger(max_active=1), "triggerer-1")
    assert claiming.wait(timeout=60)
    runner.cancel()
    assert runner.join() == []
    go_on.set()
    lease_file = Path(lease_path(work.result_path).removeprefix("file://"))
    wait_for(lambda: lease_file.exists() and '"released": true' in lease_file.read_text(), "the lease let go")
    assert emulator.state.charged_tasks == 0


def test_a_take_over_under_a_ledger_budget_leaves_nothing_reserved_and_counts_each_create_once(
    batch: Any, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The holder's loop stalls with creates reserved in the ledger; the other run takes over; it wakes."""
    import threading

    from airflow_provider_mindvideo.spend.engines import engine_for_url
    from airflow_provider_mindvideo.spend.ledger import Ledger
    from airflow_provider_mindvideo.spend.reading import budget_windows
    from tests.spend.helpers import know_price
    from tests.spend.test_operators_ledger import use_ledger, with_budgets
    from tests.test_batch_trigger import IMAGE_COST
    from tests.test_batch_twice import lease_record

    ledger = tmp_path / "spend.db"
    use_ledger(monkeypatch, ledger)
    # Its price known (a settled create told it): the items need not go alone until one ends.
    know_price(Ledger(engine_for_url(f"sqlite:///{ledger}")), actual=IMAGE_COST)
    limit = 5 * IMAGE_COST + IMAGE_COST / 2
    with_budgets(emulator, monkeypatch, {"account": {"day": limit}})
    work = batch(8)
    emulator.script("item", "never")
    first = Runner(work.trigger(max_active=3), "triggerer-1")
    wait_for(lambda: emulator.state.charged_tasks == 3, "the first run's creates")
    frozen, thaw = threading.Event(), threading.Event()

    def stall() -> None:
        frozen.set()
        thaw.wait()

    first.loop.call_soon_threadsafe(stall)
    assert frozen.wait(timeout=60)
    held_by_first = lease_record(work)["holder"]
    second = Runner(work.trigger(max_active=3), "triggerer-2")
    wait_for(lambda: lease_record(work)["holder"] != held_by_first, "the take-over")
    thaw.set()
    emulator.state.scripts.clear()
    emulator.state.release("item")
    events = first.join() + second.join()
    assert len(events) == 2 and events[0] == events[1] and events[0]["status"] == DONE
    assert emulator.state.charged_tasks == 5 and emulator.state.total_charged <= limit
    assert events[0]["summary"]["counts"]["over_budget"] == 3
    (window,) = budget_windows(engine_for_url(f"sqlite:///{ledger}"))
    assert window.spent == pytest.approx(emulator.state.total_charged) and window.reserved == 0
    check_the_journal(work, 8)


def test_regenerations_across_a_take_over_stay_within_max_cost_and_one_task_per_generation(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    """Try 1 fails three items; try 2 regenerates them, stalls, is taken over by its twin, and wakes."""
    import threading
    from collections import Counter

    from tests.test_batch_trigger import IMAGE_COST
    from tests.test_batch_twice import lease_record

    max_cost = 7 * IMAGE_COST + IMAGE_COST / 2  # 6 first creates, then room for one of three regenerations
    work = batch(6)
    for prompt in ("item 0", "item 1", "item 2"):
        emulator.script(prompt, "failed", times=1)
    Runner(work.trigger(1, max_active=3, max_cost=max_cost), "try-1").join()
    charged_once = emulator.state.charged_tasks
    emulator.script("item", "never")
    first = Runner(work.trigger(2, max_active=3, max_cost=max_cost), "triggerer-1")
    wait_for(lambda: emulator.state.charged_tasks > charged_once, "a regeneration")
    frozen, thaw = threading.Event(), threading.Event()

    def stall() -> None:
        frozen.set()
        thaw.wait()

    first.loop.call_soon_threadsafe(stall)
    assert frozen.wait(timeout=60)
    held_by_first = lease_record(work)["holder"]
    second = Runner(work.trigger(2, max_active=3, max_cost=max_cost), "triggerer-2")
    wait_for(lambda: lease_record(work)["holder"] != held_by_first, "the take-over")
    thaw.set()
    emulator.state.scripts.clear()
    emulator.state.release("item")
    events = first.join() + second.join()
    assert len(events) == 2 and events[0] == events[1] and events[0]["status"] == DONE, events
    assert emulator.state.total_charged <= max_cost + 1e-9
    per_item = Counter(task["prompt"] for task in emulator.state.snapshot()["tasks"])
    assert max(per_item.values()) <= 2, per_item
    check_the_journal(work, 6)


def test_a_batch_cancelled_while_it_holds_every_slot_of_the_loop_hands_them_to_the_other(
    emulator: MindVideoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_mindvideo.batch import sharing
    from tests.test_batch_sharing import _events, _trigger

    monkeypatch.setattr(sharing, "LOOP_ACTIVE", 2)
    emulator.script("hog", "never")
    hog = _trigger(tmp_path, "hog", 5, max_active=5)
    other = _trigger(tmp_path, "other", 3, max_active=3)

    async def scenario() -> list[dict[str, Any]]:
        hogging = asyncio.ensure_future(_events(hog))
        while emulator.state.charged_tasks < 2:  # both of the loop's slots are the hog's
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(_events(other))
        while sharing.loop_share().active.waiting == 0:
            await asyncio.sleep(0.01)
        hogging.cancel()
        await asyncio.gather(hogging, return_exceptions=True)
        events = await waiting
        share = sharing.loop_share()
        assert (share.active.held, share.requests.held, share.saves.held) == (0, 0, 0)
        return events

    (event,) = asyncio.run(scenario())
    assert event["status"] == DONE and event["summary"]["counts"]["succeeded"] == 3
    hog_lease = Path(lease_path(f"{tmp_path}/hog.jsonl"))
    assert '"released": true' in hog_lease.read_text()


@pytest.mark.parametrize(
    "left",
    [
        {"renewed_at": 1e12, "beat": 1},  # from the future: the wall clock never calls it old
        {"renewed_at": 0, "beat": 10**30},  # a huge heartbeat, from 1970
        {"renewed_at": None, "beat": None},  # no clock at all
        "this process",  # a pid reused: this very process, on this host, but not this run
    ],
)
def test_a_lease_left_by_a_gone_holder_is_taken_over_whatever_it_says(
    batch: Any, emulator: MindVideoEmulator, left: Any
) -> None:
    import json
    import os
    import socket

    work = batch(2)
    record: dict[str, Any] = {"holder": "gone", "try_number": 1, "owner": None, "released": False, "event": None}
    record.update({"host": socket.gethostname(), "pid": os.getpid()} if left == "this process" else left)
    Path(lease_path(work.result_path).removeprefix("file://")).write_text(json.dumps(record))
    (event,) = Runner(work.trigger(max_active=2), "triggerer-1").join()
    assert event["status"] == DONE and event["summary"]["counts"]["succeeded"] == 2
    assert emulator.state.charged_tasks == 2
    check_the_journal(work, 2)

"""One batch trigger running twice at once (two triggerers after a lost heartbeat, a trigger
re-assigned while the first still runs): it creates nothing twice, pays nothing twice, keeps one
journal, and both runs end with the same event.

Each run has its own thread and event loop, as two triggerers would; the emulator's books are
the oracle. Tests hold the remote tasks (outcome ``"never"``) and release them when the runs
are where the scenario wants them, so nothing depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from airflow_provider_mindvideo.batch.plan import PENDING, dump_work_list, entries_from_list, load_manifest, work_list
from airflow_provider_mindvideo.batch.run import _Batch
from airflow_provider_mindvideo.batch.trigger import DONE, MindVideoBatchTrigger
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from tests.test_batch_trigger import IMAGE_COST, Batch, Ti

# Long enough that no run under test loses a lease it renews (the renewals go every quarter of it).
LEASE_SECONDS = 6.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Until ``condition`` holds (a generous bound: it only turns a hang into a failure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Runner:
    """A trigger run in a thread of its own, with its own event loop: one triggerer."""

    #: Every runner a test started: one left running by a failed test is stopped (:func:`short_lease`),
    #: else it would go on creating and logging into the next tests of its process.
    started: ClassVar[list[Runner]] = []

    def __init__(self, trigger: MindVideoBatchTrigger, name: str) -> None:
        self.trigger = trigger
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        Runner.started.append(self)
        self.thread.start()

    def _main(self) -> None:
        async def run() -> None:
            async for event in self.trigger.run():
                self.events.append(event.payload)

        try:
            self.task = self.loop.create_task(run())
            self.loop.run_until_complete(self.task)
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.loop.close()

    def cancel(self) -> None:
        """What Airflow does to a trigger its triggerer no longer owns (or whose task moved on)."""
        wait_for(lambda: self.task is not None, "the runner's task")
        assert self.task is not None
        self.loop.call_soon_threadsafe(self.task.cancel)

    def stop(self) -> None:
        """Cancel the run if it still goes, and wait for its thread (a test's cleanup)."""
        wait_for(lambda: self.task is not None or not self.thread.is_alive(), "the runner's task")
        if self.thread.is_alive() and self.task is not None:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: it ended by itself
                self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=120)

    def join(self) -> list[dict[str, Any]]:
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the run did not end"
        if self.error is not None and not isinstance(self.error, asyncio.CancelledError):
            raise self.error
        return self.events


@pytest.fixture(autouse=True)
def short_lease(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The lease these tests run under; afterwards, every runner the test left running is stopped."""
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__BATCH_LEASE_SECONDS", str(LEASE_SECONDS))
    yield
    while Runner.started:
        Runner.started.pop().stop()


def make_batch(emulator: MindVideoEmulator, folder: Path, count: int) -> Batch:
    """``count`` items ("item 0", "item 1", ...) in a work list in ``folder``."""
    prompts = [f"item {i}" for i in range(count)]
    items = work_list(entries_from_list([{"prompt": p} for p in prompts]), "gpt-image-2", Ti())
    (folder / "work.jsonl").write_text(dump_work_list(items))
    return Batch(folder, prompts, emulator)


@pytest.fixture
def batch(emulator: MindVideoEmulator, tmp_path: Path) -> Callable[[int], Batch]:
    return lambda count: make_batch(emulator, tmp_path, count)


def manifest_rows(work: Batch) -> list[Any]:
    return load_manifest((work.folder / "manifest.jsonl").read_text())


def check_the_journal(work: Batch, items: int) -> None:
    rows = manifest_rows(work)
    assert [row.position for row in rows] == list(range(items))
    assert not [row for row in rows if row.status == PENDING]
    assert not (work.folder / "manifest.intents").exists()


@pytest.mark.parametrize("start", ["together", "staggered"])
def test_two_runs_at_once_create_and_pay_once_and_end_with_the_same_event(
    batch: Any, emulator: MindVideoEmulator, start: str
) -> None:
    work = batch(6)
    emulator.script("item", "never")
    trigger = work.trigger(max_active=3)
    first = Runner(trigger, "triggerer-1")
    if start == "staggered":
        wait_for(lambda: emulator.state.charged_tasks == 3, "the first run's creates")
    second = Runner(work.trigger(max_active=3), "triggerer-2")
    wait_for(lambda: emulator.state.charged_tasks >= 3, "creates")
    manifest = work.folder / "manifest.jsonl"
    emulator.state.release("item")
    emulator.state.scripts.clear()
    wait_for(lambda: emulator.state.charged_tasks == 6, "every item's create")
    emulator.state.release("item")
    events = first.join() + second.join()
    assert emulator.state.charged_tasks == 6
    # The second run stood down: it neither replayed the creates nor polled the tasks.
    assert emulator.state.requests["create"] == 6, emulator.state.requests
    assert len(events) == 2 and events[0] == events[1], events
    assert events[0]["status"] == DONE and events[0]["summary"]["counts"]["succeeded"] == 6
    check_the_journal(work, 6)
    assert manifest.exists()


def test_one_run_alone_writes_the_manifest_and_not_after_the_first_event(
    batch: Any, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = batch(4)
    writers: set[int] = set()
    write = _Batch._write_manifest

    async def recorded(self: _Batch) -> None:
        await write(self)
        writers.add(id(asyncio.get_running_loop()))

    monkeypatch.setattr(_Batch, "_write_manifest", recorded)
    emulator.script("item", "never")
    first = Runner(work.trigger(max_active=4, progress_interval=0.05), "triggerer-1")
    wait_for(lambda: emulator.state.charged_tasks == 4, "the first run's creates")
    second = Runner(work.trigger(max_active=4, progress_interval=0.05), "triggerer-2")
    emulator.state.release("item")
    wait_for(lambda: bool(first.events) or bool(second.events), "the first event")
    manifest = work.folder / "manifest.jsonl"
    written = manifest.stat().st_ino, manifest.read_bytes()
    events = first.join() + second.join()
    assert len(writers) == 1, "both runs wrote the manifest (checkpoints, or the final one)"
    # The worker reads the manifest once the event resumed its task: nobody writes it after that.
    assert (manifest.stat().st_ino, manifest.read_bytes()) == written
    assert events[0] == events[1]
    check_the_journal(work, 4)


def test_a_run_cancelled_while_it_holds_the_batch_hands_it_to_the_other(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    """The triggerer that lost the trigger notices and cancels it: the other run goes on from its journal."""
    work = batch(6)
    emulator.script("item", "never")
    first = Runner(work.trigger(max_active=3), "triggerer-1")
    wait_for(lambda: emulator.state.charged_tasks == 3, "the first run's creates")
    second = Runner(work.trigger(max_active=3), "triggerer-2")
    first.cancel()
    assert first.join() == []
    emulator.state.scripts.clear()
    emulator.state.release("item")
    events = second.join()
    assert emulator.state.charged_tasks == 6
    assert events[0]["status"] == DONE and events[0]["summary"]["counts"]["succeeded"] == 6
    check_the_journal(work, 6)


def test_failed_items_regenerate_once_and_the_ceiling_holds_when_a_retry_runs_twice(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    max_cost = 7 * IMAGE_COST + IMAGE_COST / 2  # 6 first tries, then room for one of the two regenerations

    def two_tries(work: Batch, *, twice: bool) -> tuple[int, float, list[dict[str, Any]]]:
        emulator.state.reset()
        emulator.script("item 1", "failed", times=1)
        emulator.script("item 2", "failed", times=1)
        Runner(work.trigger(1, max_active=2, max_cost=max_cost), "triggerer-1").join()
        charged_once = emulator.state.charged_tasks
        emulator.script("item", "never")
        runners = [
            Runner(work.trigger(2, max_active=2, max_cost=max_cost), f"triggerer-{n}") for n in (1, 2)[: 1 + twice]
        ]
        wait_for(lambda: emulator.state.charged_tasks > charged_once, "the retry's first create")
        emulator.state.release("item")
        emulator.state.scripts.clear()
        emulator.state.release("item")
        events = [event for runner in runners for event in runner.join()]
        return emulator.state.charged_tasks, emulator.state.total_charged, events

    alone = batch(6)
    charged, spent, (event,) = two_tries(alone, twice=False)
    twin = Batch(alone.folder / "twice", alone.prompts, emulator)
    twin.folder.mkdir()
    (twin.folder / "work.jsonl").write_bytes((alone.folder / "work.jsonl").read_bytes())
    charged_twice, spent_twice, events = two_tries(twin, twice=True)
    assert charged_twice <= charged and spent_twice <= spent + 1e-9
    assert spent_twice <= max_cost
    assert len(events) == 2 and events[0] == events[1]
    assert events[0]["summary"]["counts"] == event["summary"]["counts"]
    per_item = Counter(task["prompt"] for task in emulator.state.snapshot()["tasks"])
    assert max(per_item.values()) <= 2  # one task a try at most
    check_the_journal(twin, 6)


def test_the_follower_takes_over_a_lease_no_one_renews(batch: Any, emulator: MindVideoEmulator) -> None:
    """A holder that died without a word (kill -9, a frozen process) leaves a lease that ages out."""
    work = batch(3)
    from airflow_provider_mindvideo.batch import lease

    holder = lease.BatchLease(work.result_path, None, try_number=1)
    assert holder._claim() == ("held", None)  # and never renewed: the holder is gone
    holder.close()
    events = Runner(work.trigger(max_active=3), "triggerer-2").join()
    assert events[0]["status"] == DONE and events[0]["summary"]["counts"]["succeeded"] == 3
    assert emulator.state.charged_tasks == 3
    check_the_journal(work, 3)


def test_a_holder_whose_loop_stalls_past_its_lease_is_taken_over_and_stands_down_when_it_wakes(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    """A triggerer's loop held by someone else's blocking code: no heartbeat, no renewal, then it runs on."""
    work = batch(6)
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
    assert emulator.state.charged_tasks == 6
    # The first run's 3 creates, the second's 3 replays and 3 creates: nothing from the first once it woke.
    assert emulator.state.requests["create"] == 9, emulator.state.requests
    assert len(events) == 2 and events[0] == events[1] and events[0]["status"] == DONE
    check_the_journal(work, 6)


def lease_record(work: Batch) -> dict[str, Any]:
    from airflow_provider_mindvideo.batch.lease import lease_path

    return dict(json.loads(Path(lease_path(work.result_path).removeprefix("file://")).read_text()))


def test_two_runs_under_a_ledger_budget_count_each_create_once(
    batch: Any, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow_provider_mindvideo.spend.engines import engine_for_url
    from airflow_provider_mindvideo.spend.ledger import Ledger
    from airflow_provider_mindvideo.spend.reading import budget_windows
    from tests.spend.helpers import know_price
    from tests.spend.test_operators_ledger import use_ledger, with_budgets

    ledger = tmp_path / "spend.db"
    use_ledger(monkeypatch, ledger)
    # Its price known (a settled create told it): the items need not go alone until one ends.
    know_price(Ledger(engine_for_url(f"sqlite:///{ledger}")), actual=IMAGE_COST)
    limit = 4 * IMAGE_COST + IMAGE_COST / 2
    with_budgets(emulator, monkeypatch, {"account": {"day": limit}})
    work = batch(8)
    emulator.script("item", "never")
    first = Runner(work.trigger(max_active=2), "triggerer-1")
    second = Runner(work.trigger(max_active=2), "triggerer-2")
    wait_for(lambda: emulator.state.charged_tasks >= 2, "the first creates")
    emulator.state.scripts.clear()
    emulator.state.release("item")
    events = first.join() + second.join()
    assert emulator.state.charged_tasks == 4 and emulator.state.total_charged <= limit
    assert events[0] == events[1] and events[0]["summary"]["counts"]["over_budget"] == 4
    (window,) = budget_windows(engine_for_url(f"sqlite:///{ledger}"))
    assert window.spent == pytest.approx(emulator.state.total_charged) and window.reserved == 0
    check_the_journal(work, 8)

"""MindVideoBatchTrigger, run as the triggerer runs it, against the emulator: pays once per item, whatever happens.

Every test checks the invariant with the emulator's own counters: charges per item per try
<= 1, total charges <= items * max_generations, and spend <= max_cost when a ceiling is set.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.module_loading import import_string

from airflow_provider_mindvideo.batch.plan import (
    FAILED,
    OVER_BUDGET,
    SUCCEEDED,
    ItemResult,
    dump_work_list,
    entries_from_list,
    load_manifest,
    work_list,
)
from airflow_provider_mindvideo.batch.trigger import DONE, ERROR_EVENT, MindVideoBatchTrigger
from airflow_provider_mindvideo.emulator import MindVideoEmulator

IMAGE_COST = 0.0135


@dataclass
class Ti:
    dag_id: str = "batch_dag"
    task_id: str = "generate"
    run_id: str = "manual__trigger"
    map_index: int = -1


@dataclass
class Batch:
    """A work list on disk and how to run tries of it."""

    folder: Path
    prompts: list[str]
    emulator: MindVideoEmulator

    @property
    def result_path(self) -> str:
        return f"file://{self.folder}/manifest.jsonl"

    def trigger(self, try_number: int = 1, **options: Any) -> MindVideoBatchTrigger:
        settings: dict[str, Any] = {
            "try_number": try_number,
            "max_generations": 3,
            "max_active": 4,
            "poll_interval": 0.05,
            "max_poll_interval": 0.1,
            "progress_interval": 0.2,
            **options,
        }
        return MindVideoBatchTrigger(f"file://{self.folder}/work.jsonl", self.result_path, **settings)

    def run(self, try_number: int = 1, **options: Any) -> Run:
        before = Counter(task["prompt"] for task in self.emulator.state.snapshot()["tasks"])
        creates = self.emulator.state.requests["create"]
        events = asyncio.run(_events(self.trigger(try_number, **options)))
        after = Counter(task["prompt"] for task in self.emulator.state.snapshot()["tasks"])
        assert len(events) == 1, events
        rows = load_manifest((self.folder / "manifest.jsonl").read_text()) if events[0]["status"] == DONE else []
        run = Run(events[0], rows, after - before, self.emulator.state.requests["create"] - creates)
        assert all(charges <= 1 for charges in run.charges.values()), f"an item paid twice in one try: {run.charges}"
        return run


@dataclass
class Run:
    event: dict[str, Any]
    rows: list[ItemResult]
    #: New charges of this try, by prompt (one prompt per item).
    charges: Counter[str]
    create_requests: int

    def statuses(self) -> Counter[str]:
        return Counter(row.status for row in self.rows)


async def _events(trigger: MindVideoBatchTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


@pytest.fixture
def batch(emulator: MindVideoEmulator, tmp_path: Path) -> Any:
    def make(count: int, *, prefix: str = "item", model: str = "gpt-image-2") -> Batch:
        prompts = [f"{prefix} {i}" for i in range(count)]
        items = work_list(entries_from_list([{"prompt": p} for p in prompts]), model, Ti())
        (tmp_path / "work.jsonl").write_text(dump_work_list(items))
        return Batch(tmp_path, prompts, emulator)

    return make


def test_kwargs_round_trip_and_hold_no_items(batch: Any) -> None:
    trigger = batch(3).trigger(max_cost=1.5)
    classpath, kwargs = trigger.serialize()
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)
    assert "item 0" not in json.dumps(kwargs)


def test_every_item_is_created_once_waited_for_and_written_to_the_manifest(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    work = batch(10)
    run = work.run()
    assert run.event["status"] == DONE
    summary = run.event["summary"]
    assert summary["counts"][SUCCEEDED] == 10 and summary["failed"] == 0
    assert summary["cost_estimate"] == summary["cost_actual"] == pytest.approx(10 * IMAGE_COST)
    assert summary["manifest"] == work.result_path
    assert [row.line for row in run.rows] == list(range(1, 11))
    assert all(row.output_urls and row.task_id and row.key_generation == 0 for row in run.rows)
    assert emulator.state.charged_tasks == 10
    assert emulator.state.max_in_flight <= 4 + 1  # max_active, and the control API's own look
    assert all(len(row.tasks) == 1 and row.tasks[0]["task_id"] == row.task_id for row in run.rows)
    assert not (work.folder / "manifest.intents").exists()  # the manifest records every create now


def test_a_429_storm_pauses_the_batch_and_still_pays_once_per_item(batch: Any, emulator: MindVideoEmulator) -> None:
    emulator.state.config.rate_limit = 4  # requests a second: 12 items need many more
    try:
        run = batch(12).run(max_active=12)
    finally:
        emulator.state.config.rate_limit = None
    assert emulator.state.rate_limited > 0, "the storm never came"
    assert run.statuses() == {SUCCEEDED: 12}
    assert emulator.state.charged_tasks == 12
    assert run.create_requests >= 12


def test_the_ceiling_reached_halfway_creates_nothing_more_and_reports_the_rest(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    max_cost = 5 * IMAGE_COST + IMAGE_COST / 2
    run = batch(10).run(max_cost=max_cost)
    assert run.statuses() == {SUCCEEDED: 5, OVER_BUDGET: 5}
    assert emulator.state.charged_tasks == 5
    assert emulator.state.total_charged <= max_cost
    refused = [row for row in run.rows if row.status == OVER_BUDGET]
    assert all(row.task_id is None and not row.retryable for row in refused)
    assert "max_cost = 0.07425" in (refused[0].error or "")
    assert "predicted to cost 0.0135" in (refused[0].error or "")
    assert run.event["summary"]["cost_estimate"] == pytest.approx(5 * IMAGE_COST)


def test_failed_items_and_only_those_are_generated_again_on_retry_up_to_max_generations(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    work = batch(6)
    emulator.script("item 1", "failed", times=1)  # fails once, then succeeds
    emulator.script("item 4", "failed")  # always fails
    first = work.run(try_number=1)
    assert first.statuses() == {SUCCEEDED: 4, FAILED: 2}
    assert all(row.retryable for row in first.rows if row.status == FAILED)
    assert sum(first.charges.values()) == 6

    second = work.run(try_number=2)
    assert second.charges == Counter({"item 1": 1, "item 4": 1})
    assert [row.key_generation for row in second.rows] == [0, 1, 0, 0, 1, 0]
    assert second.rows[1].status == SUCCEEDED and second.rows[4].status == FAILED

    third = work.run(try_number=3)
    assert third.charges == Counter({"item 4": 1})
    assert third.rows[4].status == FAILED and not third.rows[4].retryable
    assert "last of max_generations=3" in (third.rows[4].error or "")

    fourth = work.run(try_number=4)
    assert fourth.charges == Counter()
    assert fourth.rows[4].status == FAILED and not fourth.rows[4].retryable
    assert emulator.state.charged_tasks == 6 + 2 + 1 <= 6 * 3


def test_a_retry_or_clear_after_success_pays_nothing(batch: Any, emulator: MindVideoEmulator) -> None:
    work = batch(5)
    assert work.run(try_number=1).statuses() == {SUCCEEDED: 5}
    for try_number in (2, 3):
        again = work.run(try_number=try_number)
        assert again.statuses() == {SUCCEEDED: 5}
        assert again.charges == Counter()
        assert again.create_requests == 5  # one replay per item
    assert emulator.state.charged_tasks == 5


def test_a_retry_counts_what_earlier_tries_spent_against_max_cost(batch: Any, emulator: MindVideoEmulator) -> None:
    work = batch(6)
    emulator.script("item", "failed", times=6)  # every first generation fails
    max_cost = 9 * IMAGE_COST
    assert work.run(try_number=1, max_cost=max_cost).statuses() == {FAILED: 6}
    second = work.run(try_number=2, max_cost=max_cost)
    # 6 spent by try 1 (replayed, counted), so only 3 of the 6 second generations fit.
    assert sum(second.charges.values()) == 3
    assert second.statuses() == {SUCCEEDED: 3, OVER_BUDGET: 3}
    assert emulator.state.total_charged <= max_cost
    assert second.event["summary"]["cost_estimate"] == pytest.approx(9 * IMAGE_COST)


def test_a_restarted_trigger_replays_each_item_at_most_once_and_charges_nothing(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    work = batch(8)
    emulator.script("item", "succeeded", processing_seconds=60)  # still running when the triggerer dies

    async def run_until_all_created() -> None:
        runner = asyncio.ensure_future(_events(work.trigger(max_active=8)))
        while emulator.state.charged_tasks < 8:
            await asyncio.sleep(0.02)
        runner.cancel()  # the triggerer is stopped
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(run_until_all_created())
    creates = emulator.state.requests["create"]
    for task in emulator.state.tasks.values():
        task.processing_seconds = 0.1  # they finish while no triggerer watches
    rerun = work.run()
    assert rerun.statuses() == {SUCCEEDED: 8}
    assert rerun.charges == Counter()
    assert emulator.state.requests["create"] - creates == 8  # one replay per item
    assert emulator.state.charged_tasks == 8


def test_a_rejected_key_stops_the_whole_batch_at_once(
    batch: Any, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "mindvideo", "host": emulator.base_url, "password": "mv_live_wrong"}
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps(conn))
    run = batch(50).run()
    assert run.event["status"] == ERROR_EVENT
    assert run.event["error_type"] == "AuthenticationError"
    assert "mv_live_wrong" not in json.dumps(run.event)
    assert emulator.state.requests["create"] <= 4  # the workers already on their way; no more
    assert emulator.state.charged_tasks == 0


def test_items_not_finished_by_the_deadline_time_out_and_can_be_waited_for_again(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    import time

    work = batch(3)
    # Held until released: however late a busy machine takes its last look, none has finished.
    emulator.script("item", "never", times=3)
    first = work.run(deadline=time.time() + 0.5)
    assert Counter(row.status for row in first.rows) == {"timed_out": 3}
    assert all(row.retryable and row.task_id for row in first.rows)
    assert emulator.state.release("item") == 3
    second = work.run(try_number=2)
    assert second.statuses() == {SUCCEEDED: 3}
    assert second.charges == Counter()


def test_progress_is_a_line_per_interval_not_per_poll(
    batch: Any, emulator: MindVideoEmulator, debug_logs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator's clock moves 0.04 s per poll: 0.65 s of queue and work take 16 polls or more,
    # however slowly a busy machine sends them.
    now = [1_000.0]
    monkeypatch.setattr(emulator.state, "clock", lambda: now[0])
    record = emulator.state.record_request

    def stepping(route: str, client: tuple[str, int] | None) -> None:
        now[0] += 0.04 if route == "get" else 0.0
        record(route, client)

    monkeypatch.setattr(emulator.state, "record_request", stepping)
    emulator.script("item", "succeeded", queued_seconds=0.05, processing_seconds=0.6)
    batch(3).run(progress_interval=3600, poll_interval=0.02, max_poll_interval=0.05)
    assert emulator.state.requests["get"] >= 3 * 5  # many polls...
    progress = [log["event"] for log in debug_logs if str(log.get("event", "")).startswith("MindVideo batch: 3/3")]
    assert progress == [  # ...one line: the last (no interval passed)
        progress[0]
    ]
    assert "3/3 done (3 succeeded, 0 failed), 0 in flight, 0 waiting; cost estimate so far 0.0405" in progress[0]
    polls_logged = [log for log in debug_logs if "MindVideo batch:" in str(log.get("event", ""))]
    assert len(polls_logged) == 2  # the start line and the last progress line


def test_a_task_this_try_created_that_fails_at_once_ends_the_item_for_this_try(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    """Try 3 is the first to reach these items (earlier tries died before creating): generation 0 is
    new, and it is refused at once. The walk must stop there, not create generation 1 in the same try."""
    work = batch(2)
    emulator.script("item", "failed", queued_seconds=0, processing_seconds=0)
    run = work.run(try_number=3)
    assert run.charges == Counter({"item 0": 1, "item 1": 1})
    assert all(row.status == FAILED and row.retryable and row.key_generation == 0 for row in run.rows)
    assert "the next try generates again" in (run.rows[0].error or "")


def test_a_429_met_by_one_request_pauses_every_request_of_the_batch() -> None:
    import random
    import time

    from airflow_provider_mindvideo.batch.run import _BatchRetryPolicy, _Pause
    from airflow_provider_mindvideo.client.errors import RateLimitedError, ServerError

    pause = _Pause()
    policy = _BatchRetryPolicy(max_retries=3, on_rate_limited=pause.pause)
    limited = RateLimitedError("Too many requests", http_status=429)
    limited.retry_after = 2.5
    before = time.monotonic()
    assert policy.retry_delay(1, limited, 0.0, random.Random(1)) == 2.5  # this request waits as asked...
    assert pause.until - before >= 2.5  # ...and so does every other request of the batch
    policy.retry_delay(1, ServerError("busy", http_status=503), 0.0, random.Random(1))
    assert pause.pauses == 1  # a 5xx is that request's business alone


def test_a_restarted_trigger_counts_the_creates_the_dead_one_sent_against_max_cost(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    """Try 2 creates second generations in the order replays come back; a restart sees another order.

    The dead trigger sent creates for the items whose replays came back first; the restarted
    one must count those (written down before sending) before creating for any other item.
    """
    work = batch(4)
    max_cost = 6 * IMAGE_COST + IMAGE_COST / 3  # try 1's four, and two more
    emulator.script("item", "failed", queued_seconds=0, processing_seconds=0, times=4)
    assert work.run(try_number=1, max_active=4, max_cost=max_cost).statuses() == {FAILED: 4}
    emulator.script("item", "succeeded", processing_seconds=60)  # the second generations run long
    emulator.add_fault("delay", route="create", times=2, seconds=1.0)  # two replays come back late

    async def run_until_two_more_are_created() -> None:
        runner = asyncio.ensure_future(_events(work.trigger(try_number=2, max_active=4, max_cost=max_cost)))
        while emulator.state.charged_tasks < 6:
            await asyncio.sleep(0.01)
        runner.cancel()  # the triggerer dies
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(run_until_two_more_are_created())
    for task in emulator.state.tasks.values():
        task.processing_seconds = min(task.processing_seconds, 0.1)
    rerun = work.run(try_number=2, max_active=4, max_cost=max_cost)
    assert emulator.state.total_charged <= max_cost, f"{emulator.state.charged_tasks} tasks charged"
    assert rerun.charges == Counter()
    assert rerun.statuses() == {SUCCEEDED: 2, OVER_BUDGET: 2}


def test_a_restarted_trigger_does_not_take_its_own_try_s_failed_task_for_an_earlier_one(
    batch: Any, emulator: MindVideoEmulator
) -> None:
    """Try 3 (earlier tries died before creating) creates generation 0, which fails at once; the
    triggerer dies. Its replay now answers 200 like an earlier try's task: the restarted trigger
    must still know it was this try's one create, and not create generation 1 too."""
    work = batch(2)
    emulator.script("item 0", "failed", queued_seconds=0, processing_seconds=0)
    emulator.script("item 1", "succeeded", processing_seconds=60)  # keeps the first run busy

    async def run_until_both_are_created() -> None:
        runner = asyncio.ensure_future(_events(work.trigger(try_number=3, max_active=2)))
        while emulator.state.charged_tasks < 2:
            await asyncio.sleep(0.01)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(run_until_both_are_created())
    for task in emulator.state.tasks.values():
        task.processing_seconds = min(task.processing_seconds, 0.1)
    rerun = work.run(try_number=3)
    assert rerun.charges == Counter()
    assert rerun.rows[0].status == FAILED and rerun.rows[0].retryable and rerun.rows[0].key_generation == 0
    assert emulator.state.charged_tasks == 2


def test_a_stopped_batch_names_the_remote_tasks_that_keep_running(
    batch: Any, emulator: MindVideoEmulator, debug_logs: list[dict[str, Any]]
) -> None:
    work = batch(3)
    emulator.script("item", "succeeded", processing_seconds=60)
    trigger = work.trigger(max_active=3)

    async def stop_midway() -> None:
        runner = asyncio.ensure_future(_events(trigger))
        # Until the trigger holds all three create answers (charged by the server is not enough:
        # on a busy machine an answer may not have reached the trigger yet).
        while sum(bool(row.task_id) for row in getattr(getattr(trigger, "_batch", None), "rows", [])) < 3:
            await asyncio.sleep(0.01)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await trigger.on_kill()

    asyncio.run(stop_midway())
    warnings = [log["event"] for log in debug_logs if log.get("log_level") == "warning"]
    assert any(all(task_id in w for task_id in emulator.state.tasks) and "keep running" in w for w in warnings), (
        warnings
    )


def _write_work(folder: Path, prompts: list[str]) -> None:
    items = work_list(entries_from_list([{"prompt": p} for p in prompts]), "gpt-image-2", Ti())
    (folder / "work.jsonl").write_text(dump_work_list(items))


def test_what_earlier_tries_spent_counts_even_when_the_inputs_shifted(batch: Any, emulator: MindVideoEmulator) -> None:
    """A line added at the top between tries changes every item's key: try 1's tasks are no current
    item's, yet they were paid for. They count, and their record survives the next manifest."""
    work = batch(10)
    max_cost = 5 * IMAGE_COST + IMAGE_COST / 2
    assert work.run(try_number=1, max_active=1, max_cost=max_cost).statuses() == {SUCCEEDED: 5, OVER_BUDGET: 5}
    _write_work(work.folder, ["a new first line", *work.prompts])
    second = work.run(try_number=2, max_active=1, max_cost=max_cost)
    assert second.charges == Counter()
    assert second.event["summary"]["cost_estimate"] == pytest.approx(5 * IMAGE_COST)
    _write_work(work.folder, ["another first line", "a new first line", *work.prompts])
    third = work.run(try_number=3, max_active=1, max_cost=max_cost)  # try 2's manifest must remember try 1
    assert third.charges == Counter()
    assert emulator.state.total_charged <= max_cost


def test_a_price_above_the_catalogue_s_does_not_pass_the_ceiling_with_many_in_flight(
    batch: Any, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import airflow_provider_mindvideo.emulator.state as emulated
    from airflow_provider_mindvideo.client.catalog import known_models

    pricier = {
        slug: dataclasses.replace(spec, cost_estimate=spec.cost_estimate * 3) for slug, spec in known_models().items()
    }
    monkeypatch.setattr(emulated, "known_models", lambda: pricier)  # the API's prices, not the provider's catalogue
    max_cost = 10 * IMAGE_COST
    run = batch(20).run(max_active=10, max_cost=max_cost)
    assert emulator.state.total_charged <= max_cost + 1e-9, f"{emulator.state.charged_tasks} tasks charged"
    assert run.statuses()[SUCCEEDED] == 3  # 3 x 0.0405 fit in 0.135; the first answer told the price


def test_an_item_of_unknown_price_in_flight_makes_the_others_wait_not_fail(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    emulator.state.config.extra_models = {"veo4-preview": "video"}
    emulator.add_fault("delay", route="create", seconds=0.5, times=1)  # the new model's answer comes late
    inputs = [{"model": "veo4-preview", "prompt": "a new model's clip"}] + [{"prompt": f"cat {i}"} for i in range(5)]
    items = work_list(entries_from_list(inputs), "gpt-image-2", Ti(), allow_unknown_model=True)
    (tmp_path / "work.jsonl").write_text(dump_work_list(items))
    try:
        run = Batch(tmp_path, [], emulator).run(max_active=6, max_cost=10.0, allow_unknown_model=True)
    finally:
        emulator.state.config.extra_models = {}
    assert run.statuses() == {SUCCEEDED: 6}


@pytest.mark.parametrize("left", [1.5, 0.2])
@pytest.mark.parametrize("route", ["get", "create"])
def test_a_long_retry_after_does_not_keep_the_batch_past_its_timeout(
    batch: Any, emulator: MindVideoEmulator, route: str, left: float
) -> None:
    import time

    work = batch(2)
    emulator.script("item", "succeeded", processing_seconds=0.5)
    # Honoured past the timeout, this Retry-After would hang the test until pytest-timeout fails
    # it: a run that ends is the proof (no wall-clock bound, which a busy machine stretches).
    emulator.add_fault("status", route=route, status=429, retry_after="36000", times=1)
    # Whether the 429 comes back before the deadline or after it (0.2 s: often after, on a busy
    # machine always) must not change the outcome: both are the timeout's doing.
    run = work.run(deadline=time.time() + left)
    assert run.event["status"] == DONE and len(run.rows) == 2
    assert all(row.status in (SUCCEEDED, "timed_out") for row in run.rows), [(r.status, r.error) for r in run.rows]
    assert not (work.folder / "manifest.intents").exists()


def _stored(folder: Path) -> dict[str, tuple[int, int]]:
    """Each stored file's identity and last write: a file written again gets a new inode (an atomic link)."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in folder.iterdir()}


def test_outputs_are_saved_as_items_finish_while_the_others_generate(
    batch: Any, emulator: MindVideoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_mindvideo.batch import saving

    creates_at_first_save: list[int] = []
    save = saving.save_item_outputs

    def noted(*args: Any, **kwargs: Any) -> Any:
        creates_at_first_save.append(emulator.state.requests["create"])
        return save(*args, **kwargs)

    monkeypatch.setattr(saving, "save_item_outputs", noted)
    media = tmp_path / "media"
    work = batch(6)
    run = work.run(max_active=2, download_to=f"file://{media}", download_allow_private_urls=True)
    assert run.statuses() == {SUCCEEDED: 6}
    # Two items in flight at most: the first save starts before the last items are even created.
    assert creates_at_first_save and creates_at_first_save[0] < 6
    assert emulator.state.requests["files"] == 6
    assert all(len(row.files) == 1 and row.files[0]["written"] for row in run.rows)
    assert sorted(path.name for path in media.iterdir()) == sorted(
        row.files[0]["path"].rsplit("/", 1)[-1] for row in run.rows
    )


def test_a_triggerer_killed_mid_save_keeps_its_files_and_saves_nothing_again(
    batch: Any, emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    saving = {"download_to": f"file://{media}", "download_allow_private_urls": True, "max_active": 8}
    work = batch(8)
    # Three downloads go through; the other five hang a while: the triggerer dies meanwhile.
    emulator.add_fault("delay", route="files", seconds=1.5, after=3, times=5)
    trigger = work.trigger(**saving)

    async def run_until_three_recorded() -> None:
        runner = asyncio.ensure_future(_events(trigger))
        manifest = work.folder / "manifest.jsonl"
        while not (manifest.exists() and sum(bool(r.files) for r in load_manifest(manifest.read_text())) >= 3):
            await asyncio.sleep(0.02)
        runner.cancel()  # the triggerer is stopped
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(run_until_three_recorded())
    # A dead triggerer's threads die with it; in this process they run on: let them end, as if
    # the files being saved had made it just before the end (stored, in no manifest yet).
    trigger._batch.saver.pool.shutdown(wait=True)
    recorded = {row.position for row in load_manifest((work.folder / "manifest.jsonl").read_text()) if row.files}
    before = _stored(media)
    assert len(recorded) >= 3 and len(before) >= len(recorded)
    downloads = emulator.state.requests["files"]

    rerun = work.run(**saving)
    assert rerun.statuses() == {SUCCEEDED: 8}
    assert rerun.charges == Counter()
    after = _stored(media)
    assert len(after) == 8 and not any(name.endswith(".partial") for name in after)
    assert {name: after[name] for name in before} == before  # nothing stored was written again
    # Items the checkpoint recorded are not even downloaded again; the others are, and a file
    # already there with the same content is kept (compared, not rewritten).
    assert emulator.state.requests["files"] - downloads == 8 - len(recorded)
    for row in rerun.rows:
        name = row.files[0]["path"].rsplit("/", 1)[-1]
        assert row.files[0]["written"] is (name not in before)

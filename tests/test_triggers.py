"""MindVideoTaskTrigger driven the way the triggerer drives it, against the emulator."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import time
from typing import Any

import pytest
from airflow.sdk.module_loading import import_string

from airflow_provider_mindvideo.client.durations import RecentDurations
from airflow_provider_mindvideo.client.polling import FirstCheckSlots
from airflow_provider_mindvideo.client.settings import ClientSettings, RecentSettings
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.triggers import SETTINGS_REUSE_SECONDS, MindVideoTaskTrigger


def events(trigger: MindVideoTaskTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def submit(prompt: str = "a green frog") -> str:
    with MindVideoHook() as hook:
        return hook.create_task("gpt-image-2", {"prompt": prompt}).task_id


@pytest.fixture
def no_hook_retries(emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let transient errors reach the trigger at once, instead of being retried by the hook."""
    conn = {
        "conn_type": "mindvideo",
        "host": emulator.base_url,
        "password": emulator.api_key,
        "extra": {"max_retries": 0},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps(conn))


@pytest.fixture
def connection_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The connection ids hooks look up (through Airflow, as before), in order."""
    reads: list[str] = []
    real = MindVideoHook.aget_connection

    async def counted(conn_id: str) -> Any:
        reads.append(conn_id)
        return await real(conn_id)

    monkeypatch.setattr(MindVideoHook, "aget_connection", staticmethod(counted))
    return reads


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The trigger's sleeps, recorded and shortened (the emulator's clock still runs)."""
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def short_sleep(seconds: float) -> None:
        recorded.append(seconds)
        await real_sleep(0.02)

    monkeypatch.setattr("airflow_provider_mindvideo.triggers.sleep", short_sleep)
    return recorded


@pytest.fixture
def task_clock(emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The trigger's sleeps, recorded; each moves the emulator's clock on by one step instead.

    A task then progresses by the trigger's polls, not by wall time: what a poll sees does not
    depend on how quickly a busy machine ran the previous one.
    """
    now = [1_000.0]
    monkeypatch.setattr(emulator.state, "clock", lambda: now[0])
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def step(seconds: float) -> None:
        recorded.append(seconds)
        now[0] += TASK_CLOCK_STEP
        await real_sleep(0)

    monkeypatch.setattr("airflow_provider_mindvideo.triggers.sleep", step)
    return recorded


TASK_CLOCK_STEP = 0.4  # emulator seconds per poll of the trigger (task_clock)


def test_serialize_round_trip_holds_no_secret(emulator: MindVideoEmulator) -> None:
    trigger = MindVideoTaskTrigger("task_1", "mindvideo_default", poll_interval=2, max_poll_interval=30, deadline=1e10)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_mindvideo.triggers.MindVideoTaskTrigger"
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)
    stored = json.dumps(kwargs)  # what the metadata database keeps
    assert emulator.api_key not in stored
    assert set(kwargs) == {
        "mindvideo_task_id",
        "mindvideo_conn_id",
        "poll_interval",
        "max_poll_interval",
        "started_at",
        "deadline",
    }


@pytest.mark.parametrize(
    ("outcome", "status", "message"),
    [
        ("succeeded", "success", "succeeded with 1 output"),
        ("failed", "failed", "failed: boom"),
        ("cancelled", "cancelled", "cancelled: boom"),
    ],
)
def test_one_event_per_terminal_status(
    emulator: MindVideoEmulator, waits: list[float], outcome: str, status: str, message: str
) -> None:
    emulator.script("frog", outcome, error="boom")
    task_id = submit()
    (event,) = events(MindVideoTaskTrigger(task_id, poll_interval=0.05, max_poll_interval=0.1))
    assert event["status"] == status
    assert event["mindvideo_task_id"] == task_id
    assert message in event["message"]
    assert event["task"]["task_id"] == task_id


def test_timeout_at_the_absolute_deadline(emulator: MindVideoEmulator, waits: list[float]) -> None:
    emulator.script("frog", "never")
    task_id = submit()
    (event,) = events(
        MindVideoTaskTrigger(task_id, poll_interval=0.05, max_poll_interval=0.1, deadline=time.time() + 0.5)
    )
    assert event["status"] == "timeout"
    assert event["task"] is None


def test_deadline_already_past_after_a_restart(emulator: MindVideoEmulator, waits: list[float]) -> None:
    emulator.script("frog", "never")
    (event,) = events(MindVideoTaskTrigger(submit(), deadline=time.time() - 1))
    assert event["status"] == "timeout"
    assert emulator.state.requests["get"] == 1
    assert waits == []


def test_unknown_task_ends_with_an_error_event(emulator: MindVideoEmulator) -> None:
    (event,) = events(MindVideoTaskTrigger("task_gone"))
    assert event["status"] == "error"
    assert event["error_type"] == "TaskNotFoundError"
    assert "not found" in event["message"]


def test_transient_errors_are_retried_inside_the_trigger(
    emulator: MindVideoEmulator, no_hook_retries: None, waits: list[float]
) -> None:
    task_id = submit()
    for status in (503, 502, 500):
        emulator.add_fault("status", route="get", status=status)
    emulator.add_fault("drop", route="get")
    (event,) = events(MindVideoTaskTrigger(task_id, poll_interval=0.05, max_poll_interval=0.1))
    assert event["status"] == "success"
    assert emulator.state.requests["get"] >= 5


def test_retry_after_is_honoured(emulator: MindVideoEmulator, no_hook_retries: None, waits: list[float]) -> None:
    task_id = submit()
    emulator.add_fault("status", route="get", status=429, retry_after="42")
    (event,) = events(MindVideoTaskTrigger(task_id, poll_interval=0.05, max_poll_interval=0.1))
    assert event["status"] == "success"
    assert waits[0] == 42.0
    assert all(w <= 0.1 for w in waits[1:])


def test_unknown_status_keeps_waiting_and_is_logged_once(
    emulator: MindVideoEmulator, waits: list[float], debug_logs: list[dict[str, Any]]
) -> None:
    task_id = submit()
    emulator.add_fault("unknown_status", route="get", times=3)
    (event,) = events(MindVideoTaskTrigger(task_id, poll_interval=0.05, max_poll_interval=0.1))
    assert event["status"] == "success"
    assert sum("does not know" in str(e) for e in debug_logs) == 1


def test_intervals_grow_with_the_wait_up_to_the_cap(
    emulator: MindVideoEmulator, waits: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.script("frog", "never")
    clock = [1_000.0]
    monkeypatch.setattr("airflow_provider_mindvideo.triggers.time.time", lambda: clock[0])
    trigger = MindVideoTaskTrigger(submit(), poll_interval=1, max_poll_interval=8, started_at=1_000.0, deadline=1_060.0)

    async def drive() -> None:
        async for _ in trigger.run():
            return

    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def advance(seconds: float) -> None:
        recorded.append(seconds)
        clock[0] += seconds
        await real_sleep(0)

    monkeypatch.setattr("airflow_provider_mindvideo.triggers.sleep", advance)
    asyncio.run(drive())
    assert recorded[0] <= 1.2
    assert max(recorded) <= 8
    assert recorded[len(recorded) // 2] > recorded[0]  # grew
    assert len(recorded) < 25  # a minute of waiting, not 60 polls at 1 s
    assert sum(recorded) == pytest.approx(60.0)  # ended exactly at the deadline


def test_cancellation_closes_the_http_client(emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.script("frog", "never")
    task_id = submit()
    closed: list[bool] = []
    original = MindVideoHook.aclose

    async def recording_aclose(self: MindVideoHook) -> None:
        closed.append(self._async_client is not None)
        await original(self)

    monkeypatch.setattr(MindVideoHook, "aclose", recording_aclose)

    async def run_then_cancel() -> None:
        running = asyncio.ensure_future(
            MindVideoTaskTrigger(task_id, poll_interval=0.05, max_poll_interval=0.1).run().__anext__()
        )
        while emulator.state.requests["get"] < 2:
            await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(run_then_cancel())
    assert closed == [True]


def test_never_reads_the_connection_synchronously(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, waits: list[float]
) -> None:
    task_id = submit()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("sync get_connection() in the triggerer's event loop")

    monkeypatch.setattr(MindVideoHook, "get_connection", classmethod(forbidden))
    (event,) = events(MindVideoTaskTrigger(task_id, poll_interval=0.05, max_poll_interval=0.1))
    assert event["status"] == "success"


def test_bad_poll_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="poll_interval = 0"):
        MindVideoTaskTrigger("t", poll_interval=0)
    with pytest.raises(ValueError, match="max_poll_interval = 1"):
        MindVideoTaskTrigger("t", poll_interval=5, max_poll_interval=1)


def test_each_change_of_status_is_logged_once_with_the_time_it_took(
    emulator: MindVideoEmulator, task_clock: list[float], debug_logs: list[dict[str, Any]]
) -> None:
    # Queued for polls 1-3, processing for polls 4-5, succeeded at poll 6 (task_clock's steps).
    emulator.script("frog", "succeeded", queued_seconds=1.0, processing_seconds=0.8)
    task_id = submit()
    (event,) = events(MindVideoTaskTrigger(task_id, poll_interval=0.01, max_poll_interval=0.02))
    assert event["status"] == "success"
    lines = [str(e["event"]) for e in debug_logs if task_id in str(e["event"]) and " is " in str(e["event"])]
    statuses = [line.split(" is ")[1].split()[0].rstrip(",") for line in lines]
    assert statuses == ["processing", "succeeded"]  # one line per change; the first status seen is silent
    assert len(task_clock) == 5  # six polls, two lines: polls that saw no change stayed silent
    assert "after queued for" in lines[0]
    assert "after processing for" in lines[1]


def test_a_huge_error_stays_out_of_the_trigger_event(emulator: MindVideoEmulator, waits: list[float]) -> None:
    emulator.script("doomed", "failed", error="E" * 2_000_000)
    task_id = submit("a doomed frog")
    (event,) = events(MindVideoTaskTrigger(task_id, poll_interval=0.05, max_poll_interval=0.1))
    assert event["status"] == "failed"
    assert len(json.dumps(event)) < 10_000


# -- waits that start together ------------------------------------------------------------------------


def test_a_lone_wait_or_waits_arriving_slowly_check_at_once() -> None:
    slots = FirstCheckSlots(per_slice=3, slice_seconds=0.1)
    assert [slots.delay(now) for now in (10.0, 10.5, 11.0, 11.2)] == [0.0, 0.0, 0.0, 0.0]


def test_waits_starting_together_are_spread_over_slices() -> None:
    slots = FirstCheckSlots(per_slice=25, slice_seconds=0.1)
    delays = [slots.delay(100.0) for _ in range(1000)]
    assert delays == sorted(delays)
    assert delays[:25] == [0.0] * 25
    assert delays[-1] == pytest.approx(3.9)  # 40 slices of 25
    starts = sorted(100.0 + delay for delay in delays)
    # In any window one slice long, at most one slice's worth of first checks.
    assert max(bisect.bisect_left(starts, at + 0.1 - 1e-9) - i for i, at in enumerate(starts)) == 25


def test_a_wait_arriving_during_a_backlog_queues_behind_it() -> None:
    slots = FirstCheckSlots(per_slice=2, slice_seconds=1.0)
    assert [slots.delay(0.0) for _ in range(6)] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert slots.delay(0.5) == pytest.approx(2.5)  # behind the booked slices, not at once
    assert slots.delay(0.5) == pytest.approx(2.5)
    assert slots.delay(10.0) == 0.0  # the backlog is long gone


def test_waits_started_together_in_one_loop_hold_their_first_checks(
    emulator: MindVideoEmulator, waits: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    task_ids = [submit(f"a green frog {i}") for i in range(7)]
    monkeypatch.setattr("airflow_provider_mindvideo.triggers.FIRST_CHECKS_PER_SLICE", 3)
    monkeypatch.setattr("airflow_provider_mindvideo.triggers._clock", lambda: 50.0)

    async def run_all() -> list[dict[str, Any]]:
        async def one(task_id: str) -> dict[str, Any]:
            trigger = MindVideoTaskTrigger(task_id, poll_interval=0.01, max_poll_interval=0.02)
            (event,) = [event.payload async for event in trigger.run()]
            return event

        return await asyncio.gather(*(one(task_id) for task_id in task_ids))

    assert [event["status"] for event in asyncio.run(run_all())] == ["success"] * 7
    held = sorted(round(seconds, 6) for seconds in waits if seconds >= 0.05)  # polls wait 0.02 s at most
    assert held == [0.1, 0.1, 0.1, 0.2]  # 3 at once, 3 a slice later, 1 two slices later


# -- waits that start together share one reading of their connection --------------------------------


def test_recent_settings_are_reused_only_within_their_window() -> None:
    recent = RecentSettings(reuse_seconds=10.0)
    settings = ClientSettings(base_url="https://api.example", api_key="mv_live_k")
    assert recent.get("mindvideo_default", now=0.0) is None
    recent.put("mindvideo_default", settings, now=0.0)
    assert recent.get("mindvideo_default", now=9.9) is settings
    assert recent.get("other_conn", now=1.0) is None  # another connection is read on its own
    assert recent.get("mindvideo_default", now=10.0) is None  # read again: an edit shows within the window


def test_waits_starting_together_read_their_connection_once(
    emulator: MindVideoEmulator, waits: list[float], monkeypatch: pytest.MonkeyPatch, connection_reads: list[str]
) -> None:
    task_ids = [submit(f"a green frog {i}") for i in range(6)]
    clock = [100.0]
    monkeypatch.setattr("airflow_provider_mindvideo.triggers._clock", lambda: clock[0])

    async def wait_for(task_ids: list[str]) -> list[str]:
        async def one(task_id: str) -> str:
            trigger = MindVideoTaskTrigger(task_id, poll_interval=0.01, max_poll_interval=0.02)
            (event,) = [event.payload async for event in trigger.run()]
            return str(event["status"])

        return await asyncio.gather(*(one(task_id) for task_id in task_ids))

    async def scenario() -> list[str]:
        together = await wait_for(task_ids[:5])
        clock[0] += SETTINGS_REUSE_SECONDS  # a wait starting later reads the connection afresh
        return together + await wait_for(task_ids[5:])

    assert asyncio.run(scenario()) == ["success"] * 6
    assert connection_reads == ["mindvideo_default", "mindvideo_default"]


def test_the_first_status_seen_is_not_logged_unless_terminal(
    emulator: MindVideoEmulator, task_clock: list[float], debug_logs: list[dict[str, Any]]
) -> None:
    # The operator logged the task and its status as it deferred: the wait logs what changes.
    # The slow task is processing at the first poll and succeeded at the second (task_clock).
    emulator.script("slow", "succeeded", queued_seconds=0, processing_seconds=TASK_CLOCK_STEP)
    emulator.script("quick", "succeeded", queued_seconds=0, processing_seconds=0)
    task_id = submit("a slow frog")
    (event,) = events(MindVideoTaskTrigger(task_id, poll_interval=0.05, max_poll_interval=0.1))
    assert event["status"] == "success"
    lines = [str(e["event"]) for e in debug_logs if f"task {task_id} is " in str(e["event"])]
    assert len(lines) == 1
    assert " is succeeded after " in lines[0]
    quick = submit("a quick frog")
    (event,) = events(MindVideoTaskTrigger(quick, poll_interval=0.05, max_poll_interval=0.1))
    (line,) = [str(e["event"]) for e in debug_logs if f"task {quick} is " in str(e["event"])]
    assert line.split(",")[0].endswith(" is succeeded")


def test_a_failed_reading_ends_each_wait_with_its_error_and_is_not_kept(
    emulator: MindVideoEmulator, waits: list[float], connection_reads: list[str]
) -> None:

    async def wait_for(count: int) -> list[dict[str, Any]]:
        async def one(i: int) -> dict[str, Any]:
            trigger = MindVideoTaskTrigger(f"task_{i}", "mindvideo_typo", poll_interval=0.01, max_poll_interval=0.02)
            (event,) = [event.payload async for event in trigger.run()]
            return event

        return await asyncio.gather(*(one(i) for i in range(count)))

    async def scenario() -> list[dict[str, Any]]:
        return await wait_for(3) + await wait_for(1)

    found = asyncio.run(scenario())
    assert [event["status"] for event in found] == ["error"] * 4
    assert all("mindvideo_typo" in event["message"] for event in found)
    assert connection_reads == ["mindvideo_typo", "mindvideo_typo"]  # one for the three together, one again later


@pytest.fixture
def learnt(monkeypatch: pytest.MonkeyPatch) -> RecentDurations:
    """A store of recent durations of the triggers' own, empty (the process-wide one is left alone)."""
    store = RecentDurations()
    monkeypatch.setattr("airflow_provider_mindvideo.triggers.RECENT", store)
    return store


@pytest.fixture
def one_clock(emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """One clock for the trigger and the emulator, moved on by each of the trigger's sleeps (recorded)."""
    now = [1_000.0]
    monkeypatch.setattr(emulator.state, "clock", lambda: now[0])
    monkeypatch.setattr("airflow_provider_mindvideo.triggers.time.time", lambda: now[0])
    polls: list[float] = []
    real_sleep = asyncio.sleep

    async def advance(seconds: float) -> None:
        now[0] += seconds
        polls.append(now[0])
        await real_sleep(0)

    monkeypatch.setattr("airflow_provider_mindvideo.triggers.sleep", advance)
    return polls


def test_a_wait_teaches_the_triggerer_how_long_its_models_tasks_take(
    emulator: MindVideoEmulator, one_clock: list[float], learnt: RecentDurations
) -> None:
    emulator.script("slow", "succeeded", queued_seconds=0.0, processing_seconds=30.0)
    emulator.script("broken", "failed", queued_seconds=0.0, processing_seconds=30.0)
    trigger = MindVideoTaskTrigger(submit("a slow frog"), model="gpt-image-2", started_at=1_000.0)
    (event,) = events(trigger)
    assert event["status"] == "success"
    (took,) = learnt.of("gpt-image-2")
    # Seen running, then ended: the middle of that span, from the wait's start.
    last_running = max(at for at in one_clock if at < 1_030.0)
    assert took == pytest.approx((last_running + one_clock[-1]) / 2 - 1_000.0)
    # A failure ends early for reasons of its own: it says nothing of how long the work takes.
    failing = MindVideoTaskTrigger(submit("a broken frog"), model="gpt-image-2", started_at=one_clock[-1])
    (event,) = events(failing)
    assert event["status"] == "failed"
    assert learnt.of("gpt-image-2") == (took,)


def test_a_wait_for_a_known_model_aims_its_polls_at_when_its_tasks_end(
    emulator: MindVideoEmulator, one_clock: list[float], learnt: RecentDurations
) -> None:
    emulator.script("frog", "never")
    for seconds in (95.0, 100.0, 105.0, 110.0):
        learnt.record("gpt-image-2", seconds)

    def polls(model: str | None) -> list[float]:
        start = time.time()  # the test's clock
        one_clock[:] = [start]  # the first check, as the wait starts
        trigger = MindVideoTaskTrigger(
            submit(), poll_interval=1, max_poll_interval=30, started_at=start, deadline=start + 130, model=model
        )
        events(trigger)
        return [at - start for at in one_clock]

    def gaps(times: list[float], start: float, end: float) -> list[float]:
        return [b - a for a, b in itertools.pairwise(times) if start <= b and a <= end]

    aimed, backoff = polls("gpt-image-2"), polls(None)
    # Before its peers usually end, fewer polls; around it (95-110 s), polls 5% of the median (105 s) apart.
    assert len([at for at in aimed if at < 90]) < len([at for at in backoff if at < 90])
    assert max(gaps(aimed, 95, 112)) <= 1.2 * 0.05 * 105  # jittered by up to a fifth of the spacing
    # The backoff: a quarter of the wait, jittered by a fifth; the gap into 95 s starts at 73 s at the earliest.
    assert min(gaps(backoff, 95, 112)) >= 0.8 * 0.25 * 73


def test_the_model_is_stored_with_the_wait_only_when_named() -> None:
    classpath, kwargs = MindVideoTaskTrigger("task_1", model="veo3-1-fast").serialize()
    assert kwargs["model"] == "veo3-1-fast"
    assert import_string(classpath)(**kwargs).model == "veo3-1-fast"


def test_the_workers_wait_learns_too(emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """deferrable=False: a worker process that waits for more than one task aims its polls as the triggerer does."""
    from airflow_provider_mindvideo.operators import MindVideoGenerateOperator
    from tests.reliability.test_pay_once_invariant import TaskInstance

    store = RecentDurations()
    monkeypatch.setattr("airflow_provider_mindvideo.operators.generate.RECENT", store)
    operator = MindVideoGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        input={"prompt": "a patient heron"},
        deferrable=False,
        poll_interval=0.05,
        max_poll_interval=0.1,
    )
    assert operator.execute({"ti": TaskInstance(try_number=1)})  # type: ignore[arg-type]
    (took,) = store.of("gpt-image-2")
    assert took > 0

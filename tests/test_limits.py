"""Per-connection request limits (pacing turns, many coroutines waiting for them), and what a busy hook keeps."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import importlib
import itertools
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Any
from unittest.mock import ANY

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_mindvideo.client import limits
from airflow_provider_mindvideo.client.errors import MindVideoError
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from tests.conftest import FAST_RETRIES


def test_coroutines_waiting_for_pacing_turns_wait_in_line_not_in_a_herd(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch keeps hundreds of requests waiting for turns: each turn must not wake them all.

    Waking every waiter at every turn (each asks the pacer, one wins, the rest sleep again)
    costs the event loop waiters x turns wake-ups: at 400 waiters and 95 turns a second, the
    triggerer's CPU, and then the turns themselves, fall behind. In line, a turn costs one
    wake-up. Counted as the pacer's answers, not timed.
    """
    conn = {"conn_type": "mindvideo", "host": emulator.base_url, "password": emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_MV_HERD", json.dumps({**conn, "extra": {"max_requests_per_second": 40}}))
    asked = 0
    reserve = limits.Pacer.reserve

    def counted(self: limits.Pacer, now: float) -> float:
        nonlocal asked
        asked += 1
        return reserve(self, now)

    monkeypatch.setattr(limits.Pacer, "reserve", counted)
    waiters = 40

    async def burst() -> list[Any]:
        hook = MindVideoHook("mv_herd", retry_policy=FAST_RETRIES, shared_client=False)
        try:
            task = await hook.acreate_task("gpt-image-2", {"prompt": "a herd"})
            return await asyncio.gather(*(hook.aget_task(task.task_id) for _ in range(waiters)))
        finally:
            await hook.aclose()

    answers = asyncio.run(burst())
    assert len(answers) == waiters
    requests = waiters + 1
    # In line: a request asks for its turn, and again after sleeping until it comes (a timer may
    # fire a hair early: once more). In a herd: about waiters x requests / 2.
    assert asked <= 3 * requests, f"{asked} pacing answers for {requests} requests"


def _turns(pacer: limits.Pacer, lateness: list[float], latency: list[float] | None = None) -> list[float]:
    """When a sender that wakes ``lateness[i]`` seconds after each promised turn gets its turns.

    Request ``i`` is answered ``latency[i]`` seconds after its turn (default: at once).
    """
    return _turns_and_ends(pacer, lateness, latency)[0]


def _turns_and_ends(
    pacer: limits.Pacer, lateness: list[float], latency: list[float] | None = None
) -> tuple[list[float], list[float]]:
    now, sent, ends = 0.0, [], []
    answers: list[float] = []  # a heap of the answers still to come

    def answered_by(time: float) -> None:
        while answers and answers[0] <= time:
            pacer.finish(heapq.heappop(answers))

    for index, late in enumerate(lateness):
        answered_by(now)
        while delay := pacer.reserve(now):
            now += delay + late  # it sleeps until the turn, and wakes late
            answered_by(now)
        sent.append(now)
        ends.append(now + (latency[index] if latency else 0.0))
        heapq.heappush(answers, ends[-1])
    return sent, ends


def test_a_sender_late_for_its_turns_keeps_the_rate_not_its_own_lateness() -> None:
    """A timer's millisecond and a busy loop make every turn a little late; the turns must not drift by it.

    Counting each interval from the late send made 95 requests a second 86 in the batch probe.
    """
    rate = 95.0
    sent = _turns(limits.Pacer(rate), [0.4 / rate] * 951)
    # The cadence held (950 intervals of 1/rate, within 1%), not 950 of 1.4/rate.
    assert sent[-1] - sent[0] <= 1.01 * 950 / rate


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([1.0, 2.5, 15.0, 95.0, 400.0]),
    lateness=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=400),
)
def test_no_second_ever_holds_more_sends_than_the_rate(rate: float, lateness: list[float]) -> None:
    sent = _turns(limits.Pacer(rate), [late / rate for late in lateness])
    assert sent == sorted(sent)
    most = max(bisect.bisect_left(sent, t + 1.0) - i for i, t in enumerate(sent))
    assert most <= math.ceil(rate)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 2.5, 15.0, 95.0]),
    timing=st.lists(st.tuples(st.floats(0.0, 2.0), st.floats(0.0, 1.5)), min_size=1, max_size=60),
)
def test_no_second_of_the_servers_clock_can_hold_more_requests_than_the_rate(
    rate: float, timing: list[tuple[float, float]]
) -> None:
    """Wherever in [turn, answer] each request reaches the server, no half-open second holds more than ceil(rate).

    Request j's turn at t_j and request i's arrival in one half-open second [x, x + 1) means i's
    answer came after t_j - 1. So it suffices that at no turn ceil(rate) others are answered
    later than a second before it (or not yet).
    """
    lateness = [late / rate for late, _ in timing]
    sent, ends = _turns_and_ends(limits.Pacer(rate), lateness, [latency for _, latency in timing])
    for j, turn in enumerate(sent):
        overlapping = sum(1 for i in range(max(0, j - 200), j) if Fraction(turn) - Fraction(ends[i]) < 1)
        assert overlapping <= math.ceil(rate) - 1, (j, turn, overlapping)


@given(lateness=st.lists(st.floats(0.0, 30.0), min_size=2, max_size=20))
def test_a_rate_below_one_a_second_spaces_every_two_sends_by_its_interval(lateness: list[float]) -> None:
    sent = _turns(limits.Pacer(0.05), lateness)
    assert all(later - earlier >= 20.0 - 1e-9 for earlier, later in itertools.pairwise(sent))


def test_a_hook_polling_thousands_of_tasks_keeps_a_bounded_number_of_built_requests(
    emulator: MindVideoEmulator,
) -> None:
    """A hook builds each GET once and reuses it for the dozens of polls of one wait; a batch's
    hook polls 10,000 tasks, each a few times: keeping every one it built held megabytes to the
    end of the batch."""
    import gc

    import httpx

    from airflow_provider_mindvideo.client.errors import TaskNotFoundError

    async def poll_many() -> int:
        hook = MindVideoHook(retry_policy=FAST_RETRIES, shared_client=False)
        try:
            for number in range(600):
                with pytest.raises(TaskNotFoundError):
                    await hook.aget_task(f"tsk_unknown_{number}")
            gc.collect()
            return sum(type(thing) is httpx.Request and "tsk_unknown_" in thing.url.path for thing in gc.get_objects())
        finally:
            await hook.aclose()

    assert asyncio.run(poll_many()) < 300


class _Recording:
    """A module (``asyncio``) as one module sees it, with one function wrapped to record its argument."""

    def __init__(self, module: Any, name: str, record: Any) -> None:
        self._module, self._name, self._record = module, name, record

    def __getattr__(self, attribute: str) -> Any:
        real = getattr(self._module, attribute)
        if attribute != self._name:
            return real

        def recorded(seconds: float, *args: Any, **kwargs: Any) -> Any:
            self._record(seconds)
            return real(seconds, *args, **kwargs)

        return recorded


@pytest.mark.parametrize("shell", ["sync", "async"])
def test_a_call_waiting_in_line_for_its_turn_still_ends_by_its_deadline(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, shell: str
) -> None:
    """The wait for a pacing turn is part of a call's time: ``within`` bounds turn and answer together.

    One turn every 4 s, and the create before took one: two calls with ``within=5`` wait in line,
    the first gets its turn at about 4 s and may then try for what is left, about 1 s (given a
    whole 5 s after its turn, it ended at 9 s); the second gets none before its end. What is
    asserted is what the hook decided, recorded per call (the waits it slept, the time it then
    gave the attempt): not the wall time, which a busy machine stretches.
    """
    conn = {"conn_type": "mindvideo", "host": emulator.base_url, "password": emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_MV_LINE", json.dumps({**conn, "extra": {"max_requests_per_second": 0.25}}))
    with MindVideoHook("mv_line") as setup:
        task = setup.create_task("gpt-image-2", {"prompt": "a slow line"})  # takes a turn: the next is 4 s on
    emulator.add_fault("delay", route="get", seconds=10.0, times=2)
    within = 5.0
    decided: dict[object, list[tuple[str, float]]] = {}

    def call() -> object:
        if shell == "sync":
            return threading.get_ident()
        return asyncio.current_task()

    def note(what: str) -> Any:
        return lambda seconds: decided.setdefault(call(), []).append((what, seconds))

    hooks_module = importlib.import_module("airflow_provider_mindvideo.hooks")
    if shell == "sync":
        real_sleep, real_deadline_after = hooks_module.sleep, hooks_module.deadline_after
        monkeypatch.setattr(hooks_module, "sleep", lambda seconds: (note("turn")(seconds), real_sleep(seconds)))
        monkeypatch.setattr(
            hooks_module, "deadline_after", lambda seconds: (note("attempt")(seconds), real_deadline_after(seconds))[1]
        )
    else:
        monkeypatch.setattr(limits, "asyncio", _Recording(asyncio, "sleep", note("turn")))
        monkeypatch.setattr(hooks_module, "asyncio", _Recording(asyncio, "timeout", note("attempt")))

    def get(hook: MindVideoHook) -> None:
        with contextlib.suppress(MindVideoError):
            hook.get_task(task.task_id, within=within)

    async def aget(hook: MindVideoHook) -> None:
        with contextlib.suppress(MindVideoError):
            await hook.aget_task(task.task_id, within=within)

    hook = MindVideoHook("mv_line", retry_policy=FAST_RETRIES, shared_client=False)
    if shell == "sync":
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda _: get(hook), range(2)))
        hook.close()
    else:

        async def both() -> None:
            try:
                await asyncio.gather(aget(hook), aget(hook))
            finally:
                await hook.aclose()

        asyncio.run(both())
    # The case at stake happened: a call waited for its turn, then was given an attempt.
    assert any(steps[0][0] == "turn" and ("attempt", ANY) in steps for steps in decided.values()), decided
    for steps in decided.values():
        spent = 0.0
        for what, seconds in steps:
            if what == "turn":
                spent += seconds
            else:  # the attempt may last only what the turn left of the call's time (9 s before the fix)
                assert spent + seconds <= within + 1e-6, steps


def test_a_single_wait_s_request_goes_before_a_batch_s_backlog_on_the_same_connection() -> None:
    """A batch's requests (``limits.bulk``) queue behind every other request of the loop waiting for a turn.

    Thirty of a batch's requests wait for turns when a single task's poll asks for one: it gets
    its turn after at most the one batch request already in the ordinary line, not after all
    thirty. Counted as the order the turns went in, not timed.
    """
    connection = limits.ConnectionLimits(None, 200.0)
    order: list[str] = []

    async def ask(name: str, *, batch: bool) -> None:
        if batch:
            limits.bulk.set(True)  # this task's context only, as a batch's workers do
        assert await connection.await_turn(60.0)
        order.append(name)
        connection.finish()

    async def scenario() -> None:
        backlog = [asyncio.create_task(ask(f"batch {i}", batch=True)) for i in range(30)]
        for _ in range(3):
            await asyncio.sleep(0)  # the backlog is in line
        await asyncio.gather(ask("wait", batch=False), *backlog)

    asyncio.run(scenario())
    assert order.index("wait") <= 2, order
    assert sorted(order) == sorted(["wait", *(f"batch {i}" for i in range(30))])

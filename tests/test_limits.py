"""Per-connection request limits in an event loop: many coroutines waiting for pacing turns."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from airflow_provider_mindvideo import limits
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

"""Airflow's fast-resume race: a trigger does not resume its task sooner after the deferral than Airflow can take it back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_mindvideo import get_provider_info, resume
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.resume import DEFAULT_RESUME_NOT_BEFORE, hold_seconds
from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger
from tests.test_triggers import events, submit


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The holds, recorded instead of slept; [mindvideo] resume_not_before at its default."""
    monkeypatch.delenv("AIRFLOW__MINDVIDEO__RESUME_NOT_BEFORE", raising=False)
    recorded: list[float] = []

    async def record(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(resume, "sleep", record)
    return recorded


def test_hold_seconds_counts_from_the_deferral() -> None:
    assert hold_seconds(deferred_at=100.0, now=101.5, not_before=10.0) == 8.5
    assert hold_seconds(deferred_at=100.0, now=130.0, not_before=10.0) == 0.0  # a long wait: no hold
    assert hold_seconds(deferred_at=100.0, now=100.0, not_before=0.0) == 0.0


def test_a_remote_task_done_at_once_is_reported_no_sooner_than_resume_not_before(
    emulator: MindVideoEmulator, held: list[float]
) -> None:
    # The remote task ended within a second of the deferral: Airflow 3.3 failed such tasks
    # ("finished with state success, but the task instance's state attribute is queued").
    emulator.script("frog", "succeeded", queued_seconds=0, processing_seconds=0)
    trigger = MindVideoTaskTrigger.starting_now(submit(), "mindvideo_default", 0.05, 0.1, 60)
    (event,) = events(trigger)
    assert event["status"] == "success"
    (hold,) = held
    assert 0 < hold <= DEFAULT_RESUME_NOT_BEFORE
    assert trigger.started_at + DEFAULT_RESUME_NOT_BEFORE - time.time() <= hold  # what was left of the floor


def test_a_wait_that_began_long_ago_is_not_held(emulator: MindVideoEmulator, held: list[float]) -> None:
    emulator.script("frog", "succeeded", queued_seconds=0, processing_seconds=0)
    trigger = MindVideoTaskTrigger(submit(), poll_interval=0.05, max_poll_interval=0.1, started_at=time.time() - 60)
    (event,) = events(trigger)
    assert event["status"] == "success" and held == []


def test_an_event_that_ends_the_task_in_the_triggerer_is_not_held(
    emulator: MindVideoEmulator, held: list[float]
) -> None:
    # end_from_trigger: no worker resumes, so there is nothing to race with.
    emulator.script("frog", "succeeded", queued_seconds=0, processing_seconds=0)
    trigger = MindVideoTaskTrigger.starting_now(submit(), "mindvideo_default", 0.05, 0.1, 60, end_from_trigger=True)

    async def first() -> Any:
        async for event in trigger.run():
            return event

    assert type(asyncio.run(first())).__name__ == "TaskSuccessEvent" and held == []


def test_the_option_is_declared_with_its_default() -> None:
    option = get_provider_info()["config"]["mindvideo"]["options"]["resume_not_before"]
    assert float(option["default"]) == DEFAULT_RESUME_NOT_BEFORE

"""The walk over key generations, against an in-memory API: at most one new task per try.

The API model here keeps tasks by key like MindVideo does (a replay returns the task the key
made, free). ``tells_creation`` says whether it answers a new task with 201 (as the emulator
does) or cannot be told from a replay (the worst case the walk must still bound).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest
from airflow.sdk.exceptions import AirflowFailException
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_mindvideo.client.errors import RemoteTaskFailedError
from airflow_provider_mindvideo.client.models import MindVideoTask, TaskStatus
from airflow_provider_mindvideo.client.submission import find_or_create, replay_explicit_key

LOG = logging.getLogger(__name__)


@dataclass
class FakeApi:
    tells_creation: bool
    #: How each new task ends at once, in order: "queued" or "failed" (a synchronous refusal).
    outcomes: list[str] = field(default_factory=list)
    tasks: dict[str, MindVideoTask] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    def create(self, key: str) -> MindVideoTask:
        if key in self.tasks:
            return self.tasks[key]
        status = self.outcomes.pop(0) if self.outcomes else "queued"
        task = MindVideoTask(task_id=f"task_{len(self.tasks)}", status=status)
        self.tasks[key] = task
        self.created.append(key)
        return task.model_copy(update={"created": True}) if self.tells_creation else task

    def fail_later(self, key: str) -> None:
        """The remote task behind ``key`` failed after the try that made it ended."""
        self.tasks[key] = self.tasks[key].model_copy(update={"status": TaskStatus.FAILED})


def key_of(generation: int) -> str:
    return f"af-key-{generation:04d}"


def walk(api: FakeApi, try_number: int, max_generations: int = 10) -> str:
    return find_or_create(
        api.create, key_of, try_number=try_number, max_generations=max_generations, log=LOG
    ).idempotency_key


@pytest.mark.parametrize("tells_creation", [True, False])
def test_a_refusal_at_creation_fails_the_try_and_the_next_try_moves_on(tells_creation: bool) -> None:
    api = FakeApi(tells_creation, outcomes=["failed", "failed", "queued"])
    with pytest.raises(RemoteTaskFailedError, match="as soon as it was created"):
        walk(api, 1)
    assert len(api.created) == 1
    with pytest.raises(RemoteTaskFailedError):
        walk(api, 2)
    assert len(api.created) == 2
    assert walk(api, 3) == key_of(2)
    assert len(api.created) == 3


@pytest.mark.parametrize("tells_creation", [True, False])
def test_a_retry_reuses_a_task_that_did_not_fail(tells_creation: bool) -> None:
    api = FakeApi(tells_creation)
    assert walk(api, 1) == key_of(0)
    assert walk(api, 2) == key_of(0)
    assert walk(api, 7) == key_of(0)
    assert len(api.created) == 1


def test_the_last_generation_failing_at_creation_is_final() -> None:
    api = FakeApi(True, outcomes=["failed"] * 5)
    with pytest.raises(RemoteTaskFailedError):
        walk(api, 1, max_generations=2)
    with pytest.raises(AirflowFailException, match="max_generations=2"):
        walk(api, 2, max_generations=2)
    with pytest.raises(AirflowFailException, match="Every one of the 2"):
        walk(api, 3, max_generations=2)
    assert len(api.created) == 2


def test_an_explicit_key_names_one_task() -> None:
    api = FakeApi(True, outcomes=["failed"])
    with pytest.raises(AirflowFailException, match="set a new idempotency_key"):
        replay_explicit_key(api.create, "mine")
    assert len(api.created) == 1


# One try of a task instance: what the world does to it.
TRY_FATES = st.sampled_from(["dies before sending", "refused at once", "fails later", "succeeds"])


@settings(max_examples=300, deadline=None)
@given(tells_creation=st.booleans(), fates=st.lists(TRY_FATES, min_size=1, max_size=12), cap=st.integers(1, 6))
def test_invariants_over_any_sequence_of_tries(tells_creation: bool, fates: list[str], cap: int) -> None:
    api = FakeApi(tells_creation)
    succeeded_keys: set[str] = set()
    for try_number, fate in enumerate(fates, start=1):
        before = len(api.created)
        if fate == "dies before sending":
            continue
        api.outcomes = ["failed" if fate == "refused at once" else "queued"]
        try:
            key = walk(api, try_number, max_generations=cap)
        except (RemoteTaskFailedError, AirflowFailException):
            key = None
        new = len(api.created) - before
        if tells_creation:
            assert new <= 1, f"try {try_number} created {new} tasks"
        if key is not None and key in api.created[before:]:
            if fate == "fails later":
                api.fail_later(key)
            elif fate == "succeeds":
                succeeded_keys.add(key)
        elif key is not None and api.tasks[key].status.value != "failed":
            succeeded_keys.add(key)  # a replayed task that did not fail is what this try used
    # Whatever happened: never more tasks than tries, never more than the cap, at most one success.
    assert len(api.created) <= min(len(fates), cap)
    assert len(succeeded_keys) <= 1

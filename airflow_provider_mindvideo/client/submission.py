"""Find or create a task instance's remote task: the walk over key generations that pays once.

A try replays the generations of its key in order (a replay is free and returns the task that
key made) and uses the first whose task did not fail. It stops at the first task it may have
created itself, whatever that task's status: **a try creates at most one task.** A task that
fails at once (a synchronous refusal) fails the try; the next try replays it, sees it failed,
and creates the next generation.

Whether an answer was a creation or a replay, the API tells only by its status code where it
tells at all (201 Created). So the walk also leans on Airflow's try number: before try ``t``, at
most ``t - 1`` tries ran, so at most ``t - 1`` generations exist and try ``t`` never looks past
generation ``t - 1``. And no task instance ever uses more than ``max_generations`` keys.

The rule for one answer is a pure step, :func:`next_step`: :func:`find_or_create` drives it on
the worker, and the batch trigger drives it for every item of a batch in the triggerer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_mindvideo.client.errors import RemoteTaskFailedError
from airflow_provider_mindvideo.client.models import MindVideoTask, TaskStatus

_ENDED_BADLY = (TaskStatus.FAILED, TaskStatus.CANCELLED)


@dataclass(frozen=True)
class Submitted:
    """The remote task a try works with, and the key (and its generation) that found it."""

    task: MindVideoTask
    idempotency_key: str
    generation: int


class Step(enum.Enum):
    """What a walk does with the answer to one generation's create."""

    #: Work with this task: it did not fail (it may still be running).
    USE = "use"
    #: An earlier try's task that failed: not reused; look at the next generation.
    NEXT = "next"
    #: This try may have created it, and it failed at once: the try fails, a later try generates again.
    RETRY_LATER = "retry later"
    #: It failed at once and was the last generation allowed: nothing more is generated.
    GIVE_UP = "give up"


@dataclass(frozen=True)
class Decision:
    step: Step
    #: Why the walk stops (RETRY_LATER, GIVE_UP), in words for a log or an error.
    reason: str = ""


def generations_to_walk(try_number: int, max_generations: int) -> range:
    """The generations try ``try_number`` may look at: ``0 .. min(try_number, max_generations) - 1``.

    Before try ``t`` at most ``t - 1`` tries ran, so at most ``t - 1`` generations exist.
    """
    return range(min(max(try_number, 1), max_generations))


def next_step(task: MindVideoTask, generation: int, *, try_number: int, max_generations: int) -> Decision:
    """The pay-once rule for one answer of the walk (pure; the sync walk and the batch trigger share it).

    :param task: the create answer for ``generation``'s key (a new task or a replay).
    """
    if task.status not in _ENDED_BADLY:
        return Decision(Step.USE)
    # Generations before ``last_creatable`` may exist from earlier tries; this one cannot.
    last_creatable = max(try_number, 1) - 1
    if not (task.created or generation == last_creatable):
        return Decision(Step.NEXT)
    what = (
        f"MindVideo task {task.task_id} (key generation {generation}) ended {task.status.value} as soon as "
        f"it was created: {task.error_message or 'no reason given'}"
    )
    if generation + 1 >= max_generations:
        return Decision(Step.GIVE_UP, f"{what}; it was the last of max_generations={max_generations}")
    return Decision(Step.RETRY_LATER, f"{what}; the next try generates again")


def exhausted_message(max_generations: int) -> str:
    """Why a walk found nothing to use: every generation it may use ended badly."""
    return (
        f"Every one of the {max_generations} key generation(s) this task instance may use ended failed or "
        "cancelled; nothing more is generated. Raise max_generations, or change the input, to generate again"
    )


def find_or_create(
    create: Callable[[str], MindVideoTask],
    key_of: Callable[[int], str],
    *,
    try_number: int,
    max_generations: int,
    log: Any,
) -> Submitted:
    """Walk :func:`generations_to_walk`, deciding each answer by :func:`next_step`; see the module's docstring.

    :param create: sends the create request under a key; returns the task the API answered with.
    :param key_of: the idempotency key of a generation.
    """
    for generation in generations_to_walk(try_number, max_generations):
        key = key_of(generation)
        task = create(key)
        decision = next_step(task, generation, try_number=try_number, max_generations=max_generations)
        if decision.step is Step.USE:
            return Submitted(task, key, generation)
        if decision.step is Step.GIVE_UP:
            raise AirflowFailException(decision.reason)
        if decision.step is Step.RETRY_LATER:
            raise RemoteTaskFailedError(decision.reason, request_id=task.request_id)
        log.info(
            "MindVideo task %s (key generation %d) ended %s earlier; it is not reused",
            task.task_id,
            generation,
            task.status.value,
        )
    raise AirflowFailException(exhausted_message(max_generations))


def replay_explicit_key(create: Callable[[str], MindVideoTask], key: str) -> Submitted:
    """An explicit key names one remote task: use it, or fail if it failed (a new key generates again)."""
    task = create(key)
    if task.status in _ENDED_BADLY:
        raise AirflowFailException(
            f"The MindVideo task behind idempotency_key {key!r} ended {task.status.value}; "
            "set a new idempotency_key to generate again"
        )
    return Submitted(task, key, 0)

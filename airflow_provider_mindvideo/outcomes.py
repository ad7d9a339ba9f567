"""What operators and the sensor do with a finished MindVideo task: record it, return or raise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_mindvideo.client import errors
from airflow_provider_mindvideo.client.errors import (
    EmptyOutputError,
    MindVideoError,
    RemoteTaskFailedError,
    WaitTimeoutError,
)
from airflow_provider_mindvideo.client.models import MindVideoTask, TaskStatus
from airflow_provider_mindvideo.links import remember_push
from airflow_provider_mindvideo.triggers import SUCCESS, TIMEOUT

# The record's key is the trigger's too (it pushes the record when a task ends in the triggerer).
from airflow_provider_mindvideo.triggers import XCOM_TASK_KEY as XCOM_TASK_KEY

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mindvideo.hooks import MindVideoHook

_EVENTS_IN_ERRORS = 5
# The events only explain a failure already known: never worth more than a few seconds of a task's time.
_EVENTS_WITHIN = 10.0


def deliver(
    context: Context, hook: MindVideoHook, task: MindVideoTask, log: Any, record: dict[str, Any] | None = None
) -> list[str]:
    """Push the task's record; return its output URLs if it succeeded, else raise why not."""
    record = {**(record or {}), **task.summary()}
    remember_push(context["ti"], XCOM_TASK_KEY, record)
    cost = f"{task.cost_actual}" if task.cost_actual is not None else "unknown"
    if task.status is TaskStatus.SUCCEEDED:
        log.info("MindVideo task %s succeeded: %d output(s), actual cost %s", task.task_id, len(task.output_urls), cost)
        if not task.output_urls:
            raise EmptyOutputError(f"MindVideo task {task.task_id} succeeded but returned no output URLs")
        return task.output_urls
    log.info("MindVideo task %s ended %s, actual cost %s", task.task_id, task.reported_status, cost)
    reason = task.error_message or "no reason given"
    raise RemoteTaskFailedError(
        f"MindVideo task {task.task_id} {task.status.value}: {reason}{_recent_events(hook, task.task_id)}",
        request_id=task.request_id,
    )


def task_from_event(event: dict[str, Any]) -> MindVideoTask:
    """The finished task a MindVideoTaskTrigger event carries, or the error it reports."""
    status = event.get("status")
    if status == TIMEOUT:
        raise WaitTimeoutError(event.get("message") or "MindVideo task did not finish in time")
    if event.get("task") is None:
        error_class = getattr(errors, str(event.get("error_type")), MindVideoError)
        if not (isinstance(error_class, type) and issubclass(error_class, MindVideoError)):
            error_class = MindVideoError
        raise error_class(event.get("message") or f"MindVideo wait ended with {status!r}")
    task = MindVideoTask.model_validate(event["task"])
    if (status == SUCCESS) != (task.status is TaskStatus.SUCCEEDED):
        raise MindVideoError(f"Inconsistent trigger event for MindVideo task {task.task_id}: {status!r}")
    return task


def _recent_events(hook: MindVideoHook, task_id: str) -> str:
    # Best effort: the failure is what matters; its events only help explain it.
    try:
        events = hook.get_task_events(task_id, within=_EVENTS_WITHIN)[-_EVENTS_IN_ERRORS:]
    except MindVideoError:
        return ""
    return "; recent events: " + " | ".join(event.describe() for event in events) if events else ""

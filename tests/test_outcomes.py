"""Turning trigger events and finished tasks into results or errors."""

from __future__ import annotations

import pickle

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_mindvideo.client.errors import (
    AuthenticationError,
    MindVideoError,
    RateLimitedError,
    RemoteTaskFailedError,
    TaskNotFoundError,
    WaitTimeoutError,
)
from airflow_provider_mindvideo.outcomes import task_from_event


def test_timeout_event() -> None:
    with pytest.raises(WaitTimeoutError, match="too slow"):
        task_from_event({"status": "timeout", "message": "too slow"})


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("TaskNotFoundError", TaskNotFoundError),
        ("AuthenticationError", AuthenticationError),
        ("os", MindVideoError),
        (None, MindVideoError),
        ("AirflowFailException", MindVideoError),
    ],
)
def test_error_events_raise_the_error_they_name(error_type: str | None, expected: type[Exception]) -> None:
    with pytest.raises(expected) as info:
        task_from_event({"status": "error", "task": None, "message": "it broke", "error_type": error_type})
    assert type(info.value) is expected
    assert "it broke" in str(info.value)


def test_an_event_that_contradicts_its_task_is_refused() -> None:
    with pytest.raises(MindVideoError, match="Inconsistent"):
        task_from_event({"status": "success", "task": {"task_id": "t", "status": "failed"}})


def test_permanent_errors_fail_without_retries_transient_ones_do_not() -> None:
    assert isinstance(AuthenticationError("x"), AirflowFailException)
    assert not AuthenticationError("x").retryable
    for transient in (RateLimitedError("x"), RemoteTaskFailedError("x"), WaitTimeoutError("x")):
        assert not isinstance(transient, AirflowFailException)
        assert transient.retryable


def test_errors_survive_pickling_between_processes() -> None:
    error = TaskNotFoundError("gone", http_status=404, request_id="req_1")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is TaskNotFoundError
    assert (copy.message, copy.http_status, copy.request_id, str(copy)) == ("gone", 404, "req_1", str(error))
    assert str(MindVideoError("plain")) == "plain"

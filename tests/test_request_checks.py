"""Task ids and idempotency keys are checked before a request is built, and refused without retries."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.client.protocol import create_task_call, get_task_call, get_task_events_call
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from tests.conftest import Api


@pytest.mark.parametrize("task_id", [".", "..", " .. "])
@pytest.mark.parametrize("builder", [get_task_call, get_task_events_call])
def test_dot_segments_are_not_task_ids(task_id: str, builder: Any) -> None:
    with pytest.raises(InputValidationError, match=r"mindvideo_task_id = .*not a task id"):
        builder(task_id)


def test_dots_inside_an_id_are_fine() -> None:
    assert get_task_call("...").path == "/api/v1/tasks/..."
    assert get_task_call("task.v2").path == "/api/v1/tasks/task.v2"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (42, r"idempotency_key = 42 \(int\): must be text of 1-255 visible ASCII characters"),
        (None, r"idempotency_key = None \(NoneType\)"),
        ("", r"idempotency_key of 0 characters: must be text of 1-255"),
        ("k" * 256, r"idempotency_key of 256 characters: must be text of 1-255"),
        ("order-42\r\nX-Evil: 1", r"contains a line break \(CR\) at character 9"),
        ("order-🐈", r"contains a non-ASCII character \(U\+1F408 CAT\) at character 7"),
        ("order 42", r"contains a space at character 6"),
    ],
)
def test_idempotency_keys_that_cannot_be_a_header_are_refused(key: Any, problem: str) -> None:
    with pytest.raises(InputValidationError, match=problem) as info:
        create_task_call("gpt-image-2", {"prompt": "x"}, key)
    assert info.value.retryable is False


def test_a_255_character_key_is_fine() -> None:
    assert create_task_call("gpt-image-2", {}, "k" * 255).headers["Idempotency-Key"] == "k" * 255


@pytest.mark.parametrize("task_id", [".", ".."])
def test_dot_ids_never_reach_the_server(api: Api, emulator: MindVideoEmulator, task_id: str) -> None:
    with pytest.raises(InputValidationError):
        api.get_task(task_id)
    with pytest.raises(InputValidationError):
        api.get_task_events(task_id)
    assert sum(emulator.state.requests.values()) == 0


@pytest.mark.parametrize("key", [7, "line\nbreak", "zero\u200bwidth"])
def test_bad_idempotency_keys_never_reach_the_server(
    api: Api, emulator: MindVideoEmulator, sleeps: list[float], key: Any
) -> None:
    with pytest.raises(InputValidationError, match="idempotency_key"):
        api.create_task("gpt-image-2", {"prompt": "x"}, idempotency_key=key)
    assert sum(emulator.state.requests.values()) == 0
    assert sleeps == []  # not retried as if the service were unreachable

"""Regressions from an adversarial review: each was a hang, a raw error or a request that should not be sent."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection

from airflow_provider_mindvideo.client.catalog import validate_input
from airflow_provider_mindvideo.client.errors import InputValidationError, MindVideoError, RemoteTaskFailedError
from airflow_provider_mindvideo.client.protocol import RetryPolicy, get_task_call
from airflow_provider_mindvideo.client.settings import settings_from_connection
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.operators import MindVideoGenerateOperator
from airflow_provider_mindvideo.outputs.downloads import file_name
from tests.reliability.test_pay_once_invariant import TaskInstance


@pytest.mark.parametrize("task_id", ["a/b", "../x", "/", "task\n1", "task\x00"])
def test_task_ids_that_are_paths_are_refused_before_any_request(task_id: str) -> None:
    with pytest.raises(InputValidationError, match="mindvideo_task_id"):
        get_task_call(task_id)


def test_a_non_finite_number_is_refused_even_for_an_unknown_model() -> None:
    with pytest.raises(InputValidationError, match=r"input.seed = nan: not a JSON number"):
        validate_input("brand-new-model", {"prompt": "x", "seed": float("nan")}, allow_unknown_model=True)


@pytest.mark.parametrize("pattern", [".", "./", "sub/", "a\x00b"])
def test_file_names_that_are_not_files_are_refused(pattern: str) -> None:
    with pytest.raises(InputValidationError, match="file_name"):
        file_name(pattern, mindvideo_task_id="t", index=0, url="https://x/y.png", content_type="image/png")


def test_a_base_url_that_is_not_a_url_is_a_clear_error() -> None:
    conn = Connection(conn_id="bad", conn_type="mindvideo", host="http://[::1", password="mv_live_k")
    with pytest.raises(InputValidationError, match="is not a URL"):
        settings_from_connection(conn)


def test_a_pacing_turn_past_the_deadline_is_not_waited_for(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    conn = {"conn_type": "mindvideo", "host": emulator.base_url, "password": emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_PACED", json.dumps({**conn, "extra": {"max_requests_per_second": 0.05}}))
    hook = MindVideoHook("mindvideo_paced", retry_policy=RetryPolicy(max_retries=3, deadline=3, backoff=0.01))
    task = hook.create_task("gpt-image-2", {"prompt": "a slow turn"})  # takes the only turn for 20 s
    with pytest.raises(MindVideoError, match="max_requests_per_second"):
        hook.get_task(task.task_id)
    # What the hook chose to wait (recorded, not slept), not how long a busy machine took.
    assert sum(sleeps) < 3.0, sleeps
    assert emulator.state.requests["get"] == 0
    hook.close()


def test_the_events_of_a_failed_task_cost_a_bounded_time(emulator: MindVideoEmulator) -> None:
    emulator.script("doomed", "failed", queued_seconds=0, processing_seconds=0.05)
    emulator.add_fault("delay", route="events", seconds=60, times=100)
    operator = MindVideoGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        input={"prompt": "doomed"},
        deferrable=False,
        timeout=3,
        poll_interval=0.05,
        max_poll_interval=0.1,
    )
    with pytest.raises(RemoteTaskFailedError) as failed:
        operator.execute({"ti": TaskInstance(try_number=1)})  # type: ignore[arg-type]
    # Waited out, the events would have come (after 60 s) and been quoted: the fetch gave up by
    # its own bound (10 s), whatever the machine's load.
    assert "doomed" in str(failed.value) or "failed" in str(failed.value)
    assert "recent events" not in str(failed.value)
    operator.hook.close()

"""Every call ends by its deadline, whatever the server does: trickling bodies, long Retry-After waits.

No wall-clock bound is asserted (a busy machine stretches any of them): the hostile server here
would keep a call going for hours if its deadline were not enforced, so a call that ends at all,
with the error its deadline raises, is the proof; a broken deadline hangs the test until the
suite's timeout (pytest-timeout) fails it.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_mindvideo.client.errors import TransportError
from airflow_provider_mindvideo.client.protocol import RetryPolicy
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.triggers import TIMEOUT, MindVideoTaskTrigger
from tests.conftest import Api
from tests.servers import trickling_server

TASK = json.dumps({"task_id": "task_slow", "status": "queued", "padding": "x" * 100_000}).encode()
# Unbounded, the trickling answer below would take about three hours.
TRICKLE_SECONDS = 0.1
# Unbounded, these waits would outlast the suite's timeout.
LONG_RETRY_AFTER = "36000"


def point_default_connection_at(url: str, monkeypatch: pytest.MonkeyPatch, **extra: object) -> None:
    conn = {"conn_type": "mindvideo", "host": url, "password": "mv_test_emulator", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps(conn))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_trickling_answer_ends_at_the_calls_deadline(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with trickling_server(TASK, byte_every=TRICKLE_SECONDS) as url:
        point_default_connection_at(url, monkeypatch)
        api = Api(mode, MindVideoHook(retry_policy=RetryPolicy(max_retries=5, deadline=2.0, backoff=0.01)))
        with pytest.raises(TransportError, match=r"deadline of 2 s"):
            api.get_task("task_slow")
        api.hook.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_trickling_answer_ends_at_the_request_timeout(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with trickling_server(TASK, byte_every=TRICKLE_SECONDS) as url:
        point_default_connection_at(url, monkeypatch, timeout=1, max_retries=0)
        api = Api(mode, MindVideoHook())
        with pytest.raises(TransportError, match=r"no complete answer within 1 s"):
            api.get_task("task_slow")
        api.hook.close()


def run_trigger(trigger: MindVideoTaskTrigger) -> dict[str, object]:
    async def first_event() -> dict[str, object]:
        async for event in trigger.run():
            return event.payload  # type: ignore[no-any-return]
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first_event())


def test_the_trigger_deadline_bounds_a_trickling_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    with trickling_server(TASK, byte_every=TRICKLE_SECONDS) as url:
        point_default_connection_at(url, monkeypatch)
        event = run_trigger(MindVideoTaskTrigger.starting_now("task_slow", "mindvideo_default", 1.0, 1.0, 3.0))
    assert event["status"] == TIMEOUT


def test_the_trigger_deadline_bounds_a_long_retry_after(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = MindVideoHook().create_task("gpt-image-2", {"prompt": "a lighthouse"})
    emulator.add_fault("status", route="get", status=429, retry_after=LONG_RETRY_AFTER, times=10)
    event = run_trigger(MindVideoTaskTrigger.starting_now(task.task_id, "mindvideo_default", 1.0, 1.0, 3.0))
    assert event["status"] == TIMEOUT
    assert "429" in str(event["message"])  # the cause is named, not just "did not finish"


def test_the_worker_side_wait_deadline_bounds_a_long_retry_after(emulator: MindVideoEmulator) -> None:
    from airflow_provider_mindvideo.client.errors import MindVideoError
    from airflow_provider_mindvideo.operators import MindVideoGenerateOperator
    from tests.reliability.test_pay_once_invariant import TaskInstance

    emulator.add_fault("status", route="get", status=429, retry_after=LONG_RETRY_AFTER, times=100)
    operator = MindVideoGenerateOperator(
        task_id="generate", model="gpt-image-2", input={"prompt": "a patient heron"}, deferrable=False, timeout=2
    )
    with pytest.raises(MindVideoError, match="429"):
        operator.execute({"ti": TaskInstance(try_number=1)})  # type: ignore[arg-type]

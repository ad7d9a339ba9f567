"""``end_from_trigger`` on MindVideoTaskSensor: a success ends in the triggerer, nothing else does.

The trigger's event is what the triggerer acts on (``TaskSuccessEvent``: state and XComs, no
worker run); ``make e2e-distributed`` runs it through real triggerers on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from airflow.sdk import DAG, Asset, task
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.module_loading import import_string
from airflow.triggers.base import BaseTaskEndEvent, TaskSuccessEvent, TriggerEvent

from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.links import MindVideoOutputLink
from airflow_provider_mindvideo.outcomes import XCOM_TASK_KEY, task_from_event
from airflow_provider_mindvideo.sensors import MindVideoTaskSensor
from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger
from tests.dags.mindvideo_end_from_trigger_dags import END_FROM_TRIGGER

START = datetime(2026, 1, 1)


def events(trigger: MindVideoTaskTrigger) -> list[TriggerEvent]:
    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


def submit(prompt: str) -> str:
    with MindVideoHook() as hook:
        return hook.create_task("gpt-image-2", {"prompt": prompt}).task_id


@pytest.fixture(autouse=True)
def quick_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trigger's sleeps shortened (the emulator's clock still runs)."""
    real_sleep = asyncio.sleep

    async def short_sleep(seconds: float) -> None:
        await real_sleep(0.02)

    monkeypatch.setattr("airflow_provider_mindvideo.triggers.sleep", short_sleep)


def trigger_for(task_id: str, end_from_trigger: bool = True, **kwargs: Any) -> MindVideoTaskTrigger:
    return MindVideoTaskTrigger(
        task_id, poll_interval=0.05, max_poll_interval=0.1, end_from_trigger=end_from_trigger, **kwargs
    )


def test_a_success_ends_the_task_with_the_xcoms_a_worker_would_push(emulator: MindVideoEmulator) -> None:
    task_id = submit("a green frog")
    (ended,) = events(trigger_for(task_id))
    # What the sensor's execute_complete would push, from the event the trigger fires without the option.
    (resumed,) = events(trigger_for(task_id, end_from_trigger=False))
    finished = task_from_event(resumed.payload)

    assert isinstance(ended, TaskSuccessEvent)
    assert ended.xcoms == {
        "return_value": finished.output_urls,
        XCOM_TASK_KEY: finished.summary(),
        MindVideoOutputLink().xcom_key: finished.output_urls[0],
    }
    assert ended.xcoms[XCOM_TASK_KEY]["status"] == "succeeded"
    assert ended.xcoms["return_value"] == [f"{emulator.base_url}/files/{task_id}/0.png"]
    # The triggerer stores the event as JSON: it must survive that round trip unchanged.
    assert TaskSuccessEvent.model_validate_json(ended.model_dump_json()).xcoms == ended.xcoms
    assert emulator.api_key not in ended.model_dump_json()


@pytest.mark.parametrize(
    ("prompt", "outcome", "status"),
    [("doomed", "failed", "failed"), ("stopped", "cancelled", "cancelled"), ("empty", "no_output", "success")],
)
def test_anything_but_a_success_with_outputs_resumes_on_a_worker(
    emulator: MindVideoEmulator, prompt: str, outcome: str, status: str
) -> None:
    emulator.script(prompt, outcome, error="boom")
    (event,) = events(trigger_for(submit(prompt)))
    assert not isinstance(event, BaseTaskEndEvent)  # retries, soft_fail and EmptyOutputError are the worker's
    assert event.payload["status"] == status


def test_a_timeout_and_an_error_resume_on_a_worker(emulator: MindVideoEmulator) -> None:
    emulator.script("slow", "never")
    (timeout,) = events(trigger_for(submit("slow"), deadline=0.0))
    (error,) = events(trigger_for("task_gone"))
    assert not isinstance(timeout, BaseTaskEndEvent) and timeout.payload["status"] == "timeout"
    assert not isinstance(error, BaseTaskEndEvent) and error.payload["status"] == "error"


def test_the_option_is_stored_only_when_set() -> None:
    classpath, kwargs = trigger_for("task_1").serialize()
    assert kwargs["end_from_trigger"] is True
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)
    # Without it, a wait is stored as earlier releases stored it (their rows resume unchanged).
    _, plain = trigger_for("task_1", end_from_trigger=False).serialize()
    assert "end_from_trigger" not in plain


@dataclass
class Ti:
    map_index: int = -1


def deferred_trigger(sensor: MindVideoTaskSensor, map_index: int = -1) -> MindVideoTaskTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": Ti(map_index)})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, MindVideoTaskTrigger)
    return trigger


def test_the_sensor_defers_with_the_option(emulator: MindVideoEmulator) -> None:
    emulator.script("held", "never")
    task_id = submit("held")
    sensor = MindVideoTaskSensor(task_id="wait", mindvideo_task_id=task_id, deferrable=True, end_from_trigger=True)
    assert deferred_trigger(sensor).end_from_trigger
    plain = MindVideoTaskSensor(task_id="plain", mindvideo_task_id=task_id, deferrable=True)
    assert not deferred_trigger(plain).end_from_trigger


def test_the_sensor_ends_on_a_worker_when_only_a_worker_records_what_follows(emulator: MindVideoEmulator) -> None:
    emulator.script("held", "never")
    task_id = submit("held")
    with DAG("mv_end_here_or_not", schedule=None, start_date=START):
        mapped_over = MindVideoTaskSensor(
            task_id="mapped_over", mindvideo_task_id=task_id, deferrable=True, end_from_trigger=True
        )

        @task
        def show(url: str) -> None:
            print(url)

        show.expand(url=mapped_over.output)
        with_outlets = MindVideoTaskSensor(
            task_id="with_outlets",
            mindvideo_task_id=task_id,
            deferrable=True,
            end_from_trigger=True,
            outlets=[Asset("file:///tmp/mv-outlet")],
        )
        silent = MindVideoTaskSensor(
            task_id="silent", mindvideo_task_id=task_id, deferrable=True, end_from_trigger=True, do_xcom_push=False
        )
    # The downstream's length is recorded for an unmapped upstream only: a mapped one may end here.
    assert not deferred_trigger(mapped_over).end_from_trigger
    assert deferred_trigger(mapped_over, map_index=3).end_from_trigger
    assert not deferred_trigger(with_outlets).end_from_trigger
    assert not deferred_trigger(silent).end_from_trigger


def test_the_option_needs_a_deferred_wait() -> None:
    with pytest.raises(ValueError, match=r"end_from_trigger = True needs deferrable = True"):
        MindVideoTaskSensor(task_id="wait", mindvideo_task_id="task_1", deferrable=False, end_from_trigger=True)


def test_dag_test_resumes_an_end_from_trigger_success_on_the_worker(
    airflow_db: str, emulator: MindVideoEmulator
) -> None:
    """``dag.test()`` does not end tasks in the triggerer: it runs the trigger in line and resumes
    the task with the event's payload (the state). The sensor then looks the task up once."""
    dag_run = END_FROM_TRIGGER.test(run_conf={"prompt": "a red fox"})
    assert str(dag_run.state) == "success"
    with sqlite3.connect(os.path.join(airflow_db, "airflow.db")) as db:
        rows = db.execute(
            "select key, value from xcom where dag_id = ? and run_id = ? and task_id = 'wait' and map_index = 0",
            (dag_run.dag_id, dag_run.run_id),
        ).fetchall()
    xcom = {key: json.loads(value) for key, value in rows}
    task_id = emulator.state.snapshot()["tasks"][0]["task_id"]
    assert xcom["return_value"] == [f"{emulator.base_url}/files/{task_id}/0.png"]
    assert xcom[XCOM_TASK_KEY]["status"] == "succeeded"
    assert emulator.state.charged_tasks == 1

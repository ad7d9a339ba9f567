"""A DAG whose mapped sensor ends its waits in the triggerer (``end_from_trigger``), for ``dag.test()``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.sensors import MindVideoTaskSensor

with DAG(
    "mv_end_from_trigger", schedule=None, start_date=datetime(2026, 1, 1), params={"prompt": "a red fox"}
) as END_FROM_TRIGGER:

    @task
    def submit(params: dict[str, Any]) -> list[str]:
        with MindVideoHook() as hook:
            return [hook.create_task("gpt-image-2", {"prompt": params["prompt"]}).task_id]

    MindVideoTaskSensor.partial(
        task_id="wait", deferrable=True, end_from_trigger=True, poke_interval=0.1, max_poll_interval=0.3
    ).expand(mindvideo_task_id=submit())

"""A DAG for ``tests/test_hostile_dags.py``: generations and a wait against a server that echoes the key.

Every task uses the ``mindvideo_hostile`` connection, which the test points at its hostile API
(``tests/hostile_api.py``); each prompt picks how the server misbehaves.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_mindvideo.operators import MindVideoGenerateOperator, MindVideoSubmitOperator
from airflow_provider_mindvideo.sensors import MindVideoTaskSensor

PROMPTS = ("echo failed", "echo succeeded", "huge succeeded", "huge failed")

with DAG("mv_hostile_answers", schedule=None, start_date=datetime(2026, 1, 1)) as HOSTILE:
    for prompt in PROMPTS:
        MindVideoGenerateOperator(
            task_id=prompt.replace(" ", "_"),
            model="gpt-image-2",
            input={"prompt": prompt},
            mindvideo_conn_id="mindvideo_hostile",
            deferrable=True,
            poll_interval=0.1,
            max_poll_interval=0.2,
            max_generations=1,
            retries=0,
        )
    submitted = MindVideoSubmitOperator(
        task_id="submit", model="gpt-image-2", input={"prompt": "huge succeeded"}, mindvideo_conn_id="mindvideo_hostile"
    )
    MindVideoTaskSensor(
        task_id="wait",
        mindvideo_task_id=submitted.output,
        mindvideo_conn_id="mindvideo_hostile",
        deferrable=True,
        end_from_trigger=True,
        poke_interval=0.1,
        max_poll_interval=0.2,
        retries=0,
    )

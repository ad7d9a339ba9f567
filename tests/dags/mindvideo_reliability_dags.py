"""DAGs the fault matrix (``tests/reliability``) runs: one generating task, and submit + sensor.

Both use the ``mindvideo_reliability`` connection (short timeouts, few in-call retries), which
the matrix points at its own emulator; the sensor may use a second connection, so that the
wait can meet an outage the submit did not.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_mindvideo.operators import MindVideoGenerateOperator, MindVideoSubmitOperator
from airflow_provider_mindvideo.sensors import MindVideoTaskSensor

ARGS = {"retries": 2, "retry_delay": timedelta(0)}
#: How long one wait may last, in seconds: the matrix checks no run outlives it.
WAIT_TIMEOUT = 4.0


def _dag(dag_id: str) -> DAG:
    return DAG(
        dag_id, schedule=None, start_date=datetime(2026, 1, 1), params={"prompt": "reliability"}, default_args=ARGS
    )


with _dag("mv_reliability_generate") as generate_dag:
    MindVideoGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        input={"prompt": "{{ params.prompt }}"},
        mindvideo_conn_id="mindvideo_reliability",
        deferrable=True,
        poll_interval=0.1,
        max_poll_interval=0.3,
        timeout=WAIT_TIMEOUT,
    )

with _dag("mv_reliability_sensor") as sensor_dag:
    submit = MindVideoSubmitOperator(
        task_id="submit",
        model="gpt-image-2",
        input={"prompt": "{{ params.prompt }}"},
        mindvideo_conn_id="mindvideo_reliability",
    )
    MindVideoTaskSensor(
        task_id="wait",
        mindvideo_task_id=submit.output,
        mindvideo_conn_id="mindvideo_reliability_wait",
        deferrable=True,
        poke_interval=0.1,
        max_poll_interval=0.3,
        timeout=WAIT_TIMEOUT,
    )

#: The load test's fan-out: one DAG run, this many mapped generations.
LOAD = 100

with _dag("mv_load") as load_dag:
    MindVideoGenerateOperator.partial(
        task_id="generate",
        model="gpt-image-2",
        mindvideo_conn_id="mindvideo_load",
        deferrable=True,
        poll_interval=0.2,
        max_poll_interval=0.5,
        timeout=120,
    ).expand(input=[{"prompt": f"load test image {i}"} for i in range(LOAD)])

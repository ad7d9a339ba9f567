"""DAGs that name a model the catalogue does not know: a typo, and a model newer than it."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_mindvideo.operators import MindVideoGenerateOperator, MindVideoSubmitOperator

MODEL_DAGS: dict[str, DAG] = {}

with DAG("mv_misspelled_model", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    MindVideoSubmitOperator(task_id="submit", model="gpt-image2", input={"prompt": "a red fox"}, retries=2)
    MODEL_DAGS[dag.dag_id] = dag

with DAG("mv_newer_model", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    MindVideoGenerateOperator(
        task_id="generate",
        model="veo4-preview",
        input={"prompt": "dolphins", "camera": "drone"},
        allow_unknown_model=True,
        deferrable=False,
        poll_interval=0.1,
        max_poll_interval=0.3,
    )
    MODEL_DAGS[dag.dag_id] = dag

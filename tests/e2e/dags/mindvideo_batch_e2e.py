"""The batch DAG the real-process tests run (tests/e2e/test_batch_real_airflow.py): everything comes in through params."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator

with DAG(
    "mindvideo_batch_e2e",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "inputs_path": Param("", type="string"),
        "download_to": Param("", type="string", description="empty: no downloads"),
        "conn_id": Param("mindvideo_default", type="string"),
    },
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
):
    MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs_path="{{ params.inputs_path }}",
        download_to="{{ params.download_to }}",
        mindvideo_conn_id="{{ params.conn_id }}",
        max_active=5,
        poll_interval=1.0,
        max_poll_interval=2.0,
        # Checkpoints of the manifest come with each progress line: a restarted triggerer reads one.
        progress_interval=1.0,
    )

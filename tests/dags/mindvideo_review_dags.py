"""DAGs the review tests run with ``dag.test()`` against the emulator (``tests/test_review_sources.py``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator

#: Three batch items; the one with "flaky" fails once, so that its row succeeds at key generation 1.
BATCH_PROMPTS = [{"prompt": "review batch fox"}, {"prompt": "review batch flaky whale"}, {"prompt": "review batch tea"}]

with DAG(
    "mv_review_batch",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"result_path": "file:///tmp/unused.jsonl"},
    default_args={"retries": 2, "retry_delay": timedelta(0)},
) as REVIEW_BATCH:
    MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs=BATCH_PROMPTS,
        result_path="{{ params.result_path }}",
        poll_interval=0.05,
        max_poll_interval=0.2,
        progress_interval=0.5,
    )

"""TaskFlow style: a ``@task`` builds the prompts, MindVideoGenerateOperator maps over them.

One task per prompt submits and waits (deferred), so the mapped fan-out holds no worker
slots while MindVideo works. Each returns its output URLs; ``collect`` gets them all.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

from airflow_provider_mindvideo.operators import MindVideoGenerateOperator


@dag(
    dag_id="mindvideo_taskflow",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # Retries are free: the Idempotency-Key is derived from the DAG run, so a retry gets the
    # same remote task back. They also recover the rare task Airflow fails at a quick resume
    # (docs/troubleshooting.md, "finished with state success, but ... is queued").
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
    tags=["mindvideo", "example"],
)
def mindvideo_taskflow() -> None:
    @task
    def build_prompts() -> list[dict[str, Any]]:
        seasons = ["spring", "summer", "autumn", "winter"]
        return [{"prompt": f"The same oak tree in {season}, watercolour", "size": "1:1"} for season in seasons]

    images = MindVideoGenerateOperator.partial(
        task_id="generate", model="gpt-image-2", deferrable=True, poll_interval=2
    ).expand(input=build_prompts())

    @task
    def collect(urls: list[list[str]]) -> list[str]:
        return [url for batch in urls for url in batch]

    collect(images.output)


mindvideo_taskflow()

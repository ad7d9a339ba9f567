"""DAGs for `make e2e-distributed` (scripts/e2e_distributed/deployment.py copies this file into the
deployment's DAG folder, next to the example content pipeline). Prompts come from the run's
config, so each scenario chooses how many. The rolling restart's DAG has a file of its own
(e2e_distributed_waits_dags.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator, MindVideoGenerateOperator

PARAMS = {"prompts": Param(["a lighthouse"], type="array", minItems=1)}
# A killed worker's task is retried: each retry replays its Idempotency-Key, so it pays once.
DEFAULTS = {"retries": 3, "retry_delay": timedelta(seconds=5)}


def _pooled_generations(dag_id: str, pool: str | None) -> None:
    """Scenario 2: one generation per prompt on the connection capped per process (mindvideo_capped)."""

    @dag(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), params=PARAMS, default_args=DEFAULTS)
    def generations() -> None:
        @task
        def inputs(params: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"prompt": prompt, "size": "1:1"} for prompt in params["prompts"]]

        extra: dict[str, Any] = {"pool": pool} if pool else {}
        MindVideoGenerateOperator.partial(
            task_id="generate",
            model="gpt-image-2",
            mindvideo_conn_id="mindvideo_capped",
            deferrable=True,
            poll_interval=1,
            max_poll_interval=2,
            **extra,
        ).expand(input=inputs())

    generations()


_pooled_generations("mindvideo_dist_unpooled", None)
_pooled_generations("mindvideo_dist_pooled", "mindvideo")


@dag(
    dag_id="mindvideo_dist_batch",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    params={**PARAMS, "destination": Param("file:///tmp/mindvideo-batch", type="string")},
    default_args=DEFAULTS,
)
def batch() -> None:
    """Scenario 1b: one batch task for every prompt, created and waited for in the triggerer."""

    @task
    def inputs(params: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"prompt": prompt, "size": "1:1"} for prompt in params["prompts"]]

    MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs=inputs(),
        download_to="{{ params.destination }}",
        poll_interval=5,
        max_poll_interval=20,
        progress_interval=10,
    )


batch()

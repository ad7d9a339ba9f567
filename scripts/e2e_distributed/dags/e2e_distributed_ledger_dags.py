"""DAGs for `make e2e-distributed`'s spend-ledger scenario (scripts/e2e_distributed/ledger.py): a
mapped Generate and two batches, three DAGs on one MindVideo connection whose daily account
budget pays for about 60 % of their items. Prompts come from the run's config.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator, MindVideoGenerateOperator

CONN_ID = "mindvideo_budgeted"
PARAMS = {"prompts": Param(["a lighthouse"], type="array", minItems=1)}
# A killed worker's task is retried and replays its key: the same ledger row, paid once. A
# refusal by the budget is not retried (BudgetWindowExceededError fails the task at once).
DEFAULTS = {"retries": 3, "retry_delay": timedelta(seconds=5)}


@dag(
    dag_id="mindvideo_dist_ledger_generate",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    params=PARAMS,
    default_args=DEFAULTS,
)
def ledger_generate() -> None:
    """One deferrable generation per prompt; those the budget refuses fail, saying why."""

    @task
    def inputs(params: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"prompt": prompt, "size": "1:1"} for prompt in params["prompts"]]

    MindVideoGenerateOperator.partial(
        task_id="generate",
        model="gpt-image-2",
        mindvideo_conn_id=CONN_ID,
        deferrable=True,
        poll_interval=1,
        max_poll_interval=2,
    ).expand(input=inputs())


def _ledger_batch(dag_id: str) -> None:
    """A batch on the budgeted connection; items the budget refuses are `over_budget` in its manifest."""

    @dag(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), params=PARAMS, default_args=DEFAULTS)
    def ledger_batch() -> None:
        @task
        def inputs(params: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"prompt": prompt, "size": "1:1"} for prompt in params["prompts"]]

        MindVideoBatchGenerateOperator(
            task_id="generate",
            model="gpt-image-2",
            mindvideo_conn_id=CONN_ID,
            inputs=inputs(),
            # A few at a time, so that the batch is still creating when its triggerer is killed.
            max_active=4,
            # The budget refuses some items by design: the task succeeds, its manifest says which and why.
            max_failed=1.0,
            poll_interval=1,
            max_poll_interval=2,
            progress_interval=5,
        )

    ledger_batch()


ledger_generate()
_ledger_batch("mindvideo_dist_ledger_batch_a")
_ledger_batch("mindvideo_dist_ledger_batch_b")

"""DAGs whose creates count against the connection's budgets (its extras), for ``dag.test()``.

``mv_budget_refusal``: three mapped Generates against a day budget that fits two. ``mv_budget_wait``:
a Generate that spends the day, then one that waits for the day's reset (``on_budget_exhausted="wait"``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_mindvideo.operators import MindVideoGenerateOperator

QUICK = {"poll_interval": 0.05, "max_poll_interval": 0.1, "timeout": 60, "deferrable": False}

with DAG("mv_budget_refusal", schedule=None, start_date=datetime(2026, 1, 1)) as BUDGET_REFUSAL:
    MindVideoGenerateOperator.partial(
        task_id="generate", model="gpt-image-2", retries=2, retry_delay=timedelta(seconds=0), **QUICK
    ).expand(input=[{"prompt": f"budget picture {n}"} for n in range(3)])

with DAG("mv_budget_wait", schedule=None, start_date=datetime(2026, 1, 1)) as BUDGET_WAIT:
    first = MindVideoGenerateOperator(task_id="first", model="gpt-image-2", input={"prompt": "today"}, **QUICK)
    second = MindVideoGenerateOperator(
        task_id="second", model="gpt-image-2", input={"prompt": "after the reset"}, on_budget_exhausted="wait", **QUICK
    )
    first >> second

DAGS = {dag.dag_id: dag for dag in (BUDGET_REFUSAL, BUDGET_WAIT)}

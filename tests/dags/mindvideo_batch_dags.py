"""DAGs the batch tests run with ``dag.test()`` against the emulator (``tests/test_batch_dags.py``).

Prompts carry the scenario: the tests script the emulator by prompt text, e.g. prompts with
"flaky" fail once. Inputs files and result folders come in through params.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator

START = datetime(2026, 1, 1)
FAST = {"poll_interval": 0.05, "max_poll_interval": 0.2, "progress_interval": 0.5}
DOWNLOADS = "file://" + os.environ.get("MINDVIDEO_TEST_DOWNLOADS", os.path.join(tempfile.gettempdir(), "mv-downloads"))
IMAGE_COST = 0.0135
#: Six items, two of them ("flaky") failing once at MindVideo.
RETRY_PROMPTS = [{"prompt": f"{'flaky' if i in (1, 4) else 'steady'} batch image {i}"} for i in range(6)]
#: Ten items under a ceiling of five and a half images.
BUDGET_PROMPTS = [{"prompt": f"budget image {i}"} for i in range(10)]
BUDGET = 5.5 * IMAGE_COST

DAGS: dict[str, DAG] = {}


def _dag(dag_id: str, **kwargs: object) -> DAG:
    params = {"inputs_path": "", "result_path": "file:///tmp/unused.jsonl"}
    dag = DAG(dag_id, schedule=None, start_date=START, catchup=False, params=params, **kwargs)  # type: ignore[arg-type]
    DAGS[dag_id] = dag
    return dag


with _dag("mv_batch_retry", default_args={"retries": 2, "retry_delay": timedelta(0)}):
    MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs=RETRY_PROMPTS,
        result_path="{{ params.result_path }}",
        download_to=DOWNLOADS + "/batch",
        **FAST,
    )

with _dag("mv_batch_budget_tolerated", default_args={"retries": 2, "retry_delay": timedelta(0)}):
    MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs=BUDGET_PROMPTS,
        result_path="{{ params.result_path }}",
        max_cost=BUDGET,
        max_failed=0.5,
        **FAST,
    )

with _dag("mv_batch_budget_strict", default_args={"retries": 2, "retry_delay": timedelta(0)}):
    MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs=BUDGET_PROMPTS,
        result_path="{{ params.result_path }}",
        max_cost=BUDGET,
        **FAST,
    )

with _dag("mv_batch_from_file", default_args={"retries": 2, "retry_delay": timedelta(0)}):
    MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs_path="{{ params.inputs_path }}",
        result_path="{{ params.result_path }}",
        **FAST,
    )

with _dag("mv_batch_storm"):
    MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs=[{"prompt": f"storm image {i}"} for i in range(12)],
        result_path="{{ params.result_path }}",
        max_active=12,
        **FAST,
    )

"""DAGs for the download guard's tests (``tests/test_download_dags.py``): who may download from private addresses.

URLs and folder come from the run's conf. Retries are on, so that a test can see a refusal
is not retried.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_mindvideo.operators import MindVideoDownloadOperator, MindVideoGenerateOperator

ARGS = {"retries": 2, "retry_delay": timedelta(0)}
DAGS: dict[str, DAG] = {}


def _dag(dag_id: str) -> DAG:
    dag = DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        default_args=ARGS,
        render_template_as_native_obj=True,
        params={"prompt": "a red fox", "urls": [], "folder": "file:///tmp/mv-guard"},
    )
    DAGS[dag_id] = dag
    return dag


def _download(**kwargs: object) -> MindVideoDownloadOperator:
    return MindVideoDownloadOperator(
        task_id="download",
        urls="{{ params.urls }}",
        destination="{{ params.folder }}",
        file_name="{index}{ext}",
        **kwargs,  # type: ignore[arg-type]
    )


with _dag("mv_guard_download_default"):
    _download()

with _dag("mv_guard_download_allowed"):
    _download(allow_private_urls=True)

with _dag("mv_guard_download_refused"):
    _download(allow_private_urls=False)

with _dag("mv_guard_generate_refused"):
    MindVideoGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        input={"prompt": "{{ params.prompt }}"},
        deferrable=False,
        poll_interval=0.1,
        max_poll_interval=0.3,
        download_to="{{ params.folder }}",
        download_allow_private_urls=False,
    )

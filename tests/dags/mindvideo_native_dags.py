"""DAGs for what Airflow users expect of a provider (``tests/test_native.py``, ``tests/test_openlineage.py``).

Inputs from a ``.json.j2`` file next to this DAG, templated connection ids, extra links,
lineage, and what a killed wait leaves running. The prompt, folders and connection id come
from the run's conf.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_mindvideo.operators import (
    MindVideoDownloadOperator,
    MindVideoGenerateOperator,
    MindVideoSubmitOperator,
)
from airflow_provider_mindvideo.sensors import MindVideoTaskSensor

FAST = {"poll_interval": 0.1, "max_poll_interval": 0.3}
#: A reference image the lineage tests expect as the generation's input.
REFERENCE = "https://images.example.com/refs/fox.png?signature=abc"
DAGS: dict[str, DAG] = {}


# The suite's DAGs folder holds links to this file, and Airflow looks for templates beside the
# file as it was loaded: name this folder itself, so the input files next to it are found either way.
HERE = os.path.dirname(os.path.realpath(__file__))


def _dag(dag_id: str, **kwargs: object) -> DAG:
    params = {"prompt": "a red fox", "folder": "file:///tmp/mv-native", "conn": "mindvideo_default", "copies": ""}
    dag = DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        params=params,
        template_searchpath=[HERE],
        **kwargs,  # type: ignore[arg-type]
    )
    DAGS[dag_id] = dag
    return dag


with _dag("mv_input_file", default_args={"retries": 2, "retry_delay": timedelta(0)}):
    # mindvideo_input.json.j2 sits next to this file.
    MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input="mindvideo_input.json.j2")

with _dag("mv_input_file_broken", default_args={"retries": 2, "retry_delay": timedelta(0)}):
    MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input="mindvideo_input_broken.json")

for _broken in ("bad_filter", "bad_syntax"):  # Jinja that does not render: an unknown filter, a brace missing
    with _dag(f"mv_input_file_{_broken}", default_args={"retries": 2, "retry_delay": timedelta(0)}):
        MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input=f"mindvideo_input_{_broken}.json.j2")

with _dag("mv_input_text_ending_in_json"):
    MindVideoSubmitOperator(
        task_id="submit", model="gpt-image-2", input={"prompt": "{{ params.prompt }} saved as fox.json"}
    )

with _dag("mv_templated_conn"):
    submit = MindVideoSubmitOperator(
        task_id="submit",
        model="gpt-image-2",
        input={"prompt": "{{ params.prompt }}"},
        mindvideo_conn_id="{{ params.conn }}",
    )
    MindVideoTaskSensor(
        task_id="wait", mindvideo_task_id=submit.output, mindvideo_conn_id="{{ params.conn }}", poke_interval=0.1
    )

with _dag("mv_generate_and_copy"):
    generate = MindVideoGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        input={"prompt": "{{ params.prompt }}", "image_urls": [REFERENCE]},
        deferrable=True,
        download_to="{{ params.folder }}",
        **FAST,
    )
    MindVideoDownloadOperator(
        task_id="copy", urls=generate.output, destination="{{ params.copies }}", file_name="copy_{index}{ext}"
    )

with _dag("mv_generate_waits"):
    MindVideoGenerateOperator(
        task_id="generate", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"}, deferrable=True, **FAST
    )

with _dag("mv_generate_fails"):
    MindVideoGenerateOperator(
        task_id="generate", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"}, deferrable=True, **FAST
    )

with _dag("mv_generate_killed"):
    # execution_timeout is how Airflow kills a try on the worker: it calls on_kill, then fails the try.
    MindVideoGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        input={"prompt": "{{ params.prompt }}"},
        deferrable=False,
        execution_timeout=timedelta(seconds=1),
        **FAST,
    )

with _dag("mv_sensor_killed"):
    submit = MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"})
    MindVideoTaskSensor(
        task_id="wait",
        mindvideo_task_id=submit.output,
        deferrable=False,
        poke_interval=0.1,
        execution_timeout=timedelta(seconds=1),
    )

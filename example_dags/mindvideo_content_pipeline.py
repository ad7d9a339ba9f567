"""A content pipeline: prompts fan out with dynamic task mapping, each is generated with
gpt-image-2 and waited for in the triggerer, the images are saved into our own storage, and a
final task gathers files and costs.

It runs only when you trigger it (``schedule=None``): one run, one image per prompt (5 by
default), paid for once. To make it daily, set ``schedule="@daily"``, but know that Airflow
then starts a run for the latest day as soon as you unpause the DAG (``catchup=False`` still
runs the most recent interval): unpausing and triggering once more pays for two runs.

Prompts and the destination folder come from the DAG's params (trigger with a config to
override them). Retries are safe: each mapped submit derives its Idempotency-Key from the DAG
run, so a retried, cleared or crashed submit never pays for a second image, and a re-run save
keeps files it already stored. Each run adds one event for the destination to the
``mindvideo-content-media`` asset alias: schedule a DAG on it to publish new media.

Against the bundled emulator, whose images are served on 127.0.0.1, let the downloads reach
it: ``AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS=true`` (``make demo`` does).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, AssetAlias, dag, get_current_context, task
from mindvideo_example_prompts import build_inputs, prompt_params

from airflow_provider_mindvideo.operators import MindVideoDownloadOperator, MindVideoSubmitOperator
from airflow_provider_mindvideo.sensors import MindVideoTaskSensor

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = [
    "A red fox in fresh snow at sunrise, watercolour",
    "一只橘猫坐在窗台上看夕阳,水彩画风格",
    "A blue whale gliding under the northern lights",
    "A green tea field on misty hills, photo",
    "A purple hot-air balloon over a desert canyon",
]
CONTENT_MEDIA = AssetAlias("mindvideo-content-media")


@dag(
    dag_id="mindvideo_content_pipeline",
    # Not "@daily" for a first try: unpausing a scheduled DAG starts (and pays for) a run at once.
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    params=prompt_params(
        DEFAULT_PROMPTS,
        size="16:9",
        destination="file:///tmp/mindvideo-content",
        destination_help="Folder for the images: file:///..., s3://bucket/prefix, gs://...",
    ),
    tags=["mindvideo", "example"],
)
def mindvideo_content_pipeline() -> None:
    inputs = build_inputs()
    submitted = MindVideoSubmitOperator.partial(task_id="submit", model="gpt-image-2").expand(input=inputs)
    generated = MindVideoTaskSensor.partial(
        task_id="wait", deferrable=True, poke_interval=2, max_poll_interval=30, timeout=3600
    ).expand(mindvideo_task_id=submitted.output)
    saved = MindVideoDownloadOperator.partial(
        task_id="save",
        destination="{{ params.destination }}",
        # Files are named after the MindVideo task: the submit with the same map index made it.
        mindvideo_task_id="{{ ti.xcom_pull(task_ids='submit', map_indexes=ti.map_index) }}",
    ).expand(urls=generated.output)

    # One asset event per run, from one task: mapped tasks adding the same new asset to an
    # alias at the same moment can collide in Airflow's database (see the download docs).
    @task(outlets=[CONTENT_MEDIA])
    def summarize(inputs: list[dict[str, Any]], files: list[list[str]]) -> dict[str, Any]:
        context = get_current_context()
        ti = context["ti"]
        indexes = list(range(len(inputs)))
        records = ti.xcom_pull(task_ids="wait", key="mindvideo_task", map_indexes=indexes)
        images = [
            {
                "prompt": item["prompt"],
                "task_id": record["task_id"],
                "status": record["status"],
                "cost": record["cost_actual"],
                "urls": record["output_urls"],
                "files": stored,
            }
            for item, record, stored in zip(inputs, records, files, strict=True)
        ]
        total = round(sum(image["cost"] or 0 for image in images), 6)
        saved = sum(len(f) for f in files)
        log.info("Generated and saved %d image(s) for a total cost of %s", saved, total)
        for image in images:
            log.info("%s -> %s", image["prompt"], ", ".join(image["files"]))
        destination = Asset(context["params"]["destination"])
        context["outlet_events"][CONTENT_MEDIA].add(destination, extra={"files": saved, "total_cost": total})
        return {"images": images, "total_cost": total}

    summarize(inputs, saved.output)


mindvideo_content_pipeline()

"""Generate, save, let a person review, publish only what they approved.

Each prompt is generated with gpt-image-2 (mapped, waiting in the triggerer) and saved under
``<destination>/generated``. The review task then waits on Airflow's "Required actions" page:
the reviewer sees every image with its prompt, model and cost and approves or rejects each.
Rejected images are generated again (one new charge each, none for the approved) and shown in
a second round; what round 2 rejects stays rejected. More prompts than ``page_size`` (12) are
reviewed on several pages, each its own entry on the Required actions page. Finally the approved files -- and only
those -- are copied to ``<destination>/published`` with one asset event for them.

Runs only when triggered. Against the bundled emulator, whose images are served on 127.0.0.1,
let downloads reach it: ``AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS=true``. The reviewer's browser
loads the images from their output URLs, so it must be able to reach them too.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, AssetAlias, ObjectStoragePath, dag, get_current_context, task
from mindvideo_example_prompts import build_inputs, prompt_params

from airflow_provider_mindvideo.operators import MindVideoGenerateOperator, review_rounds

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = [
    "A red fox in fresh snow at sunrise, watercolour",
    "A blue whale gliding under the northern lights",
    "A green tea field on misty hills, photo",
]
PUBLISHED_MEDIA = AssetAlias("mindvideo-published-media")


@dag(
    dag_id="mindvideo_review_pipeline",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    params=prompt_params(
        DEFAULT_PROMPTS,
        size="1:1",
        destination="file:///tmp/mindvideo-review",
        destination_help="Folder for generated/ and published/: file:///..., s3://bucket/prefix, ...",
    ),
    tags=["mindvideo", "example", "review"],
)
def mindvideo_review_pipeline() -> None:
    inputs = build_inputs()
    generated = MindVideoGenerateOperator.partial(
        task_id="generate",
        model="gpt-image-2",
        deferrable=True,
        poll_interval=2,
        download_to="{{ params.destination }}/generated",
    ).expand(input=inputs)

    reviewed = review_rounds(
        task_id="review",
        max_rounds=2,
        generate_task_id="generate",
        inputs=inputs,
        regenerate_rejected=True,
        download_to="{{ params.destination }}/generated",
        response_timeout=timedelta(hours=24),
        on_timeout="approve_none",
    )
    generated >> reviewed[0]

    @task(outlets=[PUBLISHED_MEDIA])
    def publish(review: dict[str, Any]) -> list[str]:
        context = get_current_context()
        published = ObjectStoragePath(f"{context['params']['destination']}/published")
        published.mkdir(parents=True, exist_ok=True)
        paths = []
        for source in map(ObjectStoragePath, review["approved_files"]):
            target = published / source.name
            with source.open("rb") as reader, target.open("wb") as writer:
                shutil.copyfileobj(reader, writer)
            paths.append(str(target))
        log.info("Published %d approved file(s); %d rejected", len(paths), len(review["rejected"]))
        context["outlet_events"][PUBLISHED_MEDIA].add(
            Asset(str(published)), extra={"files": len(paths), "task_ids": review["approved_task_ids"]}
        )
        return paths

    publish(reviewed[-1].output)


mindvideo_review_pipeline()

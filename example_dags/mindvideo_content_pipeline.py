"""A daily content pipeline: prompts fan out with dynamic task mapping, each is generated with
gpt-image-2 and waited for in the triggerer, and a final task gathers URLs and costs.

Prompts come from the DAG's params (trigger with a config to override them). Retries are
safe: each mapped submit derives its Idempotency-Key from the DAG run, so a retried, cleared
or crashed submit never pays for a second image.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from airflow_provider_mindvideo.operators import MindVideoSubmitOperator
from airflow_provider_mindvideo.sensors import MindVideoTaskSensor

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = [
    "A red fox in fresh snow at sunrise, watercolour",
    "一只橘猫坐在窗台上看夕阳,水彩画风格",
    "A blue whale gliding under the northern lights",
    "A green tea field on misty hills, photo",
    "A purple hot-air balloon over a desert canyon",
]


@dag(
    dag_id="mindvideo_content_pipeline",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    params={
        "prompts": Param(DEFAULT_PROMPTS, type="array", minItems=1, description="One image per prompt"),
        "size": Param("16:9", type="string", description="Aspect ratio, e.g. 16:9, 1:1, 9:16"),
    },
    tags=["mindvideo", "example"],
)
def mindvideo_content_pipeline() -> None:
    @task
    def build_inputs(params: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"prompt": prompt, "size": params["size"]} for prompt in params["prompts"]]

    inputs = build_inputs()
    submitted = MindVideoSubmitOperator.partial(task_id="submit", model="gpt-image-2").expand(input=inputs)
    generated = MindVideoTaskSensor.partial(
        task_id="wait", deferrable=True, poke_interval=2, max_poll_interval=30, timeout=3600
    ).expand(mindvideo_task_id=submitted.output)

    @task
    def summarize(inputs: list[dict[str, Any]], urls: list[list[str]]) -> dict[str, Any]:
        ti = get_current_context()["ti"]
        records = ti.xcom_pull(task_ids="wait", key="mindvideo_task", map_indexes=list(range(len(inputs))))
        images = [
            {
                "prompt": item["prompt"],
                "task_id": record["task_id"],
                "status": record["status"],
                "cost": record["cost_actual"],
                "urls": record["output_urls"],
            }
            for item, record in zip(inputs, records, strict=True)
        ]
        total = round(sum(image["cost"] or 0 for image in images), 6)
        log.info("Generated %d image(s) for a total cost of %s", sum(len(u) for u in urls), total)
        for image in images:
            log.info("%s -> %s", image["prompt"], ", ".join(image["urls"]))
        return {"images": images, "total_cost": total}

    summarize(inputs, generated.output)


mindvideo_content_pipeline()

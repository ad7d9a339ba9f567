"""Image-to-image rework with gpt-image-2: reference images (a hosted URL and a small inline
data URI) plus a mask that marks the area to repaint.

Prefer hosted URLs for real work: data URIs travel inside every request (and its retries).
Replace ``reference_url`` with an image MindVideo can download.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from airflow_provider_mindvideo.operators import MindVideoGenerateOperator

# An 8x8 white PNG, inline: enough for a mask or a tiny colour reference.
SMALL_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAIAQAAAADLhcYYAAAAC0lEQVR4nGNgQAcAABAAAfEbzqkAAAAASUVORK5CYII="
)


@dag(
    dag_id="mindvideo_image_edit",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # Retries are free: the Idempotency-Key is derived from the DAG run, so a retry gets the
    # same remote task back. They also recover the rare task Airflow fails at a quick resume
    # (docs/troubleshooting.md, "finished with state success, but ... is queued").
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
    params={
        "reference_url": Param("https://example.com/reference/living-room.png", type="string", format="uri"),
        "instruction": Param("Repaint the wall in warm terracotta, keep the furniture", type="string"),
    },
    tags=["mindvideo", "example"],
)
def mindvideo_image_edit() -> None:
    MindVideoGenerateOperator(
        task_id="rework",
        model="gpt-image-2",
        input={
            "prompt": "{{ params.instruction }}",
            "image_urls": ["{{ params.reference_url }}", SMALL_PNG],
            "mask_url": SMALL_PNG,
            "size": "auto",
            "resolution": "2k",
        },
        deferrable=True,
        poll_interval=3,
    )


mindvideo_image_edit()

"""A video with veo3-1-fast: a long wait, done in the triggerer.

Video jobs take minutes. The trigger checks after ``poll_interval`` seconds, then spaces its
checks out as the wait grows (a quarter of the time waited so far, at most
``max_poll_interval``), so a ten-minute job costs a handful of requests. ``timeout`` bounds
the wait; a timed-out try is retried and finds the same remote job (nothing is paid twice).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from airflow_provider_mindvideo.operators import MindVideoGenerateOperator


@dag(
    dag_id="mindvideo_video",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"prompt": Param("Dolphins leaping through a turquoise sea, cinematic", type="string")},
    tags=["mindvideo", "example"],
)
def mindvideo_video() -> None:
    MindVideoGenerateOperator(
        task_id="generate_video",
        model="veo3-1-fast",
        input={"prompt": "{{ params.prompt }}", "aspect_ratio": "16:9", "resolution": "720p", "duration": 8},
        deferrable=True,
        poll_interval=15,
        max_poll_interval=120,
        timeout=timedelta(minutes=30),
        retries=1,
        retry_delay=timedelta(minutes=1),
    )


mindvideo_video()

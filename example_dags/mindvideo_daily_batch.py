"""A daily catalogue refresh: every prompt of a CSV file generated in ONE task, outputs saved, one asset event.

The prompts come from a CSV file in object storage (a header row naming the input fields,
one image per row; a ``model`` column could name a row's own model). By default it is the
small file beside this DAG (``file://``, so the example runs offline against the emulator);
point the ``prompts_csv`` param at ``s3://...`` or ``gs://...`` (with ``storage_conn_id``) for
the real catalogue.

:class:`MindVideoBatchGenerateOperator` checks every row before anything is sent, creates and
waits for all of them in the triggerer (one deferral, no worker slot held), pays once per row
however often the task is retried, cleared or its triggerer restarted, stops creating before
``max_cost`` could be passed, and saves every image into ``destination/<date>`` (the day the
run was due: a manual trigger files under the day it was triggered). The manifest
(one JSON row per prompt: task id, status, cost, files, error) is written beside the images;
XCom holds only the summary. One event for the day's folder goes to the
``mindvideo-daily-media`` asset alias: schedule a publishing DAG on it.

Why not a mapped task per prompt: for a few dozen prompts that is fine (and shows one box
per prompt in the grid), but each prompt then costs three task instances of scheduling, and
Airflow maps at most ``[core] max_map_length`` (1,024) of them. See ``docs/operators/batch.md``.

Daily at 06:00 UTC, but unpausing it does not start a run for a day already begun
(``run_immediately=timedelta(0)``, no ``start_date``): the first run is the next 06:00.
Against the bundled emulator, whose images are served on 127.0.0.1, let the downloads reach
it: ``AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS=true``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import AssetAlias, Param, dag
from airflow.timetables.trigger import CronTriggerTimetable

from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator

#: The prompts this example ships with, as an object-storage URL.
DEFAULT_PROMPTS_CSV = (Path(__file__).resolve().parent / "data" / "mindvideo_daily_prompts.csv").as_uri()
DAILY_MEDIA = AssetAlias("mindvideo-daily-media")
#: The most one day's run may spend, all its tries together, in the API's cost unit.
MAX_COST = 5.0


@dag(
    dag_id="mindvideo_daily_batch",
    # 06:00 UTC every day. timedelta(0): never run a slot that has already passed when the DAG
    # is unpaused (the default runs it if it began less than 2.4 hours ago, and pays for it).
    schedule=CronTriggerTimetable("0 6 * * *", timezone="UTC", run_immediately=timedelta(0)),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "prompts_csv": Param(
            DEFAULT_PROMPTS_CSV,
            type="string",
            description="CSV of prompts (header: prompt,size,...): file:///..., s3://bucket/key.csv, gs://...",
        ),
        "destination": Param(
            "file:///tmp/mindvideo-daily",
            type="string",
            description="Folder for the images; each day's go into <destination>/<date>",
        ),
    },
    tags=["mindvideo", "example"],
)
def mindvideo_daily_batch() -> None:
    MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs_path="{{ params.prompts_csv }}",
        # The day the run was due, not `ds`: a manual run (UI, `airflow dags trigger`, the REST API)
        # has no logical date in Airflow 3, and `ds` is undefined for it. For a scheduled run
        # run_after is the 06:00 slot itself, so both kinds file under the same day.
        download_to="{{ params.destination }}/{{ dag_run.run_after | ds }}",
        result_path="{{ params.destination }}/{{ dag_run.run_after | ds }}/manifest.jsonl",
        max_cost=MAX_COST,
        # A catalogue tolerates a few misses: the task succeeds and the manifest names them.
        max_failed=0.1,
        max_active=50,
        outlets=[DAILY_MEDIA],
    )


mindvideo_daily_batch()

"""Every example DAG parses, and runs to success against the emulator (``dag.test()``)."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag

from airflow_provider_mindvideo.batch.plan import load_manifest
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from example_dags.mindvideo_content_pipeline import DEFAULT_PROMPTS, mindvideo_content_pipeline
from example_dags.mindvideo_daily_batch import DEFAULT_PROMPTS_CSV, mindvideo_daily_batch
from example_dags.mindvideo_image_edit import mindvideo_image_edit
from example_dags.mindvideo_taskflow import mindvideo_taskflow
from example_dags.mindvideo_video import mindvideo_video
from tests.test_dags import Run

EXAMPLES = Path(__file__).resolve().parents[1] / "example_dags"


def test_examples_parse_without_errors() -> None:
    bag = DagBag(str(EXAMPLES))
    assert bag.import_errors == {}
    assert sorted(bag.dags) == [
        "mindvideo_content_pipeline",
        "mindvideo_daily_batch",
        "mindvideo_image_edit",
        "mindvideo_review_pipeline",
        "mindvideo_taskflow",
        "mindvideo_video",
    ]
    for dag in bag.dags.values():
        assert "mindvideo" in dag.tags


def test_unpausing_an_example_starts_no_run() -> None:
    # A scheduled DAG with catchup=False runs its latest interval as soon as it is unpaused:
    # with a real key, unpausing and triggering the pipeline paid for 10 images instead of 5.
    from airflow.sdk import timezone
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    now = timezone.utcnow()
    for dag_id, dag in DagBag(str(EXAMPLES)).dags.items():
        scheduled = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        restriction = TimeRestriction(
            earliest=scheduled.start_date, latest=scheduled.end_date, catchup=scheduled.catchup
        )
        first = scheduled.timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
        assert first is None or first.run_after > now, f"{dag_id} would start a run at {first.run_after} when unpaused"


def fast(dag: Any) -> Any:
    """The examples poll like production (seconds to minutes); the emulator answers in ms."""
    for task in dag.tasks:
        for name, value in (("poll_interval", 0.05), ("max_poll_interval", 0.2), ("poke_interval", 0.05)):
            if hasattr(task, name):
                setattr(task, name, value)
        if hasattr(task, "max_poll_interval"):
            task.max_poll_interval = max(task.max_poll_interval, getattr(task, "poke_interval", 0))
    return dag


def test_content_pipeline_saves_images_and_summarizes_files_and_cost(
    airflow_db: str, emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    conf = {"prompts": DEFAULT_PROMPTS, "size": "16:9", "destination": tmp_path.as_uri()}
    run = Run(airflow_db, fast(mindvideo_content_pipeline()).test(run_conf=conf))
    assert run.state == "success"
    summary = run.xcom[("summarize", -1, "return_value")]
    assert [image["prompt"] for image in summary["images"]] == DEFAULT_PROMPTS
    assert all(image["status"] == "succeeded" and len(image["urls"]) == 1 for image in summary["images"])
    assert [image["files"] for image in summary["images"]] == [
        [f"{tmp_path.as_uri()}/{image['task_id']}_0.png"] for image in summary["images"]
    ]
    assert len(list(tmp_path.glob("*.png"))) == 5
    assert summary["total_cost"] == pytest.approx(5 * 0.0135)
    assert emulator.state.charged_tasks == 5
    with sqlite3.connect(os.path.join(airflow_db, "airflow.db")) as db:
        events = db.execute(
            "select e.extra from asset_event e join asset a on a.id = e.asset_id where a.uri = ?",
            (tmp_path.as_uri(),),
        ).fetchall()
    assert [json.loads(extra) for (extra,) in events] == [{"files": 5, "total_cost": summary["total_cost"]}]


def test_content_pipeline_takes_prompts_from_params(
    airflow_db: str, emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    conf = {"prompts": ["only one"], "size": "1:1", "destination": tmp_path.as_uri()}
    run = Run(airflow_db, fast(mindvideo_content_pipeline()).test(run_conf=conf))
    assert [image["prompt"] for image in run.xcom[("summarize", -1, "return_value")]["images"]] == ["only one"]
    assert emulator.state.charged_tasks == 1


def test_daily_batch_generates_every_csv_row_saves_them_and_emits_one_asset_event(
    airflow_db: str, emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    run = Run(airflow_db, fast(mindvideo_daily_batch()).test(run_conf={"destination": tmp_path.as_uri()}))
    assert run.state == "success"
    summary = run.xcom[("generate", -1, "return_value")]
    rows_in_csv = len(Path(DEFAULT_PROMPTS_CSV.removeprefix("file://")).read_text().splitlines()) - 1
    assert summary["items"] == rows_in_csv == 6
    assert summary["counts"]["succeeded"] == 6 and summary["failed"] == 0
    assert emulator.state.charged_tasks == 6
    assert summary["cost_estimate"] == pytest.approx(6 * 0.0135)
    # The day's folder: the images and the manifest that names them.
    (day,) = [folder for folder in tmp_path.iterdir() if folder.is_dir()]
    assert summary["manifest"] == f"{day.as_uri()}/manifest.jsonl"
    rows = load_manifest((day / "manifest.jsonl").read_text())
    assert [row.line for row in rows] == [2, 3, 4, 5, 6, 7]  # CSV lines, the header being line 1
    assert sorted(file["path"] for row in rows for file in row.files) == sorted(
        path.as_uri() for path in day.glob("*.png")
    )
    assert len(list(day.glob("*.png"))) == 6
    prompts = sorted(task.input["prompt"] for task in emulator.state.tasks.values())
    assert "一座被雪覆盖的山间小屋,黄昏,水彩" in prompts
    with sqlite3.connect(os.path.join(airflow_db, "airflow.db")) as db:
        events = db.execute(
            "select a.uri, e.extra from asset_event e join asset a on a.id = e.asset_id where a.uri like ?",
            (f"{tmp_path.as_uri()}%",),
        ).fetchall()
    assert len(events) == 1
    ((uri, extra),) = events
    assert uri == day.as_uri() and json.loads(extra)["files"] == 6


@pytest.mark.parametrize("logical_date", ["scheduled", None], ids=["scheduled", "manual"])
def test_daily_batch_files_a_run_under_its_day_with_or_without_a_logical_date(
    airflow_db: str, emulator: MindVideoEmulator, tmp_path: Path, logical_date: str | None
) -> None:
    # Airflow 3 gives a manual run (UI, `airflow dags trigger`, REST with logical_date null) no
    # logical date, and so no `ds`: the day comes from when the run was due instead.
    due = datetime(2026, 3, 4, 6, tzinfo=UTC)
    dag = fast(mindvideo_daily_batch())
    when: dict[str, Any] = {"run_after": due, "logical_date": due if logical_date else None}
    run = Run(airflow_db, dag.test(run_conf={"destination": tmp_path.as_uri()}, **when))
    assert run.state == "success"
    assert run.xcom[("generate", -1, "return_value")]["manifest"] == f"{tmp_path.as_uri()}/2026-03-04/manifest.jsonl"


def test_image_edit_sends_references_and_mask(airflow_db: str, emulator: MindVideoEmulator) -> None:
    run = Run(airflow_db, fast(mindvideo_image_edit()).test())
    assert run.state == "success"
    (task,) = emulator.state.tasks.values()
    assert task.input["image_urls"][0] == "https://example.com/reference/living-room.png"
    assert task.input["image_urls"][1].startswith("data:image/png;base64,")
    assert task.input["mask_url"].startswith("data:image/png;base64,")


def test_video_example_waits_for_the_video(airflow_db: str, emulator: MindVideoEmulator) -> None:
    run = Run(airflow_db, fast(mindvideo_video()).test())
    assert run.state == "success"
    (url,) = run.xcom[("generate_video", -1, "return_value")]
    assert url.endswith(".mp4")


def test_taskflow_example_collects_every_url(airflow_db: str, emulator: MindVideoEmulator) -> None:
    run = Run(airflow_db, fast(mindvideo_taskflow()).test())
    assert run.state == "success"
    assert len(run.xcom[("collect", -1, "return_value")]) == 4
    assert emulator.state.charged_tasks == 4

"""MindVideoBatchGenerateOperator.execute, up to its deferral: what it refuses before anything is charged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.errors import MindVideoError
from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator


@dataclass
class Ti:
    task_id: str = "generate"
    dag_id: str = "batch_dag"
    run_id: str = "manual__one"
    map_index: int = -1
    try_number: int = 1


def execute(result_path: str, ti: Ti) -> None:
    operator = MindVideoBatchGenerateOperator(
        task_id=ti.task_id, model="gpt-image-2", inputs=[{"prompt": "a fox"}], result_path=result_path
    )
    operator.execute({"ti": ti})  # type: ignore[arg-type]


def test_a_result_path_that_is_a_folder_is_refused_naming_it(emulator: MindVideoEmulator, tmp_path: Path) -> None:
    (tmp_path / "out.jsonl").mkdir()
    with pytest.raises(MindVideoError, match=r"result_path = 'file://.*out.jsonl'.*folder"):
        execute(f"file://{tmp_path}/out.jsonl", Ti())
    assert emulator.state.requests["create"] == 0


def test_a_result_path_of_another_task_instance_is_refused_naming_its_owner(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    result_path = f"file://{tmp_path}/manifest.jsonl"
    with pytest.raises(TaskDeferred):
        execute(result_path, Ti(task_id="a"))
    with pytest.raises(TaskDeferred):
        execute(result_path, Ti(task_id="a", try_number=2))  # its own retry: the same owner
    with pytest.raises(MindVideoError, match=r"result_path = .*manifest.jsonl.*task_id='a'") as refused:
        execute(result_path, Ti(task_id="b"))
    assert "run_id='manual__one'" in str(refused.value)
    with pytest.raises(MindVideoError, match="result_path"):
        execute(result_path, Ti(task_id="a", run_id="manual__two"))  # the next run: another task instance
    assert emulator.state.requests["create"] == 0

"""MindVideoBatchGenerateOperator.execute, up to its deferral: what it refuses before anything is charged;
and execute_complete, after the trigger: what it still has to save."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_mindvideo.batch.plan import dump_work_list, entries_from_list, load_manifest, work_list
from airflow_provider_mindvideo.batch.trigger import MindVideoBatchTrigger
from airflow_provider_mindvideo.client.errors import MindVideoError
from airflow_provider_mindvideo.emulator import MindVideoEmulator
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


@dataclass
class Outlet:
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FinishingTi(Ti):
    pushed: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def run_batch(
    tmp_path: Path, prompts: list[str], **kwargs: Any
) -> tuple[dict[str, Any], MindVideoBatchGenerateOperator]:
    """The trigger to its event, then the operator with the same folder: (event, operator)."""
    media, result_path = f"file://{tmp_path}/media", f"file://{tmp_path}/manifest.jsonl"
    items = work_list(entries_from_list([{"prompt": prompt} for prompt in prompts]), "gpt-image-2", Ti())
    (tmp_path / "work.jsonl").write_text(dump_work_list(items))
    trigger = MindVideoBatchTrigger(
        f"file://{tmp_path}/work.jsonl",
        result_path,
        poll_interval=0.05,
        max_poll_interval=0.1,
        download_to=media,
        download_allow_private_urls=True,
    )

    async def events() -> list[Any]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())
    operator = MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs=[],
        result_path=result_path,
        download_to=media,
        download_allow_private_urls=True,
        **kwargs,
    )
    return event, operator


def test_the_worker_saves_only_the_outputs_the_trigger_did_not(emulator: MindVideoEmulator, tmp_path: Path) -> None:
    media = tmp_path / "media"
    emulator.add_fault("status", route="files", status=503, after=2)  # the trigger's third save meets a blip
    event, operator = run_batch(tmp_path, [f"kept {i}" for i in range(3)])
    assert emulator.state.requests["files"] == 3
    rows = load_manifest((tmp_path / "manifest.jsonl").read_text())
    assert [row.status for row in rows] == ["succeeded"] * 3  # a blip is no verdict: the worker tries again
    assert sorted(bool(row.files) for row in rows) == [False, True, True]
    gone = Path(next(row for row in rows if row.files).files[0]["path"].removeprefix("file://"))
    gone.unlink()  # removed since: saved again
    outlets: defaultdict[Any, Outlet] = defaultdict(Outlet)
    record = operator.execute_complete({"ti": FinishingTi(), "outlet_events": outlets}, event)  # type: ignore[arg-type]
    assert record["counts"]["succeeded"] == 3
    assert emulator.state.requests["files"] == 5  # only the one that was gone and the one the blip stopped
    assert gone.stat().st_size > 0 and len(list(media.iterdir())) == 3
    assert [dict(outlet.extra) for outlet in outlets.values()] == [
        {"files": 3, "written": 3, "bytes": sum(path.stat().st_size for path in media.iterdir())}
    ]


def test_a_download_to_that_cannot_be_a_folder_is_refused_before_any_charge(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    (tmp_path / "media").write_text("a file where the folder should be")
    operator = MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs=[{"prompt": "a fox"}],
        result_path=f"file://{tmp_path}/manifest.jsonl",
        download_to=f"file://{tmp_path}/media",
    )
    with pytest.raises(MindVideoError, match=r"download_to = 'file://.*media': cannot be used as the folder"):
        operator.execute({"ti": Ti()})  # type: ignore[arg-type]
    assert emulator.state.requests["create"] == 0


def test_a_kept_file_cut_short_since_is_not_reported_as_stored(emulator: MindVideoEmulator, tmp_path: Path) -> None:
    event, operator = run_batch(tmp_path, ["cut short 0", "cut short 1"], max_failed=1)
    rows = load_manifest((tmp_path / "manifest.jsonl").read_text())
    cut = Path(rows[0].files[0]["path"].removeprefix("file://"))
    cut.write_bytes(cut.read_bytes()[:8])  # truncated after the trigger saved it
    outlets: defaultdict[Any, Outlet] = defaultdict(Outlet)
    record = operator.execute_complete({"ti": FinishingTi(), "outlet_events": outlets}, event)  # type: ignore[arg-type]
    rows = load_manifest((tmp_path / "manifest.jsonl").read_text())
    # Never overwritten (it is not ours any more), never described as the file it was.
    assert cut.stat().st_size == 8
    assert rows[0].status == "download_failed" and "already exists (8 bytes)" in (rows[0].error or "")
    assert record["counts"]["download_failed"] == 1 and rows[1].status == "succeeded"


def test_an_output_redirecting_to_a_data_url_fails_its_item_not_the_batch(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    from airflow_provider_mindvideo.batch.plan import dump_manifest
    from tests.servers import scripted_server

    event, operator = run_batch(tmp_path, ["bad link", "good link"], max_failed=1)
    manifest = tmp_path / "manifest.jsonl"
    rows = load_manifest(manifest.read_text())
    routes = {"/a.png": (302, {"Location": "data:image/png;base64,iVBORw0KGgo="}, b"")}
    with scripted_server(routes) as server:
        # As if MindVideo had answered this link for the first item (the emulator's are sound).
        Path(rows[0].files[0]["path"].removeprefix("file://")).unlink()
        rows[0].output_urls, rows[0].files = [server.url("/a.png")], []
        manifest.write_text(dump_manifest(rows))
        record = operator.execute_complete({"ti": FinishingTi(), "outlet_events": defaultdict(Outlet)}, event)  # type: ignore[arg-type]
    rows = load_manifest(manifest.read_text())
    assert [row.status for row in rows] == ["download_failed", "succeeded"]
    assert "a.png" in (rows[0].error or "") and rows[0].retryable is False
    assert record["counts"]["succeeded"] == 1 and emulator.state.requests["create"] == 2

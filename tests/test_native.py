"""What Airflow users expect of a provider, in real Airflow runs (``dag.test()``) against the emulator.

Inputs in files next to the DAG, templated connection ids, the UI's extra links (also while
the task waits), and what a killed or cleared wait says about the remote task it leaves running.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version
from structlog.testing import capture_logs

from airflow_provider_mindvideo.emulator import MindVideoEmulator
from tests.dags.mindvideo_native_dags import DAGS
from tests.test_dags import Run


@pytest.fixture
def run(airflow_db: str, emulator: MindVideoEmulator, tmp_path: Path) -> Any:
    def run_dag(dag_id: str, **params: Any) -> Run:
        conf = {
            "prompt": "a red fox",
            "folder": f"file://{tmp_path}/media",
            "copies": f"file://{tmp_path}/copies",
            "conn": "mindvideo_default",
            **params,
        }
        return Run(airflow_db, DAGS[dag_id].test(run_conf=conf))

    return run_dag


def test_input_from_a_json_j2_file_next_to_the_dag_is_rendered_and_sent(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_input_file", prompt="a blue whale")
    assert result.state == "success"
    (task,) = emulator.state.snapshot()["tasks"]
    assert task["prompt"] == "a blue whale, from a file"


def test_a_broken_input_file_fails_at_once_naming_the_field_and_charges_nothing(
    run: Any, emulator: MindVideoEmulator, debug_logs: list[dict[str, Any]]
) -> None:
    result = run("mv_input_file_broken")
    assert result.state == "failed"
    assert result.tries("submit") == 1  # a file that is not JSON stays so: no retries spent
    assert emulator.state.requests["create"] == 0
    logged = "\n".join(str(e) for e in debug_logs)
    assert "input = " in logged and "is not JSON" in logged and "line 1, column" in logged


@pytest.mark.parametrize(
    ("dag_id", "cause"),
    [("mv_input_file_bad_filter", "No filter named"), ("mv_input_file_bad_syntax", "line 2")],
)
def test_an_input_file_whose_jinja_does_not_render_fails_at_once(
    run: Any, emulator: MindVideoEmulator, debug_logs: list[dict[str, Any]], dag_id: str, cause: str
) -> None:
    # docs/operators/submit.md: a file that does not render fails at once. A Jinja error used to
    # spend the task's retries: it renders the same way every time.
    result = run(dag_id)
    assert result.state == "failed"
    assert result.tries("submit") == 1
    assert emulator.state.requests["create"] == 0
    logged = "\n".join(str(e) for e in debug_logs)
    assert "input: its template does not render" in logged and cause in logged


def test_links_log_no_error_for_records_not_pushed_yet(run: Any, debug_logs: list[dict[str, Any]]) -> None:
    # Airflow computes the extra links when a task stops (fails, defers, succeeds): reading an
    # XCom not pushed yet logged an error-level "XCom not found" that read like a second failure.
    assert run("mv_input_file_broken").state == "failed"
    assert run("mv_input_file").state == "success"  # defers, then resumes
    assert not [e for e in debug_logs if "XCom not found" in str(e.get("event"))]


def test_a_prompt_ending_in_json_is_text_not_a_file(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_input_text_ending_in_json")
    assert result.state == "success"
    assert emulator.state.snapshot()["tasks"][0]["prompt"] == "a red fox saved as fox.json"


def test_connection_ids_are_templated(run: Any, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_STAGING", emulator.connection_uri())
    monkeypatch.delenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT")
    result = run("mv_templated_conn", conn="mindvideo_staging")
    assert result.state == "success"
    assert emulator.state.charged_tasks == 1


def test_links_point_at_the_stored_output_and_the_model_docs(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_generate_and_copy")
    assert result.state == "success"
    record = result.xcom[("generate", -1, "mindvideo_task")]
    assert result.xcom[("generate", -1, "_link_MindVideoModelDocsLink")] == (
        "https://api.mindvideo.ai/models/gpt-image-2/docs"
    )
    # Stored in a local folder, which a browser cannot open: the link is MindVideo's output URL.
    assert result.xcom[("generate", -1, "_link_MindVideoOutputLink")] == record["output_urls"][0]
    assert result.xcom[("copy", -1, "_link_MindVideoOutputLink")] == record["output_urls"][0]
    # And the task instance's page in the MindVideo plugin (the run id quoted: it holds ':' and '+').
    gallery = result.xcom[("generate", -1, "_link_MindVideoGalleryLink")]
    assert gallery == "/mindvideo/gallery?" + urlencode(
        {
            "dag_id": "mv_generate_and_copy",
            "run_id": result.tis[("generate", -1)].run_id,
            "task_id": "generate",
            "map_index": -1,
        }
    )


def test_model_docs_link_works_while_the_task_waits(
    run: Any, emulator: MindVideoEmulator, airflow_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger

    seen_while_waiting: dict[str, Any] = {}
    wait = MindVideoTaskTrigger.run

    async def look_then_wait(self: MindVideoTaskTrigger) -> Any:
        # The task has deferred: what does the UI read for its links now?
        with sqlite3.connect(os.path.join(airflow_db, "airflow.db")) as db:
            (run_id,) = db.execute(
                "select run_id from dag_run where dag_id = 'mv_generate_waits' order by id desc limit 1"
            ).fetchone()
            seen_while_waiting.update(
                db.execute(
                    "select key, value from xcom where dag_id = 'mv_generate_waits' and run_id = ? and key in (?, ?)",
                    (run_id, "_link_MindVideoModelDocsLink", "_link_MindVideoOutputLink"),
                ).fetchall()
            )
        async for event in wait(self):
            yield event

    monkeypatch.setattr(MindVideoTaskTrigger, "run", look_then_wait)
    result = run("mv_generate_waits")
    assert result.state == "success"
    assert seen_while_waiting["_link_MindVideoModelDocsLink"] == '"https://api.mindvideo.ai/models/gpt-image-2/docs"'
    assert seen_while_waiting["_link_MindVideoOutputLink"] == '""'  # nothing to show until it finishes


@pytest.mark.parametrize(("dag_id", "task_id"), [("mv_generate_killed", "generate"), ("mv_sensor_killed", "wait")])
def test_a_wait_killed_on_the_worker_names_the_remote_task_that_keeps_running(
    run: Any, emulator: MindVideoEmulator, debug_logs: list[dict[str, Any]], dag_id: str, task_id: str
) -> None:
    emulator.script("slow", "succeeded", queued_seconds=0, processing_seconds=600)
    result = run(dag_id, prompt="a slow fox")
    assert (result.state, result.ti_state(task_id)) == ("failed", "failed")  # execution_timeout killed the try
    (remote,) = emulator.state.snapshot()["tasks"]
    assert remote["status"] == "processing"  # nothing can cancel it
    assert emulator.state.charged_tasks == 1
    warnings = [str(e["event"]) for e in debug_logs if e.get("log_level") == "warning" and "keeps running" in str(e)]
    assert len(warnings) == 1
    assert f"Task {task_id} was killed while it waited" in warnings[0]
    assert f"MindVideo task {remote['task_id']} keeps running and is charged" in warnings[0]
    assert "no cancel endpoint" in warnings[0]


@pytest.mark.parametrize(
    ("status", "warned"), [("queued", True), ("processing", True), ("succeeded", False), ("failed", False)]
)
def test_only_an_unfinished_task_is_reported_as_still_running(status: str, warned: bool) -> None:
    from airflow_provider_mindvideo.operators import MindVideoGenerateOperator

    operator = MindVideoGenerateOperator(task_id="generate", model="gpt-image-2", input={"prompt": "x"})
    operator._record = {"task_id": "t-1", "status": status}
    with capture_logs() as logs:
        operator.on_kill()
    assert [e["log_level"] for e in logs if "t-1 keeps running" in e["event"]] == (["warning"] if warned else [])


@pytest.mark.skipif(Version(airflow_version).release < (3, 3), reason="Airflow calls a trigger's on_kill from 3.3 on")
def test_a_cleared_deferred_wait_names_the_remote_task_that_keeps_running(
    emulator: MindVideoEmulator, debug_logs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's own triggerer code path: a user's clear cancels the trigger with its message, then calls on_kill."""
    from airflow.jobs.triggerer_job_runner import TriggerRunner

    from airflow_provider_mindvideo.hooks import MindVideoHook
    from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger

    monkeypatch.setenv("AIRFLOW_DISABLE_GREENBACK_PORTAL", "true")
    emulator.script("slow", "succeeded", queued_seconds=0, processing_seconds=600)
    with MindVideoHook() as hook:
        remote = hook.create_task("gpt-image-2", {"prompt": "a slow fox"})
    trigger = MindVideoTaskTrigger(remote.task_id, poll_interval=0.1, max_poll_interval=0.1)
    trigger.task_instance = None

    async def clear_while_waiting() -> None:
        runner = TriggerRunner()
        waiting = asyncio.create_task(runner.run_trigger(1, trigger))
        runner.triggers[1] = {"task": waiting, "name": "wait", "events": 0}
        while emulator.state.requests["get"] < 2:  # the wait is under way
            await asyncio.sleep(0.01)
        runner.to_cancel.append(1)
        await runner.cancel_triggers()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(clear_while_waiting())
    warnings = [str(e["event"]) for e in debug_logs if e.get("log_level") == "warning" and "keeps running" in str(e)]
    assert warnings == [
        "The wait was stopped (the Airflow task was cleared, or marked failed or successful), but MindVideo task "
        f"{remote.task_id} keeps running and is charged: MindVideo has no cancel endpoint. Clearing the Airflow "
        "task waits for the same remote task again; it does not pay for a new one"
    ]
    assert emulator.state.snapshot()["tasks"][0]["status"] == "processing"


def test_airflow_registers_the_extra_links_from_the_provider_info() -> None:
    from airflow.providers_manager import ProvidersManager

    registered = [name for name in ProvidersManager().extra_links_class_names if "mindvideo" in name]
    assert registered == [
        "airflow_provider_mindvideo.links.MindVideoGalleryLink",
        "airflow_provider_mindvideo.links.MindVideoModelDocsLink",
        "airflow_provider_mindvideo.links.MindVideoOutputLink",
    ]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("https://media.example.com/a b.png", "https://media.example.com/a b.png"),
        ("gs://bucket/media/t_0.png", "https://storage.cloud.google.com/bucket/media/t_0.png"),
        ("s3://bucket/media/t 0.png", "https://bucket.s3.amazonaws.com/media/t%200.png"),
        ("file:///data/media/t_0.png", ""),
        ("abfs://container/t_0.png", ""),
    ],
)
def test_the_http_form_of_a_stored_file(path: str, expected: str) -> None:
    from airflow_provider_mindvideo.links import http_form

    assert http_form(path) == expected


def test_output_link_prefers_a_browsable_stored_file_then_the_output_url() -> None:
    from airflow_provider_mindvideo.links import model_docs_url, output_url

    record = {"output_urls": ["https://cdn.example/0.png"]}
    assert output_url(record, [{"path": "gs://b/t_0.png", "url": "https://cdn.example/0.png"}]) == (
        "https://storage.cloud.google.com/b/t_0.png"
    )
    assert output_url(record, [{"path": "file:///data/t_0.png"}]) == "https://cdn.example/0.png"
    assert output_url(None, [{"path": "file:///data/t_0.png", "url": "https://other.example/x.png"}]) == (
        "https://other.example/x.png"
    )
    assert output_url({"status": "processing"}, None) == ""
    assert model_docs_url("veo3-1-fast") == "https://api.mindvideo.ai/models/veo3-1-fast/docs"
    assert model_docs_url("a/../b?x") == "https://api.mindvideo.ai/models/a%2F..%2Fb%3Fx/docs"
    assert model_docs_url(None) == ""

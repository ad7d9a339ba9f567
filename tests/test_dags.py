"""Operators and sensor in real Airflow runs (``dag.test()``) against the emulator.

Every test counts what the emulator charged: paying once is the contract.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest

from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from tests.dags.mindvideo_test_dags import DAGS


@pytest.fixture
def run(airflow_db: str, emulator: MindVideoEmulator) -> Any:
    """Run a test DAG; returns {(task_id, map_index): ti} and the run's XComs."""
    return dag_runner(airflow_db, DAGS, prompt="a red fox")


def dag_runner(home: str, dags: Mapping[str, Any], **conf: Any) -> Callable[..., Run]:
    """Runs one of ``dags`` by id with ``conf`` under the params a test gives.

    Always a full conf: dag.test() keeps an earlier run's conf on the DAG object.
    """

    def run_dag(dag_id: str, **params: Any) -> Run:
        return Run(home, dags[dag_id].test(run_conf={**conf, **params}))

    return run_dag


class Run:
    def __init__(self, home: str, dag_run: Any) -> None:
        self.state = str(dag_run.state)
        self.tis = {(ti.task_id, ti.map_index): ti for ti in dag_run.get_task_instances()}
        with sqlite3.connect(os.path.join(home, "airflow.db")) as db:
            rows = db.execute(
                "select task_id, map_index, key, value from xcom where dag_id = ? and run_id = ?",
                (dag_run.dag_id, dag_run.run_id),
            ).fetchall()
        # SQLite returns JSON scalars (numbers) already decoded.
        self.xcom = {(t, i, k): json.loads(v) if isinstance(v, str | bytes) else v for t, i, k, v in rows}

    def ti_state(self, task_id: str, map_index: int = -1) -> str:
        return str(self.tis[(task_id, map_index)].state)

    def tries(self, task_id: str, map_index: int = -1) -> int:
        return int(self.tis[(task_id, map_index)].try_number)


def test_submit_then_deferred_sensor_returns_urls_and_records(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_submit_and_wait")
    assert result.state == "success"
    task_id = result.xcom[("submit", -1, "return_value")]
    submitted = result.xcom[("submit", -1, "mindvideo_task")]
    assert submitted["task_id"] == task_id
    assert submitted["model"] == "gpt-image-2"
    assert submitted["cost_estimate"] == 0.0135
    assert submitted["idempotency_key"].startswith("af-")
    assert "input" not in submitted
    urls = result.xcom[("wait", -1, "return_value")]
    assert urls == [f"{emulator.base_url}/files/{task_id}/0.png"]
    finished = result.xcom[("wait", -1, "mindvideo_task")]
    assert (finished["status"], finished["cost_actual"], finished["output_urls"]) == ("succeeded", 0.0135, urls)
    assert httpx.get(urls[0]).headers["content-type"] == "image/png"
    assert emulator.state.charged_tasks == 1
    assert emulator.state.snapshot()["tasks"][0]["prompt"] == "a red fox"  # params were rendered


def test_poke_mode(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_submit_and_poke")
    assert result.state == "success"
    assert len(result.xcom[("wait", -1, "return_value")]) == 1
    assert emulator.state.charged_tasks == 1


def test_mapped_pipeline_of_five_prompts_pays_once_each(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_mapped")
    assert result.state == "success"
    for index in range(5):
        assert result.ti_state("wait", index) == "success"
        assert len(result.xcom[("generate", index, "return_value")]) == 1
        assert result.xcom[("generate", index, "mindvideo_task")]["status"] == "succeeded"
    keys = {
        result.xcom[(task, i, "mindvideo_task")]["idempotency_key"] for task in ("submit", "generate") for i in range(5)
    }
    assert len(keys) == 10  # no two map indexes (or tasks) share a key
    assert emulator.state.charged_tasks == 10


def test_taskflow_prompts_expand_into_generate(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_taskflow")
    assert result.state == "success"
    assert sorted(t["prompt"] for t in emulator.state.snapshot()["tasks"]) == [
        "taskflow blue",
        "taskflow green",
        "taskflow red",
    ]


def test_remote_failure_then_retry_creates_one_new_task(run: Any, emulator: MindVideoEmulator) -> None:
    emulator.script("doomed", "failed", error="GPU fell over", times=1)
    result = run("mv_generate_retry", prompt="a doomed ship")
    assert result.state == "success"
    assert result.tries("generate") == 2
    assert emulator.state.charged_tasks == 2
    statuses = [t["status"] for t in emulator.state.snapshot()["tasks"]]
    assert statuses == ["failed", "succeeded"]
    record = result.xcom[("generate", -1, "mindvideo_task")]
    assert record["idempotency_key"].endswith("-0001")


def test_remote_failure_on_the_worker_path_too(run: Any, emulator: MindVideoEmulator) -> None:
    emulator.script("doomed", "failed", times=1)
    result = run("mv_generate_sync", prompt="doomed again")
    assert result.state == "success"
    assert emulator.state.charged_tasks == 2


def test_a_task_refused_at_creation_costs_one_charge_per_try(run: Any, emulator: MindVideoEmulator) -> None:
    # The create answer itself says "failed" (a synchronous refusal): a try that created a task
    # stops there, however the task ended. Five refusals queued up, three tries: three charges.
    emulator.script("refused", "failed", error="Refused by moderation", queued_seconds=0, processing_seconds=0, times=5)
    result = run("mv_submit_retry", prompt="refused at once")
    assert result.state == "failed"
    assert result.tries("submit") == 3
    assert emulator.state.charged_tasks == 3
    assert [t["status"] for t in emulator.state.snapshot()["tasks"]] == ["failed"] * 3


def test_a_refusal_at_creation_then_a_retry_generates_again(run: Any, emulator: MindVideoEmulator) -> None:
    emulator.script("refused", "failed", queued_seconds=0, processing_seconds=0, times=1)
    result = run("mv_generate_retry", prompt="refused once")
    assert result.state == "success"
    assert result.tries("generate") == 2
    assert emulator.state.charged_tasks == 2
    assert result.xcom[("generate", -1, "mindvideo_task")]["key_generation"] == 1


def test_generations_are_capped_per_task_instance(run: Any, emulator: MindVideoEmulator) -> None:
    emulator.script("doomed", "failed", error="GPU fell over")
    result = run("mv_generate_capped", prompt="doomed every time")
    assert result.state == "failed"
    assert result.tries("generate") == 3  # the third try finds both generations failed and stops for good
    assert emulator.state.charged_tasks == 2


def test_failure_message_names_the_remote_error_and_events(
    run: Any, emulator: MindVideoEmulator, debug_logs: list[dict[str, Any]]
) -> None:
    emulator.script("doomed", "failed", error="GPU fell over")
    result = run("mv_generate_retry", prompt="doomed for good")
    assert result.state == "failed"
    assert result.tries("generate") == 3  # retryable: each try generated anew
    assert emulator.state.charged_tasks == 3
    logged = "\n".join(str(e) for e in debug_logs)
    assert "GPU fell over" in logged
    assert "recent events" in logged
    assert "task.failed" in logged


def test_crash_after_submit_then_retry_charges_once(
    run: Any, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The task is created but its answer never arrives, and the hook may not retry: the try
    # dies between the POST and the XCom push, like a killed worker. The retry replays the key.
    monkeypatch.setenv(
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT",
        json.dumps(
            {
                "conn_type": "mindvideo",
                "host": emulator.base_url,
                "password": emulator.api_key,
                "extra": {"max_retries": 0},
            }
        ),
    )
    emulator.add_fault("drop", route="create")
    result = run("mv_generate_retry")
    assert result.state == "success"
    assert result.tries("generate") == 2
    assert emulator.state.requests["create"] == 2
    assert emulator.state.charged_tasks == 1


def test_the_hook_in_a_users_task_pays_once_across_retries(
    run: Any, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every create answer of the first try is unreadable (the hook gives up); the retry replays the key.
    monkeypatch.setenv(
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT",
        json.dumps(
            {
                "conn_type": "mindvideo",
                "host": emulator.base_url,
                "password": emulator.api_key,
                "extra": {"max_retries": 1},
            }
        ),
    )
    emulator.add_fault("truncated", route="create", times=2)
    result = run("mv_hook_in_task")
    assert result.state == "success"
    assert result.tries("generate_with_the_hook") == 2
    assert emulator.state.requests["create"] == 3
    assert emulator.state.charged_tasks == 1


def test_clearing_a_finished_run_reuses_the_task(run: Any, emulator: MindVideoEmulator) -> None:
    first = run("mv_generate_retry")
    hook = MindVideoHook()
    record = first.xcom[("generate", -1, "mindvideo_task")]
    replay = hook.create_task("gpt-image-2", {"prompt": "a red fox"}, idempotency_key=record["idempotency_key"])
    assert replay.task_id == record["task_id"]
    assert emulator.state.charged_tasks == 1


def test_explicit_key_reused_with_another_payload_fails_without_retry(run: Any, emulator: MindVideoEmulator) -> None:
    MindVideoHook().create_task("gpt-image-2", {"prompt": "the original"}, idempotency_key="shared-key-mv_explicit_key")
    result = run("mv_explicit_key", prompt="a different prompt")
    assert result.state == "failed"
    assert result.tries("submit") == 1
    assert emulator.state.requests["create"] == 2
    assert emulator.state.charged_tasks == 1


def test_explicit_key_is_sent_as_given(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_explicit_key")
    assert result.xcom[("submit", -1, "mindvideo_task")]["idempotency_key"] == "shared-key-mv_explicit_key"


def test_validation_error_fails_at_once_without_any_request(
    run: Any, emulator: MindVideoEmulator, debug_logs: list[dict[str, Any]]
) -> None:
    result = run("mv_invalid_input")
    assert result.state == "failed"
    assert result.tries("submit") == 1
    assert sum(emulator.state.requests.values()) == 0
    logged = "\n".join(str(e) for e in debug_logs)
    assert "InputValidationError" in logged
    assert "input.size = " in logged
    assert "must be one of the ratios" in logged


def test_cancelled_task_fails_the_sensor_without_retry(run: Any, emulator: MindVideoEmulator) -> None:
    emulator.script("cancel", "cancelled", error="Cancelled by the account owner")
    result = run("mv_submit_and_wait", prompt="please cancel")
    assert result.ti_state("wait") == "failed"
    assert result.tries("wait") == 1
    assert result.xcom[("wait", -1, "mindvideo_task")]["status"] == "cancelled"


SOFT_FAIL_DAGS = ["mv_sensor_soft_fail", "mv_sensor_soft_fail_poke"]  # deferrable, poke mode


def _cancel_after_looks(emulator: MindVideoEmulator, looks: int) -> None:
    """Script the "cancel" prompt's task to be cancelled from the sensor's look number ``looks + 1``.

    Until then the API shows a status the provider waits through (as a task held for
    moderation would). Counted in requests, not read off the emulator's clock, so which path
    the sensor takes does not depend on how busy the machine is. The create answer must not show
    the end either: the submit operator does not reuse a task that ended badly.
    """
    emulator.script("cancel", "cancelled", queued_seconds=0, processing_seconds=0)
    emulator.add_fault("unknown_status", route="create")
    if looks:
        emulator.add_fault("unknown_status", route="get", times=looks)


@pytest.mark.parametrize("dag_id", [*SOFT_FAIL_DAGS, "mv_sensor_never_fail"])
def test_task_cancelled_before_the_first_check_skips_with_soft_fail(
    run: Any, emulator: MindVideoEmulator, dag_id: str
) -> None:
    _cancel_after_looks(emulator, 0)
    result = run(dag_id, prompt="please cancel")
    assert result.ti_state("wait") == "skipped"
    assert result.tries("wait") == 1
    assert emulator.state.requests["get"] == 1  # ended at the first check, never waited
    assert result.xcom[("wait", -1, "mindvideo_task")]["status"] == "cancelled"


@pytest.mark.parametrize("dag_id", SOFT_FAIL_DAGS)
def test_task_cancelled_while_waiting_skips_with_soft_fail(run: Any, emulator: MindVideoEmulator, dag_id: str) -> None:
    _cancel_after_looks(emulator, 1)
    result = run(dag_id, prompt="please cancel")
    assert result.ti_state("wait") == "skipped"
    assert result.tries("wait") == 1
    assert emulator.state.requests["get"] == 2  # the first check, then one more while waiting
    assert result.xcom[("wait", -1, "mindvideo_task")]["status"] == "cancelled"


def test_sensor_times_out(run: Any, emulator: MindVideoEmulator, debug_logs: list[dict[str, Any]]) -> None:
    emulator.script("forever", "never")
    result = run("mv_sensor_timeout", prompt="forever young")
    assert result.ti_state("wait") == "failed"
    assert "did not finish in time" in "\n".join(str(e) for e in debug_logs)


def test_already_finished_task_is_not_deferred(run: Any, emulator: MindVideoEmulator) -> None:
    emulator.script("instant", "succeeded", queued_seconds=0, processing_seconds=0)
    result = run("mv_submit_and_wait", prompt="instant noodles")
    assert result.state == "success"
    assert emulator.state.requests["get"] == 1  # one check, no trigger polling


def test_empty_output_is_a_failure(run: Any, emulator: MindVideoEmulator) -> None:
    emulator.script("empty", "no_output")
    result = run("mv_submit_and_wait", prompt="empty canvas")
    assert result.ti_state("wait") == "failed"


def test_empty_output_is_not_retried_by_the_generating_task(run: Any, emulator: MindVideoEmulator) -> None:
    emulator.script("empty", "no_output")
    result = run("mv_generate_retry", prompt="empty canvas")
    assert (result.ti_state("generate"), result.tries("generate")) == ("failed", 1)
    assert emulator.state.charged_tasks == 1


def test_explicit_key_whose_task_failed_fails_without_retry(run: Any, emulator: MindVideoEmulator) -> None:
    emulator.script("doomed", "failed", queued_seconds=0, processing_seconds=0)
    MindVideoHook().create_task("gpt-image-2", {"prompt": "doomed"}, idempotency_key="shared-key-mv_explicit_key")
    result = run("mv_explicit_key", prompt="doomed")
    assert result.state == "failed"
    assert result.tries("submit") == 1
    assert emulator.state.charged_tasks == 1


def _asset_events(home: str) -> list[tuple[str, dict[str, Any]]]:
    with sqlite3.connect(os.path.join(home, "airflow.db")) as db:
        rows = db.execute(
            "select a.uri, e.extra from asset_event e join asset a on a.id = e.asset_id order by e.id"
        ).fetchall()
    return [(uri, json.loads(extra)) for uri, extra in rows]


def test_download_saves_outputs_and_emits_an_asset_event(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_download")
    assert result.state == "success", result.tis
    task_id = result.xcom[("submit", -1, "return_value")]
    folder = os.path.join(os.environ["MINDVIDEO_TEST_DOWNLOADS"], "static")
    path = os.path.join(folder, f"{task_id}_0.png")
    assert result.xcom[("download", -1, "return_value")] == [f"file://{path}"]
    [entry] = result.xcom[("download", -1, "mindvideo_files")]
    with open(path, "rb") as stored:
        content = stored.read()
    assert content == httpx.get(entry["url"]).content
    assert (entry["bytes"], entry["content_type"], entry["written"]) == (len(content), "image/png", True)
    uri, extra = _asset_events(os.environ["AIRFLOW_HOME"])[-1]
    assert (uri, extra) == (f"file://{folder}", {"files": 1, "written": 1, "bytes": len(content)})


def test_download_rerun_keeps_files_and_templated_destination_goes_through_the_alias(
    run: Any, emulator: MindVideoEmulator, tmp_path: Any
) -> None:
    first = run("mv_submit_and_wait")
    urls = first.xcom[("wait", -1, "return_value")]
    conf = {"urls": urls, "folder": f"file://{tmp_path}/media"}
    once = run("mv_download_urls", **conf)
    again = run("mv_download_urls", **conf)
    assert once.state == again.state == "success"
    assert [e["written"] for e in once.xcom[("download", -1, "mindvideo_files")]] == [True]
    assert [e["written"] for e in again.xcom[("download", -1, "mindvideo_files")]] == [False]
    assert os.listdir(tmp_path / "media") == ["0.png"]
    events = _asset_events(os.environ["AIRFLOW_HOME"])[-2:]
    assert [(uri, extra["written"]) for uri, extra in events] == [
        (f"file://{tmp_path}/media", 1),
        (f"file://{tmp_path}/media", 0),
    ]


def test_download_of_a_gone_link_fails_without_retrying(run: Any, emulator: MindVideoEmulator, tmp_path: Any) -> None:
    result = run("mv_download_urls", urls=[f"{emulator.base_url}/files/task_gone/0.png"], folder=f"file://{tmp_path}")
    assert result.state == "failed"
    assert result.tries("download") == 1
    assert os.listdir(tmp_path) == []


def test_generate_with_download_to_saves_in_the_same_task(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_generate_download")
    assert result.state == "success"
    urls = result.xcom[("generate", -1, "return_value")]
    [entry] = result.xcom[("generate", -1, "mindvideo_files")]
    record = result.xcom[("generate", -1, "mindvideo_task")]
    assert entry["url"] == urls[0]
    assert entry["path"].endswith(f"/generated/{record['task_id']}_0.png")
    assert os.path.getsize(entry["path"].removeprefix("file://")) == entry["bytes"]
    assert _asset_events(os.environ["AIRFLOW_HOME"])[-1][0].endswith("/generated")
    assert emulator.state.charged_tasks == 1


def test_generate_retry_after_a_failed_download_does_not_pay_again(run: Any, emulator: MindVideoEmulator) -> None:
    emulator.add_fault("status", route="files", status=503)
    result = run("mv_generate_download")
    assert result.state == "success"
    assert result.tries("generate") == 2
    assert [e["written"] for e in result.xcom[("generate", -1, "mindvideo_files")]] == [True]
    assert emulator.state.charged_tasks == 1

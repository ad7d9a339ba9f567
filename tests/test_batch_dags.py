"""MindVideoBatchGenerateOperator in real Airflow runs (``dag.test()``, the trigger run inline) against the emulator.

Every test checks what the emulator charged: per item per try at most once, in all at most
items * max_generations, and never past max_cost.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_mindvideo.batch.plan import load_manifest
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator
from tests.dags.mindvideo_batch_dags import BUDGET, DAGS, IMAGE_COST
from tests.test_dags import dag_runner


@pytest.fixture
def run(airflow_db: str, emulator: MindVideoEmulator, tmp_path: Path) -> Any:
    return dag_runner(airflow_db, DAGS, inputs_path="", result_path=f"file://{tmp_path}/manifest.jsonl")


def charges_by_prompt(emulator: MindVideoEmulator) -> Counter[str]:
    return Counter(task["prompt"] for task in emulator.state.snapshot()["tasks"])


def test_items_that_fail_are_generated_again_on_the_retry_and_only_those(
    run: Any, emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    emulator.script("flaky", "failed", times=2)
    result = run("mv_batch_retry")
    assert result.state == "success"
    assert result.tries("generate") == 2
    summary = result.xcom[("generate", -1, "return_value")]
    assert summary["counts"]["succeeded"] == 6 and summary["failed"] == 0
    assert summary == result.xcom[("generate", -1, "mindvideo_batch")]
    charges = charges_by_prompt(emulator)
    assert sorted(charges.values()) == [1, 1, 1, 1, 2, 2]  # the two flaky ones, twice
    assert all(count == 2 for prompt, count in charges.items() if "flaky" in prompt)
    assert summary["cost_estimate"] == pytest.approx(8 * IMAGE_COST)  # replays of try 1 counted
    rows = load_manifest((tmp_path / "manifest.jsonl").read_text())
    assert [row.key_generation for row in rows] == [0, 1, 0, 0, 1, 0]
    assert all(row.files and Path(row.files[0]["path"].removeprefix("file://")).stat().st_size > 0 for row in rows)
    # Each item's outputs downloaded once over both tries: try 1's trigger saved its four as they
    # finished, try 2's kept them and saved the two regenerated; the worker found nothing missing.
    assert emulator.state.requests["files"] == 6
    assert len(json.dumps(summary)) < 1024  # XCom holds counts, not rows


def test_a_429_storm_is_ridden_out_paying_once_per_item(run: Any, emulator: MindVideoEmulator) -> None:
    emulator.state.config.rate_limit = 4  # requests a second, for 12 items created at once and polled
    try:
        result = run("mv_batch_storm")
    finally:
        emulator.state.config.rate_limit = None
    assert emulator.state.rate_limited > 0, "the storm never came"
    assert result.state == "success" and result.tries("generate") == 1
    assert result.xcom[("generate", -1, "return_value")]["counts"]["succeeded"] == 12
    assert emulator.state.charged_tasks == 12
    assert max(charges_by_prompt(emulator).values()) == 1


def test_the_ceiling_reached_halfway_is_tolerated_by_max_failed(
    run: Any, emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    result = run("mv_batch_budget_tolerated")
    assert result.state == "success"
    summary = result.xcom[("generate", -1, "return_value")]
    assert summary["counts"]["succeeded"] == 5 and summary["counts"]["over_budget"] == 5
    assert emulator.state.charged_tasks == 5
    assert emulator.state.total_charged <= BUDGET
    rows = load_manifest((tmp_path / "manifest.jsonl").read_text())
    assert [row.status for row in rows].count("over_budget") == 5
    assert all("max_cost" in (row.error or "") for row in rows if row.status == "over_budget")


def test_the_ceiling_reached_halfway_fails_a_strict_batch_for_good(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_batch_budget_strict")
    assert result.state == "failed"
    assert result.tries("generate") == 1  # no retry could fit more under the ceiling
    summary = result.xcom[("generate", -1, "mindvideo_batch")]
    assert summary["counts"]["over_budget"] == 5 and summary["retryable_failures"] == 0
    assert emulator.state.charged_tasks == 5 and emulator.state.total_charged <= BUDGET


def test_an_inputs_file_with_bad_lines_names_them_all_and_sends_nothing(
    run: Any, emulator: MindVideoEmulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "prompts.jsonl"
    inputs.write_text('{"prompt": "fine"}\n{"prompt": \n{"prompt": "x", "n": 3}\n{"prompt": "fine too"}\n')
    result = run("mv_batch_from_file", inputs_path=f"file://{inputs}")
    log = capfd.readouterr().out
    assert f"InputValidationError: 2 invalid item(s) in file://{inputs}; nothing was sent:\nline 2: is not JSON" in log
    assert "line 3: input.n = 3: must be one of 1" in log
    assert result.state == "failed"
    assert result.tries("generate") == 1  # refused input is no retry's business
    assert emulator.state.requests["create"] == 0 and emulator.state.charged_tasks == 0


def test_a_csv_inputs_file_runs(run: Any, emulator: MindVideoEmulator, tmp_path: Path) -> None:
    inputs = tmp_path / "prompts.csv"
    inputs.write_text('prompt,size\n"a fox, at dawn",16:9\na quiet harbour,1:1\n')
    result = run("mv_batch_from_file", inputs_path=f"file://{inputs}")
    assert result.state == "success"
    assert sorted(charges_by_prompt(emulator)) == ["a fox, at dawn", "a quiet harbour"]


def test_trigger_kwargs_stay_small_at_ten_thousand_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The operator reads the connection before deferring (its budgets, if any); nothing is sent.
    connection = {"conn_type": "mindvideo", "host": "http://127.0.0.1:9", "password": "mv_test_unused"}
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps(connection))

    @dataclass
    class Ti:
        dag_id: str = "mv_big"
        task_id: str = "generate"
        run_id: str = "manual__big"
        map_index: int = -1
        try_number: int = 1

    operator = MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs=[{"prompt": f"catalogue picture number {i} of a long series", "size": "16:9"} for i in range(10_000)],
        result_path=f"file://{tmp_path}/manifest.jsonl",
        max_cost=100.0,
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": Ti()})  # type: ignore[arg-type]
    _, kwargs = deferred.value.trigger.serialize()
    assert len(json.dumps(kwargs).encode()) < 64 * 1024
    assert len((tmp_path / "manifest.work.jsonl").read_text().splitlines()) == 10_000


def test_the_default_result_path_is_per_task_instance_under_batch_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_mindvideo import get_provider_info
    from airflow_provider_mindvideo.operators.batch import default_result_path, work_list_path

    @dataclass
    class Ti:
        dag_id: str = "daily"
        task_id: str = "generate"
        run_id: str = "scheduled__2026-01-01T00:00:00+00:00"
        map_index: int = 3

    assert "batch_folder" in get_provider_info()["config"]["mindvideo"]["options"]
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__BATCH_FOLDER", "s3://bucket/batches/")
    path = default_result_path(Ti())
    assert path == "s3://bucket/batches/daily/scheduled__2026-01-01T00_00_00_00_00/generate-3/manifest.jsonl"
    assert work_list_path(path).endswith("/generate-3/manifest.work.jsonl")
    monkeypatch.delenv("AIRFLOW__MINDVIDEO__BATCH_FOLDER")
    assert default_result_path(Ti(map_index=-1)).startswith("file:///")

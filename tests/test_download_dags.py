"""Who may download from private addresses, in real Airflow runs (``dag.test()``) against the emulator.

The emulator serves its files on 127.0.0.1, which the guard refuses unless allowed: by the
operator's parameter, else by ``[mindvideo] allow_private_urls``, read when the task runs.
This suite allows it (``tests/conftest.py``); these tests turn it off where they say so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo import get_provider_info
from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.operators import MindVideoDownloadOperator, MindVideoGenerateOperator
from tests.dags.mindvideo_download_dags import DAGS
from tests.helpers import Ti
from tests.test_dags import Run


@pytest.fixture
def urls(emulator: MindVideoEmulator) -> list[str]:
    emulator.script("a red fox", "succeeded", queued_seconds=0, processing_seconds=0)
    with MindVideoHook() as hook:
        task = hook.create_task("gpt-image-2", {"prompt": "a red fox"})
        return hook.get_task(task.task_id).output_urls


@pytest.fixture
def run(airflow_db: str, tmp_path: Path, urls: list[str]) -> Any:
    def run_dag(dag_id: str) -> Run:
        return Run(airflow_db, DAGS[dag_id].test(run_conf={"urls": urls, "folder": f"file://{tmp_path}/media"}))

    return run_dag


@pytest.fixture
def config_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS", "false")


def test_the_config_option_is_read_when_the_task_runs(
    run: Any,
    emulator: MindVideoEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The DAG was parsed (imported above) while the suite allowed private URLs.
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS", "false")
    refused = run("mv_guard_download_default")
    assert (refused.state, refused.tries("download")) == ("failed", 1)  # permanent: no retries
    assert emulator.state.requests["files"] == 0
    assert not (tmp_path / "media").exists() or os.listdir(tmp_path / "media") == []
    assert "127.0.0.1 is a loopback address" in capsys.readouterr().out

    monkeypatch.setenv("AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS", "true")
    allowed = run("mv_guard_download_default")
    assert allowed.state == "success"
    assert os.listdir(tmp_path / "media") == ["0.png"]


@pytest.mark.usefixtures("config_refuses")
def test_the_parameter_allows_what_the_config_refuses(run: Any, tmp_path: Path) -> None:
    result = run("mv_guard_download_allowed")
    assert result.state == "success"
    assert [e["written"] for e in result.xcom[("download", -1, "mindvideo_files")]] == [True]


def test_the_parameter_refuses_what_the_config_allows(
    run: Any, emulator: MindVideoEmulator, urls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert os.environ["AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS"] == "true"
    result = run("mv_guard_download_refused")
    assert (result.state, result.tries("download")) == ("failed", 1)
    assert emulator.state.requests["files"] == 0
    # dag.test() prints the task's failure with its traceback.
    assert f"PrivateAddressError: Refused to download {urls[0]}: 127.0.0.1 is a loopback address" in (
        capsys.readouterr().out
    )


def test_generate_refuses_a_private_download_once_and_pays_once(run: Any, emulator: MindVideoEmulator) -> None:
    result = run("mv_guard_generate_refused")
    assert (result.state, result.tries("generate")) == ("failed", 1)
    assert emulator.state.requests["files"] == 0
    assert emulator.state.charged_tasks == 2  # the `urls` fixture's task and this one


def test_the_option_is_declared_for_airflow() -> None:
    option = get_provider_info()["config"]["mindvideo"]["options"]["allow_private_urls"]
    assert (option["type"], option["default"]) == ("boolean", "False")


@pytest.mark.parametrize("deferrable", [True, False])
def test_generate_refuses_a_folder_it_cannot_write_before_creating_anything(
    emulator: MindVideoEmulator, deferrable: bool
) -> None:
    # It used to generate, pay, then fail with fsspec's FileNotFoundError (no word of
    # download_to) and retry; now the folder is made first, as the batch operator does.
    operator = MindVideoGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        input={"prompt": "a fox"},
        download_to="file:///proc/x",
        deferrable=deferrable,
    )
    with pytest.raises(InputValidationError, match=r"download_to = 'file:///proc/x': cannot be used as the folder"):
        operator.execute({"ti": Ti()})  # type: ignore[arg-type]
    assert emulator.state.requests["create"] == 0 and emulator.state.charged_tasks == 0


def test_download_names_its_destination_when_it_cannot_be_a_folder(urls: list[str]) -> None:
    operator = MindVideoDownloadOperator(task_id="save", urls=urls, destination="file:///proc/x")
    with pytest.raises(InputValidationError, match=r"destination = 'file:///proc/x': cannot be used as the folder"):
        operator.execute({"ti": Ti(task_id="save")})  # type: ignore[arg-type]

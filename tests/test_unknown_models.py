"""A model the catalogue does not know fails before anything is sent, unless the caller opts in."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_mindvideo.client.errors import InputValidationError, UnknownModelError
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from tests.conftest import Api
from tests.dags.mindvideo_model_dags import MODEL_DAGS
from tests.test_dags import Run


@pytest.mark.parametrize("typo", ["gpt-image2", "gpt-image-9"])
def test_a_misspelled_model_is_refused_before_any_request(api: Api, emulator: MindVideoEmulator, typo: str) -> None:
    with pytest.raises(UnknownModelError, match=r"did you mean 'gpt-image-2'\?"):
        api.create_task(typo, {"prompt": "a red fox"})
    assert sum(emulator.state.requests.values()) == 0
    assert emulator.state.charged_tasks == 0


def test_an_allowed_unknown_model_is_sent_and_the_server_judges_it(api: Api, emulator: MindVideoEmulator) -> None:
    # The emulator refuses what the API does not know, as the API would (422, nothing charged).
    with pytest.raises(InputValidationError) as info:
        api.create_task("gpt-image2", {"prompt": "a red fox"}, allow_unknown_model=True)
    assert not isinstance(info.value, UnknownModelError)
    assert info.value.http_status == 422
    assert "model = 'gpt-image2': not a MindVideo model" in str(info.value)
    assert emulator.state.requests["create"] == 1
    assert emulator.state.charged_tasks == 0


def test_a_model_newer_than_the_catalogue_is_created_when_allowed(
    api: Api, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator.state.config, "extra_models", {"veo4-preview": "video"})
    task = api.create_task("veo4-preview", {"prompt": "dolphins", "camera": "drone"}, allow_unknown_model=True)
    assert task.task_id in emulator.state.tasks
    assert emulator.state.charged_tasks == 1


def test_an_operator_with_a_misspelled_model_fails_at_once_without_retries(
    airflow_db: str, emulator: MindVideoEmulator, debug_logs: list[dict[str, Any]]
) -> None:
    run = Run(airflow_db, MODEL_DAGS["mv_misspelled_model"].test())
    assert run.state == "failed"
    assert run.tries("submit") == 1  # retries=2, unused: a typo stays a typo
    assert sum(emulator.state.requests.values()) == 0
    logged = "\n".join(str(e) for e in debug_logs)
    assert "UnknownModelError" in logged
    assert "model = " in logged
    assert "gpt-image2" in logged
    assert "did you mean " in logged


def test_an_operator_allowed_a_newer_model_generates_with_it(
    airflow_db: str, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator.state.config, "extra_models", {"veo4-preview": "video"})
    run = Run(airflow_db, MODEL_DAGS["mv_newer_model"].test())
    assert run.state == "success"
    (task,) = emulator.state.tasks.values()
    assert (task.model, task.input["camera"]) == ("veo4-preview", "drone")
    assert run.xcom[("generate", -1, "return_value")][0].endswith(".mp4")

"""Review regenerations: sent as the items were made (``allow_unknown_model``), and all checked before the first create."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.client.idempotency import key_of_generation
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.review.items import ReviewItem, ReviewState
from tests.review_helpers import item, run_round


def made(hook: MindVideoHook, number: int, model: str, request: dict[str, Any]) -> ReviewItem:
    """An item created as a Generate task would, under generation 0 of its own key."""
    stem = f"af-{number:040x}"
    task = hook.create_task(model, request, idempotency_key=key_of_generation(stem, 0), allow_unknown_model=True)
    return item(
        number, model=model, input=request, mindvideo_task_id=task.task_id, cost=task.cost_estimate, files=[],
        key_stem=stem,
    )  # fmt: skip


@pytest.fixture
def newer_model(emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(emulator.state.config, "extra_models", {"veo4-preview": "video"})
    return "veo4-preview"


def test_items_of_a_model_newer_than_the_catalogue_are_generated_again_with_it(
    emulator: MindVideoEmulator, newer_model: str
) -> None:
    hook = MindVideoHook()
    items = [
        made(hook, 1, "gpt-image-2", {"prompt": "fox", "size": "1:1"}),
        made(hook, 2, newer_model, {"prompt": "dolphins", "camera": "drone"}),
    ]
    state = ReviewState(round=0, max_rounds=2, pending=items)
    record, _ = run_round(state, {"item_1": "reject", "item_2": "reject"}, regenerate_rejected=True, poll_interval=0.05)
    assert [i.allow_unknown_model for i in items] == [False, True]  # read from the catalogue
    tasks = emulator.state.snapshot()["tasks"]
    assert len(tasks) == 4  # both made again
    assert [(i["number"], i["allow_unknown_model"]) for i in record["pending"]] == [(1, False), (2, True)]
    # The next round reads the flag back from the state's XCom.
    assert ReviewState.from_xcom(record).pending[1].allow_unknown_model is True


def test_one_regeneration_that_would_be_refused_stops_the_round_before_any_create(
    emulator: MindVideoEmulator,
) -> None:
    hook = MindVideoHook()
    fine = made(hook, 1, "gpt-image-2", {"prompt": "fox", "size": "1:1"})
    # Recorded by a provider whose catalogue knew more, or edited: the schema refuses it now.
    broken = item(2, "whale", input={"prompt": "whale", "size": "1:1", "n": 3}, key_stem="af-" + "2" * 40)
    state = ReviewState(round=0, max_rounds=2, pending=[fine, broken])
    creates = emulator.state.requests["create"]
    with pytest.raises(InputValidationError) as refused:
        run_round(state, {"item_1": "reject", "item_2": "reject"}, regenerate_rejected=True, poll_interval=0.05)
    assert "item 2: input.n = 3" in str(refused.value) and "nothing was sent" in str(refused.value)
    assert emulator.state.requests["create"] == creates  # the fox was not made again and paid for first

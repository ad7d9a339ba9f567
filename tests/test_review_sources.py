"""Where reviewed items come from, and the key a rejected one is generated again under, counted at the emulator.

Per source (a Generate task, a Submit + Sensor pair, a batch made by the real batch operator in a
``dag.test()``): one charge per rejected item, none for the approved, none when the review's
result task is retried, and the regeneration is the next generation of the very key that made
the item -- so a retry of the generating task and the review never make two tasks for one key
generation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo.batch.plan import load_manifest, load_work_list
from airflow_provider_mindvideo.batch.trigger import MindVideoBatchTrigger
from airflow_provider_mindvideo.client.idempotency import key_of_generation, key_stem
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.operators import MindVideoReviewItemsOperator
from airflow_provider_mindvideo.review.items import ReviewState
from tests.dags.mindvideo_review_dags import REVIEW_BATCH
from tests.review_helpers import FakeTI, run_round
from tests.test_dags import Run

MODEL = "gpt-image-2"
REGENERATE = {"regenerate_rejected": True, "poll_interval": 0.05}


def charges(emulator: MindVideoEmulator) -> int:
    return len(emulator.state.snapshot()["tasks"])


def replayed_free(emulator: MindVideoEmulator, key: str, request: dict[str, Any], task_id: str) -> bool:
    """Whether ``key`` names ``task_id`` at MindVideo: sending it again returns that task and charges nothing."""
    before = charges(emulator)
    return (
        MindVideoHook().create_task(MODEL, request, idempotency_key=key).task_id == task_id
        and charges(emulator) == before
    )


def reviewed_twice(state: ReviewState, choices: dict[str, Any]) -> dict[str, Any]:
    record, _ = run_round(state, choices, **REGENERATE)
    again, _ = run_round(state, choices, **REGENERATE)  # the result task retried: same answers, same keys
    assert again["pending"] == record["pending"]
    return record


def test_generate_records_regenerate_as_the_next_generation_of_their_recorded_key(emulator: MindVideoEmulator) -> None:
    hook = MindVideoHook()
    inputs = [{"prompt": "gen fox"}, {"prompt": "gen whale"}]
    stems = [key_stem("dag", "generate", "run_1", index, MODEL, request) for index, request in enumerate(inputs)]
    # The whale's generation 0 failed; its Generate task's second try made generation 1.
    records = []
    for index, (request, generation) in enumerate(zip(inputs, (0, 1), strict=True)):
        key = key_of_generation(stems[index], generation)
        task = hook.create_task(MODEL, request, idempotency_key=key)
        records.append({"task_id": task.task_id, "model": MODEL, "output_urls": [f"https://x/{index}.png"],
                        "idempotency_key": key, "key_generation": generation, "cost_estimate": task.cost_estimate})  # fmt: skip
    ti = FakeTI({("generate", "mindvideo_task"): records})
    MindVideoReviewItemsOperator(
        task_id="review_items", max_rounds=2, generate_task_id="generate", inputs=inputs
    ).execute(
        {"ti": ti}  # type: ignore[arg-type]
    )
    state = ReviewState.from_xcom(ti.pushed["mindvideo_review"])
    assert [(i.key_stem, i.key_generation) for i in state.pending] == [(stems[0], 0), (stems[1], 1)]

    record = reviewed_twice(state, {"item_1": "approve", "item_2": "reject"})
    assert charges(emulator) == 3  # one for the rejected whale, none for the fox, none for the retry
    (again,) = record["pending"]
    assert again["key_generation"] == 2
    assert replayed_free(emulator, key_of_generation(stems[1], 2), inputs[1], again["mindvideo_task_id"])


def test_submit_and_sensor_take_the_key_from_the_submit_task(emulator: MindVideoEmulator) -> None:
    hook = MindVideoHook()
    request = {"prompt": "submitted whale"}
    stem = key_stem("dag", "submit", "run_1", 0, MODEL, request)
    task = hook.create_task(MODEL, request, idempotency_key=key_of_generation(stem, 1))
    submitted = {"task_id": task.task_id, "model": MODEL, "idempotency_key": key_of_generation(stem, 1),
                 "key_generation": 1}  # fmt: skip
    # The sensor's record knows the outputs, not the key (nor the model).
    sensed = {"task_id": task.task_id, "status": "succeeded", "output_urls": ["https://x/w.png"], "cost_actual": 0.0135}
    ti = FakeTI({("wait", "mindvideo_task"): [sensed], ("submit", "mindvideo_task"): [submitted]})
    MindVideoReviewItemsOperator(
        task_id="review_items", max_rounds=2, generate_task_id="wait", key_task_id="submit", inputs=[request]
    ).execute({"ti": ti})  # type: ignore[arg-type]
    state = ReviewState.from_xcom(ti.pushed["mindvideo_review"])
    (only,) = state.pending
    assert (only.model, only.key_stem, only.key_generation) == (MODEL, stem, 1)

    record = reviewed_twice(state, {"item_1": "reject"})
    assert charges(emulator) == 2
    assert replayed_free(emulator, key_of_generation(stem, 2), request, record["pending"][0]["mindvideo_task_id"])


def test_a_real_batch_manifest_regenerates_under_the_batch_items_own_keys(
    airflow_db: str, emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    emulator.script("flaky", "failed", times=1)
    result_path = f"file://{tmp_path}/manifest.jsonl"
    run = Run(airflow_db, REVIEW_BATCH.test(run_conf={"result_path": result_path}))
    assert run.state == "success" and run.tries("generate") == 2
    rows = load_manifest((tmp_path / "manifest.jsonl").read_text())
    assert [row.key_generation for row in rows] == [0, 1, 0]
    work = load_work_list((tmp_path / "manifest.work.jsonl").read_text())
    assert charges(emulator) == 4  # three items, the flaky one twice

    summary = run.xcom[("generate", -1, "return_value")]
    ti = FakeTI()
    MindVideoReviewItemsOperator(task_id="review_items", max_rounds=2, batch_manifest=summary).execute({"ti": ti})  # type: ignore[arg-type]
    state = ReviewState.from_xcom(ti.pushed["mindvideo_review"])
    assert [i.prompt for i in state.pending] == [w.input["prompt"] for w in work]
    assert [i.mindvideo_task_id for i in state.pending] == [row.task_id for row in rows]
    assert [(i.key_stem, i.key_generation) for i in state.pending] == [(w.key_stem, r.key_generation) for w, r in zip(work, rows, strict=True)]  # fmt: skip

    record = reviewed_twice(state, {"item_1": "reject", "item_2": "reject", "item_3": "approve"})
    assert charges(emulator) == 6  # one per rejected item; none for the approved, none for the retry
    again = {i["number"]: i for i in record["pending"]}
    assert (again[1]["key_generation"], again[2]["key_generation"]) == (1, 2)
    for number, position in ((1, 0), (2, 1)):
        key = work[position].key(again[number]["key_generation"])
        assert replayed_free(emulator, key, dict(work[position].input), again[number]["mindvideo_task_id"])

    # A later try of the batch task walks the same keys: it replays what it made and creates nothing.
    trigger = MindVideoBatchTrigger(
        f"file://{tmp_path}/manifest.work.jsonl", result_path, try_number=3, max_generations=3,
        poll_interval=0.05, max_poll_interval=0.1, progress_interval=0.5,
    )  # fmt: skip

    async def events() -> list[Any]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())
    assert event["status"] == "done" and charges(emulator) == 6


def test_a_batch_manifest_without_its_work_list_is_refused_naming_it(tmp_path: Path) -> None:
    from airflow_provider_mindvideo.client.errors import InputValidationError

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"line": 1, "position": 0, "status": "succeeded", "output_urls": ["https://x/a.png"]}\n')
    review = MindVideoReviewItemsOperator(task_id="review_items", max_rounds=2, batch_manifest=manifest.as_uri())
    with pytest.raises(InputValidationError, match=r"manifest\.work\.jsonl .*does not exist"):
        review.execute({"ti": FakeTI()})  # type: ignore[arg-type]

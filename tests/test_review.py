"""The review of generated media: the page, the decisions, regenerating the rejected (against the emulator)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.errors import InputValidationError
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.idempotency import idempotency_key
from airflow_provider_mindvideo.review import (
    APPROVE,
    REJECT,
    KeySource,
    ReviewItem,
    ReviewState,
    check_page_size,
    decisions_from_response,
    items_from_batch_manifest,
    items_from_generated,
    regeneration_input,
    regeneration_key,
    review_body,
    review_params,
    within_ceiling,
)
from airflow_provider_mindvideo.review_operator import (
    XCOM_REVIEW_MANIFEST_KEY,
    MindVideoReviewOperator,
    review_rounds,
)

SOURCE = KeySource("dag", "generate", "run_1", 0)


def item(number: int, prompt: str = "a red fox", **changes: Any) -> ReviewItem:
    fields: dict[str, Any] = {
        "number": number,
        "model": "gpt-image-2",
        "input": {"prompt": prompt, "size": "1:1"},
        "mindvideo_task_id": f"task_{number}",
        "output_urls": [f"https://cdn.example/task_{number}/0.png"],
        "files": [f"file:///media/task_{number}_0.png"],
        "cost": 0.0135,
        "key_source": KeySource("dag", "generate", "run_1", number - 1),
        **changes,
    }
    return ReviewItem(**fields)


class FakeTI:
    """What the operator uses of a task instance: identity and XCom."""

    def __init__(self, xcoms: dict[tuple[str, str], Any] | None = None) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "dag", "review", "run_1", -1
        self.xcoms = dict(xcoms or {})
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, *, task_ids: str, key: str = "return_value", map_indexes: Any = None) -> Any:
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, *, key: str, value: Any) -> None:
        json.dumps(value)  # XCom must be JSON
        self.pushed[key] = value


# -- the page --------------------------------------------------------------------------------


def test_page_shows_each_output_by_its_url_with_prompt_model_cost_and_task() -> None:
    body = review_body(
        [item(1), item(2, output_urls=["https://cdn.example/v.mp4?sig=1"], cost=None)], round=1, max_rounds=2
    )
    assert "Round 1 of 2: 2 item(s)" in body
    assert (
        "| 1 | ![item 1, output 1](https://cdn.example/task_1/0.png) | a red fox | gpt\\-image\\-2 | 0.0135 |" in body
    )
    assert "[video 1](https://cdn.example/v.mp4?sig=1)" in body  # no poster: a link
    assert "| unknown |" in body


def test_a_prompt_is_shown_as_text_never_run_as_markdown() -> None:
    body = review_body([item(1, prompt="nice | ![track](http://evil.example/x.png) **bold**")], round=1, max_rounds=1)
    assert "![track]" not in body and "](http://evil" not in body
    assert "\\| \\!\\[track\\]\\(http://evil\\.example/x\\.png\\) \\*\\*bold\\*\\*" in body


def test_an_output_that_is_no_http_url_is_not_linked() -> None:
    body = review_body(
        [item(1, output_urls=["data:image/png;base64,AAAA", "file:///etc/passwd"])], round=1, max_rounds=1
    )
    assert "data:" not in body and "file:" not in body
    assert body.count("no http(s) URL to show") == 2


def test_form_has_a_choice_and_a_comment_per_item_preset_to_what_a_timeout_decides() -> None:
    none = review_params([item(1), item(2)], "approve_none")
    assert sorted(none) == ["item_1", "item_1_comment", "item_2", "item_2_comment"]
    assert none["item_1"]["enum"] == [APPROVE, REJECT] and none["item_1"]["default"] == REJECT
    assert none["item_1_comment"]["default"] is None
    assert review_params([item(1)], "approve_all")["item_1"]["default"] == APPROVE


def test_more_items_than_a_page_holds_are_refused_before_asking() -> None:
    check_page_size([item(1), item(2)], 2)
    with pytest.raises(InputValidationError, match="3 items to review, more than page_size=2"):
        check_page_size([item(1), item(2), item(3)], 2)


# -- decisions -------------------------------------------------------------------------------


def test_decisions_read_each_choice_and_comment_and_who_decided() -> None:
    decisions = decisions_from_response(
        [item(1), item(2), item(3)],
        {"item_1": "approve", "item_2": "reject", "item_2_comment": "  too dark ", "item_3": "maybe"},
        decided_by="alice",
        decided_at="2026-01-01T00:00:00+00:00",
        timed_out=False,
    )
    assert [d.approved for d in decisions] == [True, False, False]  # an unknown choice is no approval
    assert [d.comment for d in decisions] == [None, "too dark", None]
    assert {d.decided_by for d in decisions} == {"alice"}


# -- where items come from -------------------------------------------------------------------


def test_items_from_mapped_generation_take_prompts_records_and_saved_files() -> None:
    inputs = [{"prompt": "fox"}, {"prompt": "whale"}, {"prompt": "tea"}]
    records = [
        {"task_id": "t0", "model": "gpt-image-2", "output_urls": ["https://x/0.png"], "cost_actual": 0.02},
        {"task_id": "t1", "model": "gpt-image-2", "status": "failed", "output_urls": []},
        {"task_id": "t2", "model": "gpt-image-2", "output_urls": ["https://x/2.png"], "key_generation": 1},
    ]
    files = [[{"path": "file:///m/t0_0.png", "url": "https://x/0.png"}], None, ["file:///m/t2_0.png"]]
    items = items_from_generated(inputs, records, files, dag_id="d", task_id="generate", run_id="r")
    assert [(i.number, i.prompt, i.mindvideo_task_id) for i in items] == [(1, "fox", "t0"), (2, "tea", "t2")]
    assert items[0].files == ["file:///m/t0_0.png"] and items[0].cost == 0.02
    assert items[1].key_source == KeySource("d", "generate", "r", 2) and items[1].key_generation == 1
    with pytest.raises(InputValidationError, match="3 input\\(s\\) but 2 generation record"):
        items_from_generated(inputs, records[:2], None, dag_id="d", task_id="generate", run_id="r")


def test_items_from_a_batch_manifest_are_its_succeeded_rows() -> None:
    rows = [
        {"line": 0, "model": "gpt-image-2", "input": {"prompt": "a"}, "mindvideo_task_id": "t0", "status": "succeeded",
         "cost_estimate": 0.01, "output_urls": ["https://x/a.png"], "files": ["file:///m/a.png"], "error": None},
        {"line": 1, "model": "gpt-image-2", "input": {"prompt": "b"}, "mindvideo_task_id": "t1", "status": "failed",
         "cost_estimate": 0.01, "output_urls": [], "files": [], "error": "boom"},
    ]  # fmt: skip
    (only,) = items_from_batch_manifest(rows, dag_id="d", task_id="batch", run_id="r")
    assert (only.prompt, only.files, only.key_source) == ("a", ["file:///m/a.png"], KeySource("d", "batch", "r", 0))
    with pytest.raises(InputValidationError, match="line = 'x'"):
        items_from_batch_manifest([{**rows[0], "line": "x"}], dag_id="d", task_id="batch", run_id="r")


# -- regenerating ----------------------------------------------------------------------------


def test_regeneration_uses_the_items_next_key_generation_whatever_the_comment() -> None:
    fox = item(1, key_generation=2)
    key, generation = regeneration_key(fox, SOURCE)
    assert generation == 3
    assert key == idempotency_key("dag", "generate", "run_1", 0, "gpt-image-2", fox.input, 3)
    assert regeneration_input(fox, "warmer light", append_comment=False) == fox.input
    assert regeneration_input(fox, "warmer light", append_comment=True)["prompt"] == "a red fox\n\nwarmer light"


def test_ceiling_counts_what_was_spent_and_refuses_an_unknown_price() -> None:
    assert within_ceiling(0.0, 5.0, None)
    assert within_ceiling(0.02, 0.01, 0.03)
    assert not within_ceiling(0.025, 0.01, 0.03)
    assert not within_ceiling(0.0, None, 1.0)


def operator(**kwargs: Any) -> MindVideoReviewOperator:
    options: dict[str, Any] = {
        "task_id": "review",
        "generate_task_id": "generate",
        "inputs": [],
        "poll_interval": 0.05,
        **kwargs,
    }
    return MindVideoReviewOperator(**options)


def generated_items(hook: MindVideoHook, prompts: list[str]) -> list[ReviewItem]:
    items = []
    for number, prompt in enumerate(prompts, start=1):
        request = {"prompt": prompt, "size": "1:1"}
        key = idempotency_key("dag", "generate", "run_1", number - 1, "gpt-image-2", request, 0)
        task = hook.create_task("gpt-image-2", request, idempotency_key=key)
        items.append(
            item(number, prompt, mindvideo_task_id=task.task_id, cost=task.cost_estimate, files=[], output_urls=[])
        )
    return items


def reviewed(items: list[ReviewItem], answers: dict[str, Any]) -> dict[str, Any]:
    return {
        "chosen_options": ["Submit review"],
        "params_input": answers,
        "responded_at": datetime(2026, 1, 1, tzinfo=UTC),
        "responded_by_user": {"id": "u1", "name": "alice"},
    }


def test_approving_two_and_rejecting_one_pays_once_more_for_the_rejected_only(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    hook = MindVideoHook()
    items = generated_items(hook, ["fox", "whale", "tea"])
    assert emulator.state.total_charged == pytest.approx(3 * 0.0135)
    review = operator(regenerate_rejected=True, max_rounds=2, append_comment=True, download_to=tmp_path.as_uri())
    ti = FakeTI()
    context: Any = {"ti": ti}
    event = reviewed(items, {"item_1": "approve", "item_2": "reject", "item_2_comment": "bluer", "item_3": "approve"})
    state = review.apply(context, ReviewState(round=1, max_rounds=2), review.decisions(context, event, items))

    tasks = emulator.state.snapshot()["tasks"]
    assert len(tasks) == 4  # one more charge, for the whale
    assert [t["prompt"] for t in tasks[3:]] == ["whale\n\nbluer"]  # the comment, since append_comment=True
    assert [i.number for i in state.approved] == [1, 3] and state.rejected == []
    (again,) = state.pending
    assert (again.number, again.round, again.key_generation) == (2, 2, 1)
    assert again.mindvideo_task_id == tasks[3]["task_id"] and again.output_urls
    assert [Path(f).name for f in again.files] == [f"{again.mindvideo_task_id}_0.png"]
    assert (tmp_path / f"{again.mindvideo_task_id}_0.png").stat().st_size > 0
    assert state.spent == pytest.approx(0.0135)
    rows = {row["number"]: row for row in state.manifest}
    assert rows[2]["regenerated_as"] == again.mindvideo_task_id and rows[2]["comment"] == "bluer"
    assert {row["decided_by"] for row in rows.values()} == {"alice"}
    assert rows[1]["decided_at"] == "2026-01-01T00:00:00+00:00"

    # The review task retried (same key): the same regenerated task comes back, free.
    review.apply(context, ReviewState(round=1, max_rounds=2), review.decisions(context, event, items))
    assert len(emulator.state.snapshot()["tasks"]) == 4


def test_the_comment_stays_out_of_the_prompt_unless_opted_in(emulator: MindVideoEmulator) -> None:
    items = generated_items(MindVideoHook(), ["fox"])
    review = operator(regenerate_rejected=True, max_rounds=2)
    context: Any = {"ti": FakeTI()}
    event = reviewed(items, {"item_1": "reject", "item_1_comment": "bluer"})
    review.apply(context, ReviewState(round=1, max_rounds=2), review.decisions(context, event, items))
    assert [t["prompt"] for t in emulator.state.snapshot()["tasks"]] == ["fox", "fox"]


def test_the_last_round_and_the_ceiling_generate_nothing_more(emulator: MindVideoEmulator) -> None:
    items = generated_items(MindVideoHook(), ["fox", "whale"])
    context: Any = {"ti": FakeTI()}
    event = reviewed(items, {"item_1": "reject", "item_2": "reject"})
    last = operator(regenerate_rejected=True, max_rounds=2)
    state = last.apply(context, ReviewState(round=2, max_rounds=2), last.decisions(context, event, items))
    assert [i.number for i in state.rejected] == [1, 2] and not state.pending

    capped = operator(regenerate_rejected=True, max_rounds=3, max_cost=0.02)
    state = capped.apply(context, ReviewState(round=1, max_rounds=3), capped.decisions(context, event, items))
    assert len(emulator.state.snapshot()["tasks"]) == 3  # the fox again (0.0135); the whale would pass 0.02
    assert [i.number for i in state.pending] == [1] and [i.number for i in state.rejected] == [2]
    notes = {row["number"]: row["note"] for row in state.manifest}
    assert notes == {1: None, 2: "not generated again: max_cost=0.02"}


@pytest.mark.parametrize(("on_timeout", "approved"), [("approve_none", []), ("approve_all", [1, 2])])
def test_no_answer_in_time_decides_as_configured(on_timeout: Any, approved: list[int]) -> None:
    review = operator(on_timeout=on_timeout, response_timeout=timedelta(minutes=1))
    context: Any = {"ti": FakeTI()}
    items = [item(1), item(2)]
    # Without a response the trigger (3.2) or the scheduler (3.3) resumes with the form's pre-set values.
    defaults = {name: spec["default"] for name, spec in review_params(items, on_timeout).items()}
    event = {
        "chosen_options": ["Submit review"],
        "params_input": defaults,
        "responded_at": datetime(2026, 1, 1, tzinfo=UTC),
        "responded_by_user": None,
        "timedout": True,
    }
    for decisions in (
        review.decisions(context, event, items),
        review.decisions(context, {"error": "timeout", "error_type": "timeout"}, items),
    ):
        assert [d.item.number for d in decisions if d.approved] == approved
        assert all(d.timed_out and d.decided_by is None and d.decided_at for d in decisions)


def test_rounds_chain_and_a_round_with_nothing_left_returns_without_asking() -> None:
    from airflow.sdk import DAG

    with DAG("review_rounds", schedule=None, start_date=datetime(2026, 1, 1)):
        first, second, third = review_rounds(
            task_id="review", max_rounds=3, generate_task_id="generate", inputs=[], regenerate_rejected=True
        )
    assert [op.task_id for op in (first, second, third)] == ["review", "review_round_2", "review_round_3"]
    assert second.upstream_task_ids == {"review"} and third.upstream_task_ids == {"review_round_2"}

    previous = ReviewState(round=1, max_rounds=3, approved=[item(1)], manifest=[{"round": 1, "number": 1}])
    second.items = previous.to_xcom()
    ti = FakeTI()
    result = second.execute({"ti": ti})  # type: ignore[arg-type]
    assert result["round"] == 2 and result["approved_task_ids"] == ["task_1"]
    assert result["approved_files"] == ["file:///media/task_1_0.png"]
    assert ti.pushed[XCOM_REVIEW_MANIFEST_KEY] == [{"round": 1, "number": 1}]


def test_round_items_from_a_generation_and_from_a_batch_manifest(tmp_path: Path) -> None:
    ti = FakeTI(
        {
            ("generate", "mindvideo_task"): [
                {"task_id": "t0", "model": "gpt-image-2", "output_urls": ["https://x/0.png"], "key_generation": 0}
            ],
            ("generate", "mindvideo_files"): [[{"path": "file:///m/t0_0.png"}]],
        }
    )
    state, items = operator(inputs=[{"prompt": "fox"}]).round_items({"ti": ti})  # type: ignore[arg-type]
    assert state.round == 1 and [(i.prompt, i.files) for i in items] == [("fox", ["file:///m/t0_0.png"])]
    assert items[0].key_source == KeySource("dag", "generate", "run_1", 0)

    manifest = tmp_path / "batch.jsonl"
    row = {"line": 4, "model": "gpt-image-2", "input": {"prompt": "b"}, "mindvideo_task_id": "t4",
           "status": "succeeded", "cost_estimate": 0.01, "output_urls": ["https://x/b.png"], "files": [], "error": None}  # fmt: skip
    manifest.write_text(json.dumps(row) + "\n\n")
    batch = MindVideoReviewOperator(task_id="review", batch_manifest=str(manifest), key_task_id="batch")
    _, (only,) = batch.round_items({"ti": FakeTI()})  # type: ignore[arg-type]
    assert only.key_source == KeySource("dag", "batch", "run_1", 4)
    manifest.write_text("{not json\n")
    with pytest.raises(InputValidationError, match="line 1 is not JSON"):
        batch.round_items({"ti": FakeTI()})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of generate_task_id, batch_manifest, items"),
        ({"generate_task_id": "g"}, "needs inputs"),
        ({"generate_task_id": "g", "inputs": [], "on_timeout": "approve_some"}, "on_timeout = 'approve_some'"),
        ({"generate_task_id": "g", "inputs": [], "max_rounds": 0}, "max_rounds = 0"),
        ({"generate_task_id": "g", "inputs": [], "max_cost": -1}, "max_cost = -1"),
    ],
)
def test_bad_parameters_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MindVideoReviewOperator(task_id="review", **kwargs)


def test_a_round_asks_once_with_its_items_and_resumes_with_the_answer(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow.providers.standard.operators.hitl as hitl

    requests: list[dict[str, Any]] = []
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **request: requests.append(request))
    ti = FakeTI(
        {
            ("generate", "mindvideo_task"): [
                {"task_id": "t0", "model": "gpt-image-2", "output_urls": ["https://x/t0/0.png"], "cost_estimate": 0.01},
                {"task_id": "t1", "model": "gpt-image-2", "output_urls": ["https://x/t1/0.png"], "cost_estimate": 0.01},
            ]
        }
    )
    ti.id = "0190b7d4-0000-7000-8000-000000000000"  # type: ignore[attr-defined]
    review = operator(inputs=[{"prompt": "fox"}, {"prompt": "whale"}], max_rounds=1, body="Brand check")
    # Airflow 3.3 parks the task awaiting input; 3.2 defers it to the HITL trigger.
    with pytest.raises(BaseException) as waiting:  # noqa: PT011 - the class differs by Airflow version
        review.execute({"ti": ti, "task_instance": ti})  # type: ignore[arg-type]
    assert type(waiting.value).__name__ in ("TaskAwaitingInput", "TaskDeferred")
    (request,) = requests
    assert request["options"] == ["Submit review"] and request["defaults"] == ["Submit review"]
    assert request["body"].startswith("Brand check\n\nRound 1 of 1: 2 item(s)")
    assert "![item 2, output 1](https://x/t1/0.png)" in request["body"]
    assert request["params"]["item_1"]["value"] == "reject"
    assert request["params"]["item_1"]["schema"]["enum"] == ["approve", "reject"]

    ti.xcoms[("review", "mindvideo_review_round")] = ti.pushed["mindvideo_review_round"]
    resumed = operator(inputs=[{"prompt": "fox"}, {"prompt": "whale"}], max_rounds=1)
    result = resumed.execute_complete(
        {"ti": ti},  # type: ignore[arg-type]
        {
            "chosen_options": ["Submit review"],
            "params_input": {"item_1": "approve", "item_2": "reject", "item_2_comment": "off-brand"},
            "responded_at": datetime(2026, 1, 1, tzinfo=UTC),
            "responded_by_user": {"id": "u1", "name": "alice"},
        },
    )
    assert result["approved_task_ids"] == ["t0"] and [i["mindvideo_task_id"] for i in result["rejected"]] == ["t1"]
    assert [(r["decision"], r["comment"], r["decided_by"]) for r in ti.pushed[XCOM_REVIEW_MANIFEST_KEY]] == [
        ("approve", None, "alice"),
        ("reject", "off-brand", "alice"),
    ]
    assert emulator.state.snapshot()["tasks"] == []  # nothing regenerated: regenerate_rejected is off


def test_a_regeneration_that_fails_leaves_the_item_rejected_and_says_why(emulator: MindVideoEmulator) -> None:
    items = generated_items(MindVideoHook(), ["whale"])
    emulator.script("whale", "failed", error="content policy")
    review = operator(regenerate_rejected=True, max_rounds=2)
    context: Any = {"ti": FakeTI()}
    event = reviewed(items, {"item_1": "reject"})
    state = review.apply(context, ReviewState(round=1, max_rounds=2), review.decisions(context, event, items))
    assert [i.number for i in state.rejected] == [1] and not state.pending
    (row,) = state.manifest
    assert row["regenerated_as"] and "failed: content policy" in row["note"]
    assert len(emulator.state.snapshot()["tasks"]) == 2  # paid for, as any failed generation is

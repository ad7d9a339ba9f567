"""The review of generated media: the page, the pages of a round, the decisions, regenerating within max_cost."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo.client.errors import MindVideoError
from airflow_provider_mindvideo.client.idempotency import key_of_generation, split_key
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.operators import (
    MindVideoReviewItemsOperator,
    MindVideoReviewOperator,
    MindVideoReviewResultOperator,
    review_rounds,
)
from airflow_provider_mindvideo.review.items import (
    ReviewItem,
    ReviewState,
    decisions_from_response,
    decisions_of_pages,
    regeneration_input,
    regeneration_key,
    review_pages,
)
from airflow_provider_mindvideo.review.page import APPROVE, REJECT, review_body, review_params
from tests.review_helpers import FakeTI, answer, item, run_round

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
    assert "Round 1 of 2, page 2 of 3: 1 item(s)" in review_body([item(3)], round=1, max_rounds=2, page=2, pages=3)


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


def test_form_has_a_choice_and_a_comment_per_item_and_presets_no_choice_that_costs() -> None:
    # approve_none used to pre-set every item to "reject": a reviewer who only pressed Submit
    # regenerated, and paid for, every image. Now the reviewer must choose each.
    none = review_params([item(1), item(2)], "approve_none")
    assert sorted(none) == ["item_1", "item_1_comment", "item_2", "item_2_comment"]
    assert none["item_1"]["enum"] == [APPROVE, REJECT] and none["item_1"]["default"] is None
    assert none["item_1"]["type"] == "string"  # no null: the form requires a choice
    assert none["item_1_comment"]["default"] is None
    assert review_params([item(1)], "approve_all")["item_1"]["default"] == APPROVE  # approving costs nothing


def test_the_comment_field_says_whether_it_reaches_the_regeneration() -> None:
    assert "added to the prompt" in review_params([item(1)], "approve_none")["item_1_comment"]["description"]
    silent = review_params([item(1)], "approve_none", append_comment=False)["item_1_comment"]["description"]
    assert "not sent to the model" in silent


def test_a_comment_reaches_the_regeneration_by_default() -> None:
    from airflow.sdk import DAG

    result = MindVideoReviewResultOperator(task_id="r", previous={}, review_task_id="review")
    assert result.append_comment is True
    # append_comment=False reaches both the result (no comment sent) and the page (whose field says so).
    with DAG("comments", schedule=None, start_date=datetime(2026, 1, 1)):
        _, page, merged = review_rounds(generate_task_id="g", inputs=[], append_comment=False)
    assert page.partial_kwargs["append_comment"] is False and merged.append_comment is False


# -- pages -----------------------------------------------------------------------------------


def test_a_large_set_is_split_into_pages_of_page_size_keeping_each_items_number() -> None:
    items = [item(number) for number in range(1, 27)]
    pages = review_pages(items, round=2, max_rounds=3, page_size=12)
    assert [(p["round"], p["page"], p["pages"], len(p["items"])) for p in pages] == [
        (2, 1, 3, 12),
        (2, 2, 3, 12),
        (2, 3, 3, 2),
    ]
    assert [record["number"] for page in pages for record in page["items"]] == list(range(1, 27))
    assert review_pages([], round=1, max_rounds=1, page_size=12) == []  # nothing to map over: no page asks


def test_the_pages_decisions_merge_into_one_list_and_a_missing_page_is_an_error() -> None:
    items = [item(number) for number in range(1, 4)]
    first = decisions_from_response(items[:2], {"item_1": "approve"}, decided_by="a", decided_at="t", timed_out=False)
    second = decisions_from_response(items[2:], {"item_3": "approve"}, decided_by="b", decided_at="t", timed_out=False)
    answers = [{"decisions": [d.to_xcom() for d in first]}, {"decisions": [d.to_xcom() for d in second]}]
    merged = decisions_of_pages(items, answers)
    assert [(d.item.number, d.approved, d.decided_by) for d in merged] == [
        (1, True, "a"),
        (2, False, "a"),
        (3, True, "b"),
    ]
    with pytest.raises(MindVideoError, match=r"no decision for item\(s\) \[3\]"):
        decisions_of_pages(items, answers[:1])


def test_thirty_items_are_reviewed_on_three_pages_and_merged_into_one_manifest(emulator: MindVideoEmulator) -> None:
    items = [item(number) for number in range(1, 31)]
    choices = {f"item_{n}": "approve" for n in range(1, 31) if n % 3}
    record, ti = run_round(ReviewState(round=0, max_rounds=1, pending=items), choices)
    assert record["round"] == 1 and len(record["manifest"]) == 30
    assert [i["number"] for i in record["approved"]] == [n for n in range(1, 31) if n % 3]
    assert [i["number"] for i in record["rejected"]] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert ti.pushed["mindvideo_review_manifest"] == record["manifest"]
    assert emulator.state.snapshot()["tasks"] == []  # nothing regenerated: regenerate_rejected is off


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


@pytest.mark.parametrize(("on_timeout", "approved"), [("approve_none", []), ("approve_all", [1, 2])])
def test_no_answer_in_time_decides_as_configured(on_timeout: Any, approved: list[int]) -> None:
    review = MindVideoReviewOperator(task_id="review", on_timeout=on_timeout, response_timeout=timedelta(minutes=1))
    items = [item(1), item(2)]
    # Without a response the trigger (3.2) or the scheduler (3.3) resumes with the form's pre-set values.
    defaults = {name: spec["default"] for name, spec in review_params(items, on_timeout).items()}
    event = {**answer(defaults, user=None), "timedout": True}
    for decisions in (
        review.decisions(event, items),
        review.decisions({"error": "timeout", "error_type": "timeout"}, items),
    ):
        assert [d.item.number for d in decisions if d.approved] == approved
        assert all(d.timed_out and d.decided_by is None and d.decided_at for d in decisions)


# -- regenerating ----------------------------------------------------------------------------


def test_regeneration_uses_the_next_generation_of_the_items_key_whatever_the_comment() -> None:
    fox = item(1, key_stem="af-" + "a" * 40, key_generation=2)
    assert regeneration_key(fox) == ("af-" + "a" * 40 + "-0003", 3)
    assert regeneration_input(fox, "warmer light", append_comment=False) == fox.input
    assert regeneration_input(fox, "warmer light", append_comment=True)["prompt"] == "a red fox\n\nwarmer light"


def test_keys_are_read_as_numbered_only_in_this_providers_form() -> None:
    assert split_key("af-" + "b" * 40 + "-0007") == ("af-" + "b" * 40, 7)
    # An explicit key is its own stem: "launch-2024" is not generation 2024 of "launch".
    assert split_key("launch-2024") == ("launch-2024", 0)
    assert key_of_generation(*split_key("launch-2024")[:1], 1) == "launch-2024-0001"


def generated_items(hook: MindVideoHook, prompts: list[str]) -> list[ReviewItem]:
    """Items created as a Generate task would: under generation 0 of a key each."""
    items = []
    for number, prompt in enumerate(prompts, start=1):
        request = {"prompt": prompt, "size": "1:1"}
        stem = f"af-{number:040x}"
        task = hook.create_task("gpt-image-2", request, idempotency_key=key_of_generation(stem, 0))
        items.append(
            item(number, prompt, mindvideo_task_id=task.task_id, cost=task.cost_estimate, files=[], key_stem=stem)
        )
    return items


def test_approving_two_and_rejecting_one_pays_once_more_for_the_rejected_only(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    items = generated_items(MindVideoHook(), ["fox", "whale", "tea"])
    assert emulator.state.total_charged == pytest.approx(3 * 0.0135)
    options = {
        "regenerate_rejected": True,
        "append_comment": True,
        "download_to": tmp_path.as_uri(),
        "poll_interval": 0.05,
    }
    state = ReviewState(round=0, max_rounds=2, pending=items)
    choices = {"item_1": "approve", "item_2": "reject", "item_2_comment": "bluer", "item_3": "approve"}
    record, _ = run_round(state, choices, **options)

    tasks = emulator.state.snapshot()["tasks"]
    assert len(tasks) == 4  # one more charge, for the whale
    assert [t["prompt"] for t in tasks[3:]] == ["whale\n\nbluer"]  # the comment, since append_comment=True
    assert [i["number"] for i in record["approved"]] == [1, 3] and record["rejected"] == []
    (again,) = record["pending"]
    assert (again["number"], again["round"], again["key_generation"]) == (2, 2, 1)
    assert again["mindvideo_task_id"] == tasks[3]["task_id"] and again["output_urls"]
    assert [Path(f).name for f in again["files"]] == [f"{again['mindvideo_task_id']}_0.png"]
    assert (tmp_path / f"{again['mindvideo_task_id']}_0.png").stat().st_size > 0
    assert record["spent"] == pytest.approx(0.0135)
    rows = {row["number"]: row for row in record["manifest"]}
    assert rows[2]["regenerated_as"] == again["mindvideo_task_id"] and rows[2]["comment"] == "bluer"
    assert {row["decided_by"] for row in rows.values()} == {"alice"}
    assert rows[1]["decided_at"] == "2026-01-01T00:00:00+00:00"

    # The result task retried (the same answers, the same keys): the same regenerated task comes back, free.
    run_round(state, choices, **options)
    assert len(emulator.state.snapshot()["tasks"]) == 4


def test_the_comment_stays_out_of_the_prompt_when_opted_out(emulator: MindVideoEmulator) -> None:
    items = generated_items(MindVideoHook(), ["fox"])
    run_round(
        ReviewState(round=0, max_rounds=2, pending=items),
        {"item_1": "reject", "item_1_comment": "bluer"},
        regenerate_rejected=True,
        append_comment=False,
        poll_interval=0.05,
    )
    assert [t["prompt"] for t in emulator.state.snapshot()["tasks"]] == ["fox", "fox"]


def test_the_last_round_generates_nothing_more(emulator: MindVideoEmulator) -> None:
    items = generated_items(MindVideoHook(), ["fox", "whale"])
    state = ReviewState(round=1, max_rounds=2, pending=items)
    record, _ = run_round(state, {"item_1": "reject", "item_2": "reject"}, regenerate_rejected=True)
    assert [i["number"] for i in record["rejected"]] == [1, 2] and not record["pending"]
    assert len(emulator.state.snapshot()["tasks"]) == 2


def test_max_cost_holds_across_rounds_through_the_budget(emulator: MindVideoEmulator) -> None:
    items = generated_items(MindVideoHook(), ["fox", "whale"])
    options = {"regenerate_rejected": True, "max_cost": 0.03, "poll_interval": 0.05}
    both = {"item_1": "reject", "item_2": "reject"}
    first, _ = run_round(ReviewState(round=0, max_rounds=3, pending=items), both, **options)
    # Round 1: both again (2 x 0.0135 = 0.027 <= 0.03).
    assert len(emulator.state.snapshot()["tasks"]) == 4 and first["spent"] == pytest.approx(0.027)
    second, _ = run_round(ReviewState.from_xcom(first), both, **options)
    # Round 2: what round 1 spent counts: a third regeneration would pass 0.03; nothing is created.
    assert len(emulator.state.snapshot()["tasks"]) == 4 and second["spent"] == pytest.approx(0.027)
    assert [i["number"] for i in second["rejected"]] == [1, 2] and not second["pending"]
    notes = [row["note"] for row in second["manifest"] if row["round"] == 2]
    assert all(note.startswith("not generated again: max_cost = 0.03") for note in notes), notes
    assert emulator.state.total_charged <= 2 * 0.0135 + 0.03 + 1e-9


def test_a_regeneration_that_fails_leaves_the_item_rejected_and_says_why(emulator: MindVideoEmulator) -> None:
    items = generated_items(MindVideoHook(), ["whale"])
    emulator.script("whale", "failed", error="content policy")
    record, _ = run_round(
        ReviewState(round=0, max_rounds=2, pending=items), {"item_1": "reject"}, regenerate_rejected=True,
        poll_interval=0.05,
    )  # fmt: skip
    assert [i["number"] for i in record["rejected"]] == [1] and not record["pending"]
    (row,) = record["manifest"]
    assert row["regenerated_as"] and "failed: content policy" in row["note"]
    assert len(emulator.state.snapshot()["tasks"]) == 2  # paid for, as any failed generation is


# -- the tasks -------------------------------------------------------------------------------


def test_rounds_are_an_items_step_then_pages_and_a_result_per_round() -> None:
    from airflow.sdk import DAG

    with DAG("review_rounds", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        tasks = review_rounds(
            task_id="review", max_rounds=2, page_size=5, generate_task_id="generate", inputs=[],
            regenerate_rejected=True, on_timeout="approve_all", retries=3,
        )  # fmt: skip
    names = [task.task_id for task in tasks]
    assert names == ["review_items", "review", "review_result", "review_round_2", "review_round_2_result"]
    assert dag.get_task("review_result").upstream_task_ids == {"review", "review_items"}
    assert dag.get_task("review_round_2").upstream_task_ids == {"review_result"}
    assert dag.get_task("review_result").trigger_rule.value == "none_failed"  # runs when a round has no page
    assert dag.get_task("review").partial_kwargs["retries"] == 0  # a retried page would ask again
    assert dag.get_task("review_result").retries == 3
    assert tasks[-1].page_size == 5


def test_a_round_with_nothing_left_asks_nothing_and_passes_the_state_on() -> None:
    previous = ReviewState(round=1, max_rounds=2, approved=[item(1)], manifest=[{"round": 1, "number": 1}])
    ti = FakeTI(task_id="review_round_2_result")
    result = MindVideoReviewResultOperator(task_id="r", previous=previous.to_xcom(), review_task_id="review_round_2")
    record = result.execute({"ti": ti})  # type: ignore[arg-type]
    assert record["round"] == 2 and record["approved_task_ids"] == ["task_1"]
    assert record["approved_files"] == ["file:///media/task_1_0.png"]
    assert ti.pushed["mindvideo_review_manifest"] == [{"round": 1, "number": 1}]


def test_a_page_asks_once_with_its_items_and_resumes_with_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.providers.standard.operators.hitl as hitl

    requests: list[dict[str, Any]] = []
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **request: requests.append(request))
    items = [item(1, "fox"), item(2, "whale")]
    (page,) = review_pages(items, round=1, max_rounds=1, page_size=12)
    ti = FakeTI()
    ti.id = "0190b7d4-0000-7000-8000-000000000000"  # type: ignore[attr-defined]
    review = MindVideoReviewOperator(task_id="review", page=page, body="Brand check")
    # Airflow 3.3 parks the task awaiting input; 3.2 defers it to the HITL trigger.
    with pytest.raises(BaseException) as waiting:  # noqa: PT011 - the class differs by Airflow version
        review.execute({"ti": ti, "task_instance": ti})  # type: ignore[arg-type]
    assert type(waiting.value).__name__ in ("TaskAwaitingInput", "TaskDeferred")
    (request,) = requests
    assert request["options"] == ["Submit review"] and request["defaults"] == ["Submit review"]
    assert request["body"].startswith("Brand check\n\nRound 1 of 1: 2 item(s)")
    assert "![item 2, output 1](https://cdn.example/task_2/0.png)" in request["body"]
    assert request["params"]["item_1"]["value"] is None  # nothing pre-set that would cost
    assert request["params"]["item_1"]["schema"]["enum"] == ["approve", "reject"]

    ti.xcoms[("review", "mindvideo_review_page")] = ti.pushed["mindvideo_review_page"]
    resumed = MindVideoReviewOperator(task_id="review", page=page)
    result = resumed.execute_complete(
        {"ti": ti},  # type: ignore[arg-type]
        answer({"item_1": "approve", "item_2": "reject", "item_2_comment": "off-brand"}),
    )
    assert (result["round"], result["page"]) == (1, 1)
    assert [(d["item"]["number"], d["approved"], d["comment"], d["decided_by"]) for d in result["decisions"]] == [
        (1, True, None, "alice"),
        (2, False, "off-brand", "alice"),
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MindVideoReviewItemsOperator(task_id="r"), "exactly one of generate_task_id"),
        (lambda: MindVideoReviewItemsOperator(task_id="r", generate_task_id="g"), "needs inputs"),
        (lambda: MindVideoReviewOperator(task_id="r", on_timeout="approve_some"), "on_timeout = 'approve_some'"),
        (lambda: review_rounds(generate_task_id="g", inputs=[], max_rounds=0), "max_rounds = 0"),
        (lambda: review_rounds(generate_task_id="g", inputs=[], page_size=0), "page_size = 0"),
        (
            lambda: MindVideoReviewResultOperator(task_id="r", previous={}, review_task_id="p", max_cost=-1),
            "max_cost = -1",
        ),
    ],
)
def test_bad_parameters_fail_when_the_dag_is_parsed(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()

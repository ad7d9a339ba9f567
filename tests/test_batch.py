"""The batch's pure parts: reading inputs, checking them all, keys, the summary and max_failed."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_mindvideo.batch.plan import (
    FAILED,
    OVER_BUDGET,
    SUCCEEDED,
    BatchSummary,
    ItemResult,
    allowed_failures,
    check_max_failed,
    dump_work_list,
    entries_from_csv,
    entries_from_jsonl,
    entries_from_list,
    load_work_list,
    progress_line,
    summarize,
    too_many_failed,
    work_list,
)
from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.client.idempotency import idempotency_key


@dataclass
class Ti:
    dag_id: str = "batch_dag"
    task_id: str = "generate"
    run_id: str = "manual__1"
    map_index: int | None = -1


def items_of(inputs: list[object], model: str | None = "gpt-image-2") -> list[object]:
    return list(work_list(entries_from_list(inputs), model, Ti()))


def test_every_bad_line_is_named_in_one_error_and_nothing_passes() -> None:
    text = "\n".join(
        [
            json.dumps({"prompt": "a fox"}),
            "{not json",
            "",  # blank lines are no items, but the numbering stays the file's
            json.dumps({"prompt": "a cat", "size": "huge"}),
            json.dumps(["a list"]),
            json.dumps({"model": "gpt-imag-2", "prompt": "typo"}),
            json.dumps({"prompt": "fine too"}),
        ]
    )
    with pytest.raises(InputValidationError) as refused:
        work_list(entries_from_jsonl(text), "gpt-image-2", Ti(), source="file:///in.jsonl")
    message = str(refused.value)
    assert message.startswith("4 invalid item(s) in file:///in.jsonl; nothing was sent")
    assert "line 2: is not JSON" in message
    assert "line 4: input.size = 'huge'" in message
    assert "line 5: ['a list'] is not an object" in message
    assert (
        "line 6: model = 'gpt-imag-2': not a MindVideo model this provider knows; did you mean 'gpt-image-2'" in message
    )
    assert "line 1" not in message and "line 7" not in message
    assert "allow_unknown_model=True" in message


def test_an_item_names_its_own_model_either_way() -> None:
    items = items_of(
        [
            {"prompt": "default"},
            {"model": "kling-v3", "prompt": "flat", "aspect_ratio": "16:9"},
            {"model": "kling-v3", "input": {"prompt": "enveloped"}},
        ]
    )
    assert [(i.model, dict(i.input)) for i in items] == [  # type: ignore[attr-defined]
        ("gpt-image-2", {"prompt": "default"}),
        ("kling-v3", {"prompt": "flat", "aspect_ratio": "16:9"}),
        ("kling-v3", {"prompt": "enveloped"}),
    ]


def test_without_an_operator_model_every_item_needs_one() -> None:
    with pytest.raises(InputValidationError, match=r"item 1: model = None: must be a MindVideo model slug"):
        items_of([{"prompt": "x"}], model=None)


def test_csv_rows_are_typed_by_the_schema_and_numbered_by_their_line() -> None:
    text = 'prompt,n,size,model\n"a fox, at dawn",1,16:9,\n"a\nwrapped prompt",1,,\n42,x,,\n'
    entries = entries_from_csv(text, "gpt-image-2")
    assert [e.line for e in entries] == [2, 4, 5]
    assert entries[0].value == {"model": "gpt-image-2", "input": {"prompt": "a fox, at dawn", "n": 1, "size": "16:9"}}
    assert entries[2].value["input"] == {"prompt": "42", "n": "x"}  # a string field stays text
    with pytest.raises(
        InputValidationError,
        match=r"^1 invalid item\(s\) in in.csv.*\nline 5: .*input.n = 'x': must be of type integer",
    ):
        work_list(entries, "gpt-image-2", Ti(), source="in.csv")


def test_keys_differ_by_position_and_content_and_are_stable() -> None:
    first = items_of([{"prompt": "same"}, {"prompt": "same"}, {"prompt": "other"}])
    again = items_of([{"prompt": "same"}, {"prompt": "same"}, {"prompt": "other"}])
    keys = [item.key(0) for item in first]  # type: ignore[attr-defined]
    assert keys == [item.key(0) for item in again]  # type: ignore[attr-defined]
    assert len(set(keys)) == 3
    assert first[0].key(1) != keys[0] and first[0].key(1).endswith("-0001")  # type: ignore[attr-defined]
    # A batch item's keys are never a single task's (no item position in those).
    single = idempotency_key("batch_dag", "generate", "manual__1", -1, "gpt-image-2", {"prompt": "same"}, 0)
    assert single not in keys


def test_the_work_list_round_trips() -> None:
    items = items_of([{"prompt": "a"}, {"model": "kling-v3", "prompt": "b"}])
    assert load_work_list(dump_work_list(items)) == items  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("max_failed", "items", "allowed"), [(0, 10, 0), (3, 10, 3), (0.1, 10, 1), (0.05, 10, 0), (1.0, 7, 7), (0.3, 10, 3)]
)
def test_max_failed_is_a_count_or_a_fraction_rounded_down(max_failed: float, items: int, allowed: int) -> None:
    assert allowed_failures(max_failed, items) == allowed


@pytest.mark.parametrize("bad", [-1, 1.5, -0.1, True, "3"])
def test_max_failed_that_is_neither_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="max_failed"):
        check_max_failed(bad)  # type: ignore[arg-type]


def test_the_summary_counts_outcomes_and_costs_and_judges_failures() -> None:
    rows = [
        ItemResult(1, 0, "gpt-image-2", SUCCEEDED, cost_estimate=0.0135, cost_actual=0.0135),
        ItemResult(2, 1, "gpt-image-2", FAILED, cost_estimate=0.0135, cost_actual=0.0135, retryable=True),
        ItemResult(3, 2, "gpt-image-2", OVER_BUDGET),
    ]
    summary = summarize(rows, "file:///m.jsonl", max_cost=0.03, spent=0.027)
    assert summary.counts[SUCCEEDED] == 1 and summary.counts[OVER_BUDGET] == 1
    assert (summary.failed, summary.retryable_failures) == (2, 1)
    assert (summary.cost_estimate, summary.cost_actual) == (0.027, 0.027)
    assert too_many_failed(summary, 1) and not too_many_failed(summary, 2) and not too_many_failed(summary, 0.7)
    assert BatchSummary.from_xcom(json.loads(json.dumps(summary.to_xcom()))) == summary


@given(done=st.integers(0, 10_000), in_flight=st.integers(0, 500), elapsed=st.floats(0, 1e6, allow_nan=False))
def test_the_progress_line_always_adds_up(done: int, in_flight: int, elapsed: float) -> None:
    total = 10_000
    in_flight = min(in_flight, total - done)
    line = progress_line(
        total=total, counts={SUCCEEDED: done}, in_flight=in_flight, spent=1.5, max_cost=3.0, elapsed=elapsed
    )
    assert f"{done}/{total} done" in line
    assert f"{in_flight} in flight, {total - done - in_flight} waiting" in line
    assert "cost estimate so far 1.5 of max_cost 3" in line
    assert ("left" in line) or ("all done" in line) or ("not known yet" in line)
    assert "saved" not in line
    with_saving = progress_line(
        total=total, counts={SUCCEEDED: done}, in_flight=in_flight, spent=1.5, max_cost=3.0, elapsed=elapsed, saved=7
    )
    assert "waiting; 7 saved; cost estimate" in with_saving


def test_a_csv_saved_with_a_byte_order_mark_reads_its_header() -> None:
    entries = entries_from_csv("\ufeffprompt,size\nA red fox,1:1\n", "gpt-image-2")
    items = work_list(entries, "gpt-image-2", Ti(), source="in.csv")
    assert [dict(item.input) for item in items] == [{"prompt": "A red fox", "size": "1:1"}]


def test_a_csv_header_naming_a_column_twice_is_refused_naming_it() -> None:
    with pytest.raises(InputValidationError, match=r"'prompt'.*twice|twice.*'prompt'"):
        entries_from_csv("prompt,size,prompt\nfirst,1:1,second\n", "gpt-image-2")


def test_a_manifest_row_is_rendered_as_every_field_of_the_row_in_order() -> None:
    import dataclasses

    from airflow_provider_mindvideo.batch.plan import dump_manifest, manifest_chunk

    row = ItemResult(line=3, position=2, model="gpt-image-2", status="succeeded", task_id="tsk_1", error="é")
    row.output_urls.append("https://cdn.example/1.png")
    row.files.append({"url": "https://cdn.example/1.png", "path": "file:///m/tsk_1_0.png", "bytes": 9, "written": True})
    row.note_task(0, "mv-key-0", "tsk_1", 0.0135, try_number=1)
    assert json.loads(row.to_json()) == dataclasses.asdict(row)
    assert list(json.loads(row.to_json())) == [f.name for f in dataclasses.fields(ItemResult)]
    assert ItemResult.from_json(row.to_json()) == row
    rows = [row, ItemResult(line=4, position=3, model="gpt-image-2")]
    assert manifest_chunk(rows) == dump_manifest(rows).encode("utf-8")

"""Text that breaks line-based files: line separators, NUL, RTL marks in prompts and in the server's errors;
torn and corrupt records between tries; CSV files that are not UTF-8, have giant cells or unnamed columns;
a batch of nothing. Through the real round trip: inputs -> work list -> trigger -> manifest -> resumed operator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_mindvideo.batch.plan import (
    ItemResult,
    dump_manifest,
    dump_work_list,
    entries_from_csv,
    entries_from_jsonl,
    entries_from_list,
    load_manifest,
    work_list,
)
from airflow_provider_mindvideo.batch.trigger import DONE, MindVideoBatchTrigger
from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator
from tests.dags.mindvideo_batch_dags import DAGS
from tests.helpers import Ti
from tests.test_dags import dag_runner

#: Every character str.splitlines() splits at but JSON keeps raw in a string, and others that
#: break naive tools: CR, NUL, right-to-left marks and overrides.
HOSTILE = ["\u2028", "\u0085", "\u2029", "\r", "\x00", "\u200f", "\u202e", "\x0b", "\x0c", "\x1c", "\r\n"]
PROMPTS = [f"flaky {i}{ch}after" if i == 0 else f"prompt {i}{ch}after" for i, ch in enumerate(HOSTILE)]
SERVER_ERROR = "model says\u2028no\u0085really\u2029no\r\x00\u202eevil"


@pytest.fixture
def run(airflow_db: str, emulator: MindVideoEmulator, tmp_path: Path) -> Any:
    return dag_runner(airflow_db, DAGS, inputs_path="", result_path=f"file://{tmp_path}/manifest.jsonl")


def manifest_rows(path: Path) -> list[ItemResult]:
    return load_manifest(path.read_text(encoding="utf-8"))


# -- any text round-trips ----------------------------------------------------------------------


def test_a_jsonl_inputs_file_with_line_separators_in_strings_reads_one_item_per_line() -> None:
    text = "".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in PROMPTS)
    entries = entries_from_jsonl(text)
    assert [entry.value["prompt"] for entry in entries] == PROMPTS
    assert [entry.line for entry in entries] == list(range(1, len(PROMPTS) + 1))


def test_manifest_rows_with_any_text_round_trip_and_never_hold_a_raw_line_separator() -> None:
    rows = [ItemResult(line=1, position=0, model="gpt-image-2", error=SERVER_ERROR + ch) for ch in HOSTILE]
    text = dump_manifest(rows)
    assert load_manifest(text) == rows
    # Written so that even a reader splitting at every Unicode line break reads each row whole.
    assert len(text.splitlines()) == len(rows)


def test_hostile_prompts_and_server_errors_survive_work_list_trigger_manifest_and_a_retry(
    run: Any, emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    inputs = tmp_path / "prompts.jsonl"
    inputs.write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in PROMPTS), encoding="utf-8")
    emulator.script("flaky", "failed", times=1, error=SERVER_ERROR)  # try 1's manifest records this text
    result = run("mv_batch_from_file", inputs_path=f"file://{inputs}")
    assert result.state == "success"
    assert result.tries("generate") == 2  # try 2 read try 1's manifest, with the server's text in it
    sent = [task["prompt"] for task in emulator.state.snapshot()["tasks"]]
    assert sorted(sent) == sorted([PROMPTS[0], *PROMPTS])  # exactly as written, the flaky one twice
    rows = manifest_rows(tmp_path / "manifest.jsonl")
    assert [row.status for row in rows] == ["succeeded"] * len(PROMPTS)
    assert [len(row.tasks) for row in rows] == [2] + [1] * (len(PROMPTS) - 1)


# -- records damaged between tries ---------------------------------------------------------------


def write_work(folder: Path, prompts: list[str]) -> None:
    items = work_list(entries_from_list([{"prompt": p} for p in prompts]), "gpt-image-2", Ti())
    (folder / "work.jsonl").write_text(dump_work_list(items), encoding="utf-8")


def trigger_events(folder: Path, try_number: int = 1) -> list[dict[str, Any]]:
    trigger = MindVideoBatchTrigger(
        f"file://{folder}/work.jsonl",
        f"file://{folder}/manifest.jsonl",
        try_number=try_number,
        max_generations=3,
        poll_interval=0.05,
        max_poll_interval=0.1,
        max_cost=1.0,
    )

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(events())


def refused_for_good(event: dict[str, Any]) -> str:
    """The event's error, checked to be one the operator raises as a failure no retry repeats."""
    from airflow_provider_mindvideo.client import errors

    assert event["status"] != DONE, event
    error_class = getattr(errors, event["error_type"])
    assert issubclass(error_class, AirflowFailException), event["error_type"]
    return str(event["message"])


@pytest.mark.parametrize("damage", ["torn last line", "corrupt middle line"])
def test_a_damaged_manifest_stops_the_next_try_before_any_create_naming_file_line_and_remedy(
    emulator: MindVideoEmulator, tmp_path: Path, damage: str
) -> None:
    write_work(tmp_path, [f"paid {i}" for i in range(3)])
    (first,) = trigger_events(tmp_path)
    assert first["status"] == DONE
    manifest = tmp_path / "manifest.jsonl"
    lines = manifest.read_text().split("\n")
    if damage == "torn last line":
        manifest.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
        line = 3
    else:
        manifest.write_text("\n".join([lines[0], lines[1][:20], *lines[2:]]))
        line = 2
    creates = emulator.state.requests["create"]
    (event,) = trigger_events(tmp_path, try_number=2)
    message = refused_for_good(event)
    assert f"{manifest.as_uri()}" in message or str(manifest) in message
    assert f"line {line}" in message
    assert "restore it" in message.lower()  # what to do
    assert emulator.state.requests["create"] == creates  # nothing sent on a record it cannot read


def test_a_torn_last_intent_is_dropped_its_create_was_never_sent(emulator: MindVideoEmulator, tmp_path: Path) -> None:
    write_work(tmp_path, ["one", "two"])
    intents = tmp_path / "manifest.intents"
    intents.mkdir()
    whole = json.dumps({"idempotency_key": "af-" + "0" * 40 + "-g0", "position": 0, "held": 0.0135})
    (intents / "run-000000.jsonl").write_text(whole + "\n" + whole[:25])  # its writer was stopped mid-line
    (event,) = trigger_events(tmp_path)
    assert event["status"] == DONE, event
    assert event["summary"]["counts"]["succeeded"] == 2


def test_a_corrupt_intent_that_is_not_the_last_line_stops_the_batch_naming_it(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    write_work(tmp_path, ["one", "two"])
    intents = tmp_path / "manifest.intents"
    intents.mkdir()
    whole = json.dumps({"idempotency_key": "af-" + "0" * 40 + "-g0", "position": 0, "held": 0.0135})
    (intents / "run-000000.jsonl").write_text(whole[:25] + "\n" + whole + "\n")
    (event,) = trigger_events(tmp_path)
    message = refused_for_good(event)
    assert "run-000000.jsonl" in message and "line 1" in message
    assert emulator.state.requests["create"] == 0


def test_a_corrupt_work_list_is_a_clear_error_not_a_traceback(emulator: MindVideoEmulator, tmp_path: Path) -> None:
    write_work(tmp_path, ["one", "two"])
    work = tmp_path / "work.jsonl"
    work.write_text(work.read_text().replace('"position"', '"posit', 1))
    (event,) = trigger_events(tmp_path)
    message = refused_for_good(event)
    assert "work.jsonl" in message and "line 1" in message
    assert emulator.state.requests["create"] == 0


# -- CSV inputs ------------------------------------------------------------------------------------


def execute(tmp_path: Path, inputs_path: str, **options: Any) -> MindVideoBatchGenerateOperator:
    operator = MindVideoBatchGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        inputs_path=inputs_path,
        result_path=f"file://{tmp_path}/manifest.jsonl",
        **options,
    )
    operator.execute({"ti": Ti()})  # type: ignore[arg-type]
    return operator


def test_a_windows_1252_csv_is_refused_naming_file_line_and_column_and_read_with_inputs_encoding(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    inputs = tmp_path / "prompts.csv"
    inputs.write_bytes("prompt,size\nplain,1:1\ncaf\u00e9 \u201cnoir\u201d,16:9\n".encode("cp1252"))
    with pytest.raises(InputValidationError) as refused:
        execute(tmp_path, f"file://{inputs}")
    assert isinstance(refused.value, AirflowFailException)
    message = str(refused.value)
    assert str(inputs) in message and "line 3, column 4" in message  # the é
    assert "inputs_encoding" in message
    with pytest.raises(TaskDeferred):
        execute(tmp_path, f"file://{inputs}", inputs_encoding="cp1252")
    work = (tmp_path / "manifest.work.jsonl").read_text(encoding="utf-8")
    assert "caf\u00e9 \u201cnoir\u201d" in work
    assert emulator.state.requests["create"] == 0


def test_a_csv_cell_past_the_csv_modules_limit_is_refused_naming_line_and_column(tmp_path: Path) -> None:
    text = "size,prompt\n1:1,short\n16:9," + "x" * 200_000 + "\n"
    with pytest.raises(InputValidationError) as refused:
        entries_from_csv(text, "gpt-image-2")
    assert "line 3" in str(refused.value) and "column 2" in str(refused.value)


def test_a_csv_value_under_an_unnamed_column_is_refused_not_dropped(tmp_path: Path) -> None:
    entries = entries_from_csv("prompt,,size\na fox,lost?,1:1\n", "gpt-image-2")
    with pytest.raises(InputValidationError) as refused:
        work_list(entries, "gpt-image-2", Ti(), source="file:///in.csv")
    assert "line 2: column 2 holds a value but the header names no field" in str(refused.value)
    # An unnamed column with nothing in it (a spreadsheet's trailing comma) loses nothing.
    (entry,) = entries_from_csv("prompt,size,\na fox,1:1,\n", "gpt-image-2")
    assert entry.value["input"] == {"prompt": "a fox", "size": "1:1"}


# -- nothing to do ---------------------------------------------------------------------------------


def test_a_batch_of_no_items_succeeds_with_an_empty_manifest(
    run: Any, emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    inputs = tmp_path / "prompts.jsonl"
    inputs.write_text("\n")
    result = run("mv_batch_from_file", inputs_path=f"file://{inputs}")
    assert result.state == "success"
    assert result.tries("generate") == 1
    summary = result.xcom[("generate", -1, "return_value")]
    assert summary["items"] == 0 and summary["failed"] == 0 and summary["cost_estimate"] == 0
    assert (tmp_path / "manifest.jsonl").read_text() == ""
    assert emulator.state.requests["create"] == 0

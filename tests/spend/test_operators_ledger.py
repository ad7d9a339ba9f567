"""The spend ledger as the operators use it, against the emulator: its own books are the oracle.

Every test checks what the emulator charged (``total_charged``) against the budget, and what the
ledger counted against what the emulator charged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_mindvideo.batch.plan import (
    OVER_BUDGET,
    SUCCEEDED,
    dump_work_list,
    entries_from_list,
    load_manifest,
    work_list,
)
from airflow_provider_mindvideo.batch.trigger import DONE, ERROR_EVENT, MindVideoBatchTrigger
from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.operators import MindVideoGenerateOperator, MindVideoSubmitOperator
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.location import LedgerUnavailableError
from airflow_provider_mindvideo.spend.reading import budget_windows, refused_creates
from airflow_provider_mindvideo.spend.records import BudgetWindowExceededError
from tests.helpers import Ti

IMAGE_COST = 0.0135


@pytest.fixture
def ledger_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger" / "spend.db"
    path.parent.mkdir()
    use_ledger(monkeypatch, path)
    return path


def use_ledger(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """The provider keeps its ledger in the SQLite file ``path`` (connection ``mindvideo_ledger``)."""
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__LEDGER_CONN_ID", "mindvideo_ledger")


def with_budgets(emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, budgets: dict[str, Any]) -> None:
    connection = json.loads(emulator.connection_uri())
    connection["extra"] = {"budgets": budgets}
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps(connection))


def generate(prompt: str, ti: Ti | None = None, **kwargs: Any) -> Any:
    ti = ti or Ti(task_id=f"gen_{abs(hash(prompt))}")
    operator = MindVideoGenerateOperator(
        task_id=ti.task_id,
        model="gpt-image-2",
        input={"prompt": prompt},
        deferrable=False,
        poll_interval=0.05,
        max_poll_interval=0.1,
        timeout=30,
        **kwargs,
    )
    return operator.execute({"ti": ti})  # type: ignore[arg-type]


def test_generate_refuses_the_create_that_would_pass_a_daily_budget(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, ledger_file: Path
) -> None:
    limit = 2 * IMAGE_COST + 0.001
    with_budgets(emulator, monkeypatch, {"account": {"day": limit}})
    generate("one")
    generate("two")
    with pytest.raises(BudgetWindowExceededError) as refused:
        generate("three")
    message = str(refused.value)
    assert "Budget 'account'" in message and "day" in message and f"limit {limit:g}" in message
    assert f"spent {2 * IMAGE_COST:g}" in message and "resets at" in message
    assert emulator.state.charged_tasks == 2
    assert emulator.state.total_charged <= limit
    # The ledger's totals are the emulator's: each create settled at max(estimate, actual).
    (window,) = budget_windows(engine_for_url(f"sqlite:///{ledger_file}"))
    assert window.spent == pytest.approx(emulator.state.total_charged) and window.reserved == 0


def test_a_replayed_key_is_not_counted_twice(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, ledger_file: Path
) -> None:
    with_budgets(emulator, monkeypatch, {"account": {"day": IMAGE_COST}})
    ti = Ti(task_id="again")
    for try_number in (1, 2, 3):  # retries and a clear replay the same key: the same row
        ti.try_number = try_number
        generate("once", ti)
    assert emulator.state.charged_tasks == 1
    (window,) = budget_windows(engine_for_url(f"sqlite:///{ledger_file}"))
    assert window.spent == pytest.approx(IMAGE_COST)


def test_submit_under_a_named_budget_counts_against_both(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, ledger_file: Path
) -> None:
    with_budgets(emulator, monkeypatch, {"account": {"day": 1}, "marketing": {"month": IMAGE_COST}})
    MindVideoSubmitOperator(task_id="a", model="gpt-image-2", input={"prompt": "a"}, budget="marketing").execute(
        {"ti": Ti(task_id="a")}  # type: ignore[arg-type]
    )
    with pytest.raises(BudgetWindowExceededError, match="Budget 'marketing'"):
        MindVideoSubmitOperator(task_id="b", model="gpt-image-2", input={"prompt": "b"}, budget="marketing").execute(
            {"ti": Ti(task_id="b")}  # type: ignore[arg-type]
        )
    # Without the named budget, the account's alone: it fits.
    MindVideoSubmitOperator(task_id="c", model="gpt-image-2", input={"prompt": "c"}).execute(
        {"ti": Ti(task_id="c")}  # type: ignore[arg-type]
    )
    assert emulator.state.charged_tasks == 2


def test_a_budget_the_connection_does_not_define_is_refused_before_anything_is_sent(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, ledger_file: Path
) -> None:
    with_budgets(emulator, monkeypatch, {"account": {"day": 1}})
    with pytest.raises(InputValidationError, match=r"budget = 'markting'"):
        generate("typo", budget="markting")
    assert emulator.state.requests["create"] == 0


@pytest.mark.parametrize("bad", [("", "fail"), ("account", "fail"), (None, "sleep"), (7, "fail")])
def test_bad_budget_arguments_fail_when_the_dag_is_parsed(bad: tuple[Any, Any]) -> None:
    budget, on_exhausted = bad
    with pytest.raises(ValueError, match="budget"):
        MindVideoSubmitOperator(
            task_id="x", model="gpt-image-2", input={"prompt": "x"}, budget=budget, on_budget_exhausted=on_exhausted
        )


def test_without_budgets_no_ledger_is_opened_even_if_unreachable(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    unreachable = tmp_path / "missing-folder" / "spend.db"
    use_ledger(monkeypatch, unreachable)
    generate("free")
    assert emulator.state.charged_tasks == 1
    assert not unreachable.parent.exists()
    assert emulator.state.requests["create"] == 1


def test_with_budgets_an_unreachable_ledger_sends_nothing(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    unreachable = tmp_path / "missing-folder" / "spend.db"
    use_ledger(monkeypatch, unreachable)
    with_budgets(emulator, monkeypatch, {"account": {"day": 1}})
    with pytest.raises(LedgerUnavailableError, match="nothing was sent"):
        generate("closed")
    assert emulator.state.requests["create"] == 0


def test_wait_defers_until_the_window_resets(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, ledger_file: Path
) -> None:
    with_budgets(emulator, monkeypatch, {"account": {"day": IMAGE_COST}})
    generate("first")
    with pytest.raises(TaskDeferred) as deferred:
        generate("second", on_budget_exhausted="wait")
    trigger = deferred.value.trigger
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    assert trigger.moment == dt.datetime.combine(tomorrow, dt.time(), dt.UTC)
    assert deferred.value.method_name == "execute_after_budget_wait"
    assert emulator.state.charged_tasks == 1


# -- batches --------------------------------------------------------------------------------


def batch_trigger(folder: Path, prompts: list[str], **options: Any) -> MindVideoBatchTrigger:
    folder.mkdir(parents=True, exist_ok=True)
    items = work_list(entries_from_list([{"prompt": p} for p in prompts]), "gpt-image-2", Ti(task_id=folder.name))
    (folder / "work.jsonl").write_text(dump_work_list(items))
    settings: dict[str, Any] = {
        "max_active": 4,
        "poll_interval": 0.05,
        "max_poll_interval": 0.1,
        "progress_interval": 0.2,
        **options,
    }
    return MindVideoBatchTrigger(f"file://{folder}/work.jsonl", f"file://{folder}/manifest.jsonl", **settings)


def run_trigger(trigger: MindVideoBatchTrigger) -> dict[str, Any]:
    async def events() -> list[Any]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())
    return dict(event)


def test_a_batch_goes_on_with_what_fits_and_says_why_the_rest_did_not(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, ledger_file: Path, tmp_path: Path
) -> None:
    limit = 6 * IMAGE_COST + 0.001  # about 60 % of 10 items
    with_budgets(emulator, monkeypatch, {"account": {"day": limit}})
    event = run_trigger(batch_trigger(tmp_path / "b", [f"item {n}" for n in range(10)]))
    assert event["status"] == DONE, event
    rows = load_manifest((tmp_path / "b" / "manifest.jsonl").read_text())
    assert [row.status for row in rows].count(SUCCEEDED) == 6
    refused = [row for row in rows if row.status == OVER_BUDGET]
    assert len(refused) == 4 and all("Budget 'account'" in (row.error or "") for row in refused)
    assert emulator.state.total_charged <= limit
    engine = engine_for_url(f"sqlite:///{ledger_file}")
    (window,) = budget_windows(engine)
    assert window.spent == pytest.approx(emulator.state.total_charged) and window.reserved == 0
    # Each over_budget item is on the books as a refused create, holding nothing.
    on_books = refused_creates(engine)
    assert len(on_books) == 4
    assert not {r.idempotency_key for r in on_books} & {row.idempotency_key for row in rows}
    assert all(r.budgets == ("account",) and r.reserved == IMAGE_COST for r in on_books)


def test_a_batch_naming_an_unknown_budget_sends_nothing(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, ledger_file: Path, tmp_path: Path
) -> None:
    with_budgets(emulator, monkeypatch, {"account": {"day": 1}})
    event = run_trigger(batch_trigger(tmp_path / "b", ["x"], budget="nope"))
    assert event["status"] == ERROR_EVENT and "budget = 'nope'" in event["message"]
    assert emulator.state.requests["create"] == 0


def _race(folder: str, prompts: list[str], connection: str, ledger: str) -> None:
    import os

    os.environ["AIRFLOW_CONN_MINDVIDEO_DEFAULT"] = connection
    os.environ["AIRFLOW_CONN_MINDVIDEO_LEDGER"] = ledger
    os.environ["AIRFLOW__MINDVIDEO__LEDGER_CONN_ID"] = "mindvideo_ledger"
    event = run_trigger(batch_trigger(Path(folder), prompts))
    assert event["status"] == DONE, event


def test_two_batches_in_two_processes_race_one_budget(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, ledger_file: Path, tmp_path: Path
) -> None:
    limit = 12 * IMAGE_COST + 0.001  # 60 % of 2 x 10 items
    with_budgets(emulator, monkeypatch, {"account": {"day": limit}})
    import os

    context = multiprocessing.get_context("spawn")  # fork would copy the emulator thread's locks
    racers = [
        context.Process(
            target=_race,
            args=(
                str(tmp_path / name),
                [f"{name} {n}" for n in range(10)],
                os.environ["AIRFLOW_CONN_MINDVIDEO_DEFAULT"],
                os.environ["AIRFLOW_CONN_MINDVIDEO_LEDGER"],
            ),
        )
        for name in ("left", "right")
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert [racer.exitcode for racer in racers] == [0, 0]
    rows = [
        row for name in ("left", "right") for row in load_manifest((tmp_path / name / "manifest.jsonl").read_text())
    ]
    assert [row.status for row in rows].count(SUCCEEDED) == 12
    assert all("Budget 'account'" in (row.error or "") for row in rows if row.status == OVER_BUDGET)
    assert emulator.state.total_charged <= limit
    (window,) = budget_windows(engine_for_url(f"sqlite:///{ledger_file}"))
    assert window.spent == pytest.approx(emulator.state.total_charged)

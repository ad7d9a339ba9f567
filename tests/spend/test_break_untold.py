"""Attacks on a model whose price is not known under a budget: it goes alone, and is refused once untold for good.

Each test drives the public ledger (or the batch's books) against the emulator on 127.0.0.1, whose
own books say what was charged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from airflow_provider_mindvideo import spend_command
from airflow_provider_mindvideo.batch import ledger as batch_ledger
from airflow_provider_mindvideo.batch.ledger import BatchBooks
from airflow_provider_mindvideo.batch.plan import OVER_BUDGET, TIMED_OUT, load_manifest
from airflow_provider_mindvideo.batch.trigger import DONE
from airflow_provider_mindvideo.client.models import MindVideoTask
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.spend.budgets import budgets_from_extras
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.ledger import Ledger
from airflow_provider_mindvideo.spend.location import SpendBooks
from airflow_provider_mindvideo.spend.reading import budget_windows
from airflow_provider_mindvideo.spend.reconcile import open_reservations, reconcile
from airflow_provider_mindvideo.spend.records import (
    BudgetRefusal,
    BudgetWindowExceededError,
    CreateRecord,
    PriceUnknownWait,
    Settlement,
    SpendRow,
)
from airflow_provider_mindvideo.spend.reserving import naive
from airflow_provider_mindvideo.spend.settling import settle_group
from airflow_provider_mindvideo.spend.windows import UTC
from tests.spend.helpers import know_price
from tests.spend.test_operators_ledger import batch_trigger, generate, run_trigger, use_ledger, with_budgets

EXTRAS = {"budgets": {"account": {"day": 10}}}
MODEL = "gpt-image-2"


def ended(hook: MindVideoHook, task_id: str) -> MindVideoTask:
    """The task once the emulator says it ended (polled: it ends about a second after its create)."""
    while not (task := hook.get_task(task_id)).is_terminal:
        time.sleep(0.1)
    return task


def test_reconcile_unblocks_a_model_whose_submit_answer_told_no_cost(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    """A Submit whose answer hid both costs is settled "without any cost told": its model's lone create in flight.

    Submit never sees its task end; a sensor does not settle. Reconcile is what the docs name for
    an open create keeping its model waiting: it must read the task and settle it (telling the
    price, or marking it untold), or every other create of the model waits for ever.
    """
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    then = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    config = budgets_from_extras(EXTRAS, "mindvideo_default")
    submit = Ledger(engine_for_url(url), clock=lambda: then)
    submit.reserve(CreateRecord("submitted", MODEL, dag_id="d", task_id="submit"), 0.5, config)
    with MindVideoHook() as hook:
        task = hook.create_task(MODEL, {"prompt": "one"}, "submitted")
        # The answer as a hostile server sends it: no cost_estimate, no cost_actual.
        submit.settle("submitted", mindvideo_task_id=task.task_id, ended=False)
        ended(hook, task.task_id)

    ledger = Ledger(engine_for_url(url))
    later = CreateRecord("later", MODEL, dag_id="d2", task_id="generate")
    assert isinstance(ledger.try_reserve(later, 0.5, config), PriceUnknownWait)

    done = reconcile(ledger, spend_command.look_up_task, older_than=dt.timedelta(minutes=30))
    assert [(r.row.idempotency_key, r.outcome) for r in done] == [("submitted", "settled")]
    row = ledger.row("submitted")
    assert row is not None and row.actual == emulator.state.total_charged  # the emulator's own books
    assert isinstance(ledger.try_reserve(later, 0.5, config), SpendRow)  # its price is known now
    assert open_reservations(ledger) == []  # settled for good: not read again on every run


def test_an_item_cancelled_while_its_reservation_waits_for_its_group_holds_nothing(tmp_path: Path) -> None:
    """A batch's timeout (its hard stop) cancels items wherever they wait, often in a reservation's 0.25 s group.

    The item never sends its create, so its reservation must not be written (nor left reserved):
    a create of an unpriced model left reserved would be that model's lone create in flight for
    good (no task id: reconcile cannot settle it), keeping every other create of it waiting.
    """
    ledger = Ledger(engine_for_url(f"sqlite:///{tmp_path / 'ledger.db'}"))
    know_price(ledger, "flux-2-pro")
    books = BatchBooks(SpendBooks(budgets_from_extras(EXTRAS, "mindvideo_default"), None, ledger), None, 1)

    async def cancelled_then_another() -> None:
        waiting = asyncio.create_task(books.try_reserve("cancelled", MODEL, 0.5))
        await asyncio.sleep(0)  # it is queued for the next group
        waiting.cancel()
        # Another item's reservation goes in the same group: once it is decided, so is the cancelled one.
        assert await books.try_reserve("other", "flux-2-pro", 0.5) is None
        await books.drain()

    asyncio.run(cancelled_then_another())
    row = ledger.row("cancelled")
    assert row is None or row.state == "released", row
    config = budgets_from_extras(EXTRAS, "mindvideo_default")
    assert isinstance(ledger.try_reserve(CreateRecord("next", MODEL), 0.5, config), SpendRow)


def test_a_reservation_waiting_on_the_price_row_sees_the_untold_mark_committed_meanwhile(postgres_url: str) -> None:
    """PostgreSQL: a reservation read the model's price, then waited on its price row's lock for a settle.

    That settle ended the model's lone create with an estimate and no ``cost_actual``: the model is
    untold for good, and its create no longer in flight. A reservation deciding on the price it
    read before the wait would send a second create of a model whose price no one can count.
    """
    ledger = Ledger(engine_for_url(postgres_url))
    config = budgets_from_extras(EXTRAS, "mindvideo_default")
    ledger.reserve(CreateRecord("lone", MODEL), 0.5, config)
    settler = ledger.engine.connect()
    transaction = settler.begin()
    # Another process's settle of the lone create, written but not committed yet.
    settle_group(
        settler,
        [Settlement("lone", estimated=0.4, mindvideo_task_id="t-1", ended=True)],
        ["lone"],
        naive(dt.datetime.now(UTC)),
    )
    with ThreadPoolExecutor(1) as pool:
        racing = pool.submit(ledger.try_reserve, CreateRecord("racing", MODEL), 0.5, config)
        try:
            with ledger.engine.connect() as watcher:  # until the reservation waits on a lock
                waits = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                while not racing.done():
                    if watcher.execute(waits).scalar():
                        break
                    # pg_stat_activity is read once per transaction: a loop in one would never see
                    # a wait that began after its first read (a slow thread on a busy machine).
                    watcher.rollback()
                    time.sleep(0.01)
        finally:  # even if the test fails here: the reservation waits on this lock, and the pool for it
            transaction.commit()
        outcome = racing.result()
    settler.close()
    assert isinstance(outcome, BudgetRefusal) and outcome.untold is not None, outcome
    refused = ledger.row("racing")
    assert refused is not None and refused.state == "refused"  # counted nowhere: nothing may be sent


def test_the_untold_refusals_sql_hint_tells_the_price_of_a_model_with_a_quote_in_its_name(tmp_path: Path) -> None:
    """The refusal names an UPDATE to paste into the ledger's database; a slug (allow_unknown_model) is any text.

    Pasted as given (the placeholder filled), it must price that model and do nothing else.
    """
    database = tmp_path / "ledger.db"
    ledger = Ledger(engine_for_url(f"sqlite:///{database}"))
    config = budgets_from_extras(EXTRAS, "mindvideo_default")
    model = "new'; DELETE FROM mindvideo_spend; --"
    ledger.reserve(CreateRecord("lone", model), 0.5, config)
    ledger.settle("lone", mindvideo_task_id="t-1", ended=True)
    refusal = ledger.try_reserve(CreateRecord("next", model), 0.5, config)
    assert isinstance(refusal, BudgetRefusal) and refusal.untold is not None
    hint = refusal.message().split("micro-units (1.0 = 1000000): ", 1)[1].rsplit(" (docs/spend.md)", 1)[0]
    with sqlite3.connect(database) as db:  # as a team lead would, in the sqlite3 shell
        db.executescript(hint.replace("<price>", "400000") + ";")
    assert ledger.row("lone") is not None  # nothing else was done
    assert isinstance(ledger.try_reserve(CreateRecord("next", model), 0.5, config), SpendRow)  # priced now


@pytest.fixture
def ledger_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spend.db"
    use_ledger(monkeypatch, path)
    return path


def untold_in(ledger_file: Path, model: str = MODEL) -> None:
    """As if ``model``'s lone create had ended without a readable cost_actual (in another DAG)."""
    ledger = Ledger(engine_for_url(f"sqlite:///{ledger_file}"))
    ledger.reserve(CreateRecord("elsewhere", model), 0.5, budgets_from_extras(EXTRAS, "mindvideo_default"))
    ledger.settle("elsewhere", mindvideo_task_id="t-elsewhere", ended=True)


def test_wait_does_not_defer_a_generate_whose_model_is_untold(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, ledger_file: Path
) -> None:
    """A reset does not tell the price: ``on_budget_exhausted="wait"`` deferring would wait for ever, a day at a time."""
    with_budgets(emulator, monkeypatch, EXTRAS["budgets"])
    untold_in(ledger_file)
    with pytest.raises(BudgetWindowExceededError, match="t-elsewhere ended without a readable cost_actual"):
        generate("one", on_budget_exhausted="wait")
    assert emulator.state.requests["create"] == 0


def test_a_waiting_batch_marks_the_items_of_an_untold_model_over_budget_at_once(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, ledger_file: Path, tmp_path: Path
) -> None:
    with_budgets(emulator, monkeypatch, EXTRAS["budgets"])
    untold_in(ledger_file)
    trigger = batch_trigger(tmp_path / "untold", ["a", "b", "c"], on_budget_exhausted="wait", deadline=time.time() + 60)
    assert run_trigger(trigger)["status"] == DONE
    rows = load_manifest((tmp_path / "untold" / "manifest.jsonl").read_text())
    assert {row.status for row in rows} == {OVER_BUDGET}
    assert all("t-elsewhere ended without a readable cost_actual" in (row.error or "") for row in rows)
    assert emulator.state.requests["create"] == 0


def test_an_item_cancelled_while_its_group_is_written_gives_its_reservation_back(tmp_path: Path) -> None:
    """As above, the cancel arriving while the group's transaction runs in its thread: written, then released."""
    ledger = Ledger(engine_for_url(f"sqlite:///{tmp_path / 'ledger.db'}"))
    know_price(ledger, "flux-2-pro")
    spend_books = SpendBooks(budgets_from_extras(EXTRAS, "mindvideo_default"), None, ledger)
    entered, go = threading.Event(), threading.Event()
    reserve_many = spend_books.reserve_many

    def held(creates: Any) -> Any:  # the group's transaction, held open until the item is cancelled
        entered.set()
        go.wait()
        return reserve_many(creates)

    spend_books.reserve_many = held  # type: ignore[method-assign]
    books = BatchBooks(spend_books, None, 1)

    async def cancelled_in_the_thread() -> None:
        waiting = asyncio.create_task(books.try_reserve("cancelled", MODEL, 0.5))
        await asyncio.to_thread(entered.wait)
        waiting.cancel()
        go.set()
        assert await books.try_reserve("other", "flux-2-pro", 0.5) is None  # the group after the release
        await books.drain()

    asyncio.run(cancelled_in_the_thread())
    row = ledger.row("cancelled")
    assert row is not None and row.state == "released", row
    config = budgets_from_extras(EXTRAS, "mindvideo_default")
    assert isinstance(ledger.try_reserve(CreateRecord("next", MODEL), 0.5, config), SpendRow)


def test_reconcile_marks_untold_a_submitted_create_whose_task_ended_without_a_cost(tmp_path: Path) -> None:
    """Its task ended and never told a cost: reconcile settles it as ended (the model untold), then leaves it."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    then = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    config = budgets_from_extras(EXTRAS, "mindvideo_default")
    submit = Ledger(engine_for_url(url), clock=lambda: then)
    submit.reserve(CreateRecord("submitted", MODEL), 0.5, config)
    submit.settle("submitted", mindvideo_task_id="t-1")
    silent = MindVideoTask.model_validate({"task_id": "t-1", "status": "failed", "cost_actual": None})
    ledger = Ledger(engine_for_url(url))
    assert [r.outcome for r in reconcile(ledger, lambda account, task_id: silent)] == ["settled"]
    refusal = ledger.try_reserve(CreateRecord("later", MODEL), 0.5, config)
    assert isinstance(refusal, BudgetRefusal) and refusal.untold is not None
    assert open_reservations(ledger) == []


def test_a_reservation_that_waited_past_the_batchs_deadline_sends_nothing(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, ledger_file: Path, tmp_path: Path
) -> None:
    """An item started before the deadline, its reservation decided after it (a group's wait): no create is sent.

    Sent, it is charged while the run no longer waits for it (``timed_out`` at once). The group's
    wait is lengthened here so that it surely passes the deadline and ends before the hard stop.
    """
    monkeypatch.setattr(batch_ledger, "RESERVE_DELAY", 1.0)
    with_budgets(emulator, monkeypatch, EXTRAS["budgets"])
    know_price(Ledger(engine_for_url(f"sqlite:///{ledger_file}")))
    trigger = batch_trigger(tmp_path / "late", ["a"], deadline=time.time() + 0.5)
    assert run_trigger(trigger)["status"] == DONE
    (row,) = load_manifest((tmp_path / "late" / "manifest.jsonl").read_text())
    assert row.status == TIMED_OUT and row.retryable, row
    assert emulator.state.requests["create"] == 0
    (window,) = budget_windows(engine_for_url(f"sqlite:///{ledger_file}"))
    assert window.reserved == 0 and window.spent == 0

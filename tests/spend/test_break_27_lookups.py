"""Break issue 27: a create waiting for its model's lone create looks that create's task up itself.

Attacks through the public operators against the hostile server (tests/hostile.py). The oracle is the
server's own books (``state.total_charged``, ``state.charged_tasks``), never the client's ledger.

The server charges 0.5 for MODEL while every create answer says it is estimated at 0.0135 (a lie the
hostile rules allow), under a day budget of 0.03: at most one create of it may be charged before its
price is known.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from airflow_provider_mindvideo.batch.plan import OVER_BUDGET, TIMED_OUT, load_manifest
from airflow_provider_mindvideo.batch.trigger import DONE
from airflow_provider_mindvideo.client.errors import BudgetExceededError, MindVideoError
from airflow_provider_mindvideo.emulator.state import EmulatorConfig, Fault, Script
from airflow_provider_mindvideo.operators import MindVideoGenerateOperator, MindVideoSubmitOperator
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.reading import budget_windows
from airflow_provider_mindvideo.spend.records import ModelPriceUnknownError, SpendRow, spend_row
from airflow_provider_mindvideo.spend.schema import model_price, spend
from tests.helpers import Ti
from tests.hostile import HostileServer, RoutePlan, hostile_server, leaks
from tests.spend.test_operators_ledger import batch_trigger, run_trigger, use_ledger

MODEL = "gpt-image-2"
TRUE_PRICE = 0.5
LIE = 0.0135
DAY = 0.03
PRICE_WAIT = 1.0
#: What a give-up after ``ledger_price_wait`` may take beyond it: a poll of 0.5 s and a busy machine.
SLACK = 3.0


def _server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, day: float = DAY, estimate: Any = LIE, **config: Any
) -> Any:
    use_ledger(monkeypatch, tmp_path / "spend.db")
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__LEDGER_PRICE_WAIT", str(PRICE_WAIT))
    context = hostile_server(EmulatorConfig(prices={MODEL: TRUE_PRICE}, **config))
    server = context.__enter__()
    low = RoutePlan(persistent={"cost_estimate": ("set", estimate)})
    server.answers.plan = {n: {"create": low} for n in range(20)}
    connection = json.loads(server.connection(budgets={"account": {"day": day}}))
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps(connection))
    return context, server


@pytest.fixture
def lying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    context, server = _server(tmp_path, monkeypatch)
    try:
        yield server
    finally:
        context.__exit__(None, None, None)


def rows(tmp_path: Path) -> list[SpendRow]:
    engine = engine_for_url(f"sqlite:///{tmp_path / 'spend.db'}")
    with engine.connect() as connection:
        return [spend_row(found) for found in connection.execute(select(spend)).all()]


def raw_ledger_text(tmp_path: Path) -> str:
    engine = engine_for_url(f"sqlite:///{tmp_path / 'spend.db'}")
    with engine.connect() as connection:
        found = [tuple(r) for r in connection.execute(select(spend)).all()]
        found += [tuple(r) for r in connection.execute(select(model_price)).all()]
    return repr(found)


def submit(n: int, name: str | None = None, ti: Ti | None = None, **kwargs: Any) -> Any:
    name = name or f"s{n}"
    ti = ti or Ti(task_id=name)
    operator = MindVideoSubmitOperator(task_id=ti.task_id, model=MODEL, input={"prompt": f"#{n}# {name}"}, **kwargs)
    return operator.execute({"ti": ti})  # type: ignore[arg-type]


def generate(n: int, name: str | None = None, **kwargs: Any) -> Any:
    name = name or f"g{n}"
    options: dict[str, Any] = {"deferrable": False, "poll_interval": 0.05, "max_poll_interval": 0.1, "timeout": 60}
    operator = MindVideoGenerateOperator(
        task_id=name, model=MODEL, input={"prompt": f"#{n}# {name}"}, **{**options, **kwargs}
    )
    return operator.execute({"ti": Ti(task_id=name)})  # type: ignore[arg-type]


def within_budget(server: HostileServer, unpriced_models: int = 1) -> None:
    """The invariant: true charges <= limit + one true price per model whose price was not known."""
    assert server.state.total_charged <= DAY + unpriced_models * TRUE_PRICE + 1e-9, [
        (t.model, t.cost) for t in server.state.tasks.values()
    ]


def ledger_not_under(server: HostileServer, tmp_path: Path) -> None:
    engine = engine_for_url(f"sqlite:///{tmp_path / 'spend.db'}")
    (window,) = budget_windows(engine)
    assert window.spent + window.reserved >= server.state.total_charged - 1e-6, (window, server.state.total_charged)


# -- 1. the sync lookup is not bounded by ledger_price_wait --------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", route="get", status=503, retry_after="3", times=50),
        Fault("delay", route="get", seconds=8.0, times=50),
        Fault("status", route="get", status=404, times=50),
    ],
    ids=["503-retry-after-3", "delay-8s", "404"],
)
def test_a_submit_waiting_for_the_lone_create_gives_up_after_ledger_price_wait(
    lying: HostileServer, tmp_path: Path, fault: Fault
) -> None:
    """Submit/Generate give up after ``[mindvideo] ledger_price_wait`` (here 1 s) with ModelPriceUnknownError.

    The lone create's task cannot be read meanwhile (a 503 asking for 3 s, an answer 8 s late, a 404):
    the wait must still end at about 1 s, not when the hook's GET (retries, deadline 120 s) gives up.
    """
    submit(1, "a")
    lying.state.add_fault(fault)
    started = time.monotonic()
    with pytest.raises(MindVideoError) as failed:
        submit(2, "b")
    waited = time.monotonic() - started
    assert waited <= PRICE_WAIT + SLACK, f"waited {waited:.1f} s for ledger_price_wait = {PRICE_WAIT} s"
    # Given up (or, had the look-up been read in time, refused by the window once the price is known).
    assert isinstance(failed.value, ModelPriceUnknownError | BudgetExceededError), repr(failed.value)
    assert lying.state.charged_tasks == 1
    within_budget(lying)


def test_a_generate_waiting_for_the_lone_create_gives_up_after_ledger_price_wait(
    lying: HostileServer, tmp_path: Path
) -> None:
    submit(1, "a")
    lying.state.add_fault(Fault("status", route="get", status=503, retry_after="3", times=50))
    started = time.monotonic()
    with pytest.raises(MindVideoError) as failed:
        generate(2, "g")
    waited = time.monotonic() - started
    assert waited <= PRICE_WAIT + SLACK, f"waited {waited:.1f} s for ledger_price_wait = {PRICE_WAIT} s"
    # Given up (or, had the look-up been read in time, refused by the window once the price is known).
    assert isinstance(failed.value, ModelPriceUnknownError | BudgetExceededError), repr(failed.value)
    assert lying.state.charged_tasks == 1


# -- 2. the batch's lookup is bounded by the batch's timeout --------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault("delay", route="get", seconds=20.0, times=50),
        Fault("trickle", route="get", seconds=0.5, times=50),
        Fault("status", route="get", status=429, retry_after="60", times=50),
    ],
    ids=["delay-20s", "trickle", "429-retry-after-60"],
)
def test_a_batch_waiting_on_an_unreadable_lone_create_ends_within_its_timeout(
    lying: HostileServer, tmp_path: Path, fault: Fault
) -> None:
    submit(1, "a")
    lying.state.add_fault(fault)
    timeout = 3.0
    started = time.monotonic()
    event = run_trigger(
        batch_trigger(tmp_path / "b", [f"#{n}# item" for n in range(5, 8)], deadline=time.time() + timeout)
    )
    took = time.monotonic() - started
    assert event["status"] == DONE, event
    statuses = [row.status for row in load_manifest((tmp_path / "b" / "manifest.jsonl").read_text())]
    assert set(statuses) <= {TIMED_OUT, OVER_BUDGET}, statuses
    assert took <= timeout + 4.0, f"the batch took {took:.1f} s for a {timeout} s timeout"
    assert lying.state.charged_tasks == 1


# -- 3. the looked-up answer lies about which task it is, or echoes the key -------------------------


@pytest.mark.parametrize(
    "rewrite",
    [
        {"task_id": ("set", "task_someone_elses")},
        {"task_id": ("echo", "plain")},
        {"error": ("echo", "header"), "+extra": ("echo", "u_escaped"), "request_id": ("echo", "quoted")},
    ],
    ids=["other-task-id", "task-id-echoes-key", "fields-echo-key"],
)
def test_a_lookup_answering_another_task_id_or_the_key_settles_the_holder_alone(
    lying: HostileServer, tmp_path: Path, rewrite: dict[str, Any]
) -> None:
    submit(1, "a")
    (holder,) = lying.state.tasks.values()
    lying.answers.plan = {**lying.answers.plan, 1: {"create": lying.answers.plan[1]["create"], "get": RoutePlan(persistent=rewrite)}}
    texts: list[str] = []
    for attempt in range(6):  # the task ends ~1 s after its create: a later Submit reads its actual
        try:
            submit(2, f"b{attempt}")
        except ModelPriceUnknownError as waited:
            texts.append(str(waited))
            continue
        except BudgetExceededError as refused:
            texts.append(str(refused))
            break
    assert lying.state.charged_tasks == 1, [(t.task_id, t.cost) for t in lying.state.tasks.values()]
    found = rows(tmp_path)
    (row,) = [r for r in found if r.state == "settled"]
    assert row.mindvideo_task_id == holder.task_id
    assert not leaks(raw_ledger_text(tmp_path)), leaks(raw_ledger_text(tmp_path))
    assert not leaks("\n".join(texts)), texts
    within_budget(lying)
    ledger_not_under(lying, tmp_path)


# -- 4. the lone create's task ends telling no readable actual -------------------------------------


@pytest.mark.parametrize(
    "actual", [math.nan, -1.0, "0.50 USD", None, "NaN", True, [0.5], ("echo", "plain")], ids=repr
)
def test_a_lone_create_ending_without_a_readable_actual_refuses_the_next(
    lying: HostileServer, tmp_path: Path, actual: Any
) -> None:
    mutation = actual if isinstance(actual, tuple) else ("set", actual)
    lying.answers.plan = {**lying.answers.plan, 1: {"create": lying.answers.plan[1]["create"], "get": RoutePlan(persistent={"cost_actual": mutation})}}
    submit(1, "a")
    time.sleep(1.3)  # the task has ended: the waiter's first look sees it
    texts = []
    with pytest.raises(BudgetExceededError) as refused:
        submit(2, "b")
    texts.append(str(refused.value))
    with pytest.raises(BudgetExceededError) as again:
        generate(3, "g")
    texts.append(str(again.value))
    assert lying.state.charged_tasks == 1
    within_budget(lying)
    assert not leaks(raw_ledger_text(tmp_path) + "\n".join(texts))


# -- 5. the lone create's answer was lost: nothing to look up -------------------------------------


def test_a_lost_lone_create_answer_keeps_waiters_bounded(lying: HostileServer, tmp_path: Path) -> None:
    lying.state.add_fault(Fault("drop", route="create", times=50))
    with pytest.raises(MindVideoError):
        submit(1, "a")
    lying.state.faults.clear()
    assert lying.state.charged_tasks >= 1
    started = time.monotonic()
    with pytest.raises(ModelPriceUnknownError):
        submit(2, "b")
    assert time.monotonic() - started <= PRICE_WAIT + SLACK
    event = run_trigger(batch_trigger(tmp_path / "b", [f"#{n}# item" for n in range(5, 8)], deadline=time.time() + 3))
    assert event["status"] == DONE, event
    statuses = [row.status for row in load_manifest((tmp_path / "b" / "manifest.jsonl").read_text())]
    assert set(statuses) == {TIMED_OUT}, statuses
    assert lying.state.charged_tasks == 1
    within_budget(lying)
    # The same Airflow task tried again replays its key: no second charge, and it is not held by itself.
    submit(1, "a", ti=Ti(task_id="a", try_number=2))
    assert lying.state.charged_tasks == 1
    ledger_not_under(lying, tmp_path)


# -- 6. the same key replayed while another create waits ------------------------------------------


def test_the_holders_own_replay_is_neither_held_nor_charged_again(
    lying: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__LEDGER_PRICE_WAIT", "6")  # b sees the holder's task end
    submit(1, "a")
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            submit(2, "b")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    for try_number in (2, 3):
        submit(1, "a", ti=Ti(task_id="a", try_number=try_number))
    thread.join(30)
    assert lying.state.charged_tasks == 1, errors
    assert len(errors) == 1 and isinstance(errors[0], BudgetExceededError), errors
    within_budget(lying)
    ledger_not_under(lying, tmp_path)


# -- 7. a high estimate, a lower actual: the ledger over-counts, never under ---------------------------


def test_an_actual_lower_than_the_estimate_never_under_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context, server = _server(tmp_path, monkeypatch, day=3.0, estimate=2.0)
    try:
        submit(1, "a")
        time.sleep(1.3)
        outcomes = []
        for n in range(2, 6):
            try:
                submit(n)
                outcomes.append("sent")
            except BudgetExceededError:
                outcomes.append("refused")
        assert server.state.total_charged <= 3.0 + TRUE_PRICE
        ledger_not_under(server, tmp_path)
        # No create was charged twice.
        assert len(server.state.charges) == len({task_id for task_id, _ in server.state.charges})
    finally:
        context.__exit__(None, None, None)


# -- 8. a lookup that says ended-without-actual while the task still runs --------------------------


def test_a_lookup_lying_terminal_then_the_holder_tells_its_actual(lying: HostileServer, tmp_path: Path) -> None:
    """The waiter's GET says the lone create failed with no actual; the holder (a Generate) later tells 0.5."""
    lying.state.add_script(Script(match="#1#", outcome="succeeded", processing_seconds=3.0))
    lie = RoutePlan(transient=[{"status": ("set", "failed"), "cost_actual": ("drop",)}])
    lying.answers.plan = {**lying.answers.plan, 1: {"create": lying.answers.plan[1]["create"], "get": lie}}
    holder_error: list[BaseException] = []

    def holder() -> None:
        try:
            generate(1, "holder", poll_interval=2.0, max_poll_interval=2.0)
        except BaseException as exc:  # noqa: BLE001
            holder_error.append(exc)

    thread = threading.Thread(target=holder)
    thread.start()
    deadline = time.monotonic() + 20
    while not ((tmp_path / "spend.db").exists() and any(r.mindvideo_task_id for r in rows(tmp_path))):
        assert time.monotonic() < deadline, "the holder's create was never settled"
        time.sleep(0.05)
    waiter: list[BaseException] = []
    try:
        submit(2, "b")
    except BaseException as exc:  # noqa: BLE001
        waiter.append(exc)
    thread.join(30)
    assert lying.state.charged_tasks == 1, (waiter, holder_error)
    within_budget(lying)
    ledger_not_under(lying, tmp_path)
    # Once the holder told 0.5, the model's price is known: a later create is refused by the window, not untold.
    with pytest.raises(BudgetExceededError) as later:
        submit(3, "c")
    assert "Budget 'account'" in str(later.value), str(later.value)


# -- 9. a waiter given up (ModelPriceUnknownError) and retried by Airflow: its key, once ------------


def test_a_waiter_retried_after_giving_up_is_charged_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context, server = _server(tmp_path, monkeypatch, day=2.0)
    try:
        server.state.add_script(Script(match="#1#", outcome="succeeded", processing_seconds=2.5))
        submit(1, "a")
        with pytest.raises(ModelPriceUnknownError):
            submit(2, "b", ti=Ti(task_id="b", try_number=1))
        time.sleep(2.0)  # a's task ends, telling 0.5
        for try_number in (2, 3, 4):  # Airflow's retries, then a clear: the same task instance
            submit(2, "b", ti=Ti(task_id="b", try_number=try_number))
        assert server.state.charged_tasks == 2, [(t.task_id, t.input) for t in server.state.tasks.values()]
        assert len(server.state.charges) == len({task_id for task_id, _ in server.state.charges})
        assert server.state.total_charged <= 2.0 + TRUE_PRICE
    finally:
        context.__exit__(None, None, None)


# -- 10. the look-ups are throttled: at once, then 1, 2, 4 ... s apart; a batch asks once for all ------


def test_lookups_of_a_lone_create_that_never_ends_are_throttled(
    lying: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__LEDGER_PRICE_WAIT", "8")
    lying.state.add_script(Script(match="#1#", outcome="never"))
    submit(1, "a")
    lying.state.reset_counters()
    with pytest.raises(ModelPriceUnknownError):
        submit(2, "b")
    by_submit = lying.state.requests["get"]
    lying.state.reset_counters()
    event = run_trigger(
        batch_trigger(tmp_path / "b", [f"#{n}# item" for n in range(5, 11)], deadline=time.time() + 8)
    )
    assert event["status"] == DONE, event
    by_batch = lying.state.requests["get"]
    # 8 s: looks at 0, 1, 3 and 7 s.
    assert by_submit <= 5 and by_batch <= 5, (by_submit, by_batch)
    assert lying.state.charged_tasks == 1

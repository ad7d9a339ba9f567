"""Issue 27 (found by a break review): a create waiting for its model's lone create looks that create's task up itself.

Attacks through the public operators against the hostile server (tests/hostile.py). The oracle is the
server's own books (``state.total_charged``, ``state.charged_tasks``), never the client's ledger.

The server charges 0.5 for MODEL while every create answer says it is estimated at 0.0135 (a lie the
hostile rules allow), under a day budget of 0.03: at most one create of it may be charged before its
price is known.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from airflow_provider_mindvideo.batch.plan import SUCCEEDED, load_manifest
from airflow_provider_mindvideo.batch.trigger import DONE, MindVideoBatchTrigger
from airflow_provider_mindvideo.client.errors import BudgetExceededError, MindVideoError
from airflow_provider_mindvideo.emulator.state import EmulatorConfig, Script
from airflow_provider_mindvideo.hooks import MindVideoHook
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


# -- 1. a waiter's look-ups are bounded by what is left of ledger_price_wait ---------------------------


def test_a_waiters_look_ups_are_given_what_is_left_of_ledger_price_wait(
    lying: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow look-up (a 503 with Retry-After, a trickle) must not carry a Submit past its wait: each
    look-up is given what is left of ``ledger_price_wait``, not the hook's whole retry policy."""
    lying.state.add_script(Script(match="#1#", outcome="never"))
    submit(1, "a")
    asked: list[float | None] = []
    real = MindVideoHook.get_task

    def recording(self: MindVideoHook, task_id: str, *, within: float | None = None) -> Any:
        asked.append(within)
        return real(self, task_id, within=within)

    monkeypatch.setattr(MindVideoHook, "get_task", recording)
    with pytest.raises(ModelPriceUnknownError):
        submit(2, "b")
    assert asked and all(w is not None and 0 < w <= PRICE_WAIT for w in asked), asked
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
    lying.answers.plan = {
        **lying.answers.plan,
        1: {"create": lying.answers.plan[1]["create"], "get": RoutePlan(persistent=rewrite)},
    }
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
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    for try_number in (2, 3):
        submit(1, "a", ti=Ti(task_id="a", try_number=try_number))
    thread.join(30)
    assert lying.state.charged_tasks == 1, errors
    # b is refused once it sees a's task end, or gives up waiting on a busy machine: never sent.
    assert len(errors) == 1 and isinstance(errors[0], (BudgetExceededError, ModelPriceUnknownError)), errors
    within_budget(lying)
    ledger_not_under(lying, tmp_path)


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
    event = run_trigger(batch_trigger(tmp_path / "b", [f"#{n}# item" for n in range(5, 11)], deadline=time.time() + 8))
    assert event["status"] == DONE, event
    by_batch = lying.state.requests["get"]
    # 8 s: looks at 0, 1, 3 and 7 s.
    assert by_submit <= 5 and by_batch <= 5, (by_submit, by_batch)
    assert lying.state.charged_tasks == 1


# -- 11. two batches, a Submit and a Generate interleaving on one model whose price is not known ------


def run_triggers(*triggers: MindVideoBatchTrigger) -> list[dict[str, Any]]:
    async def one(trigger: MindVideoBatchTrigger) -> dict[str, Any]:
        (event,) = [event.payload async for event in trigger.run()]
        return event

    async def every() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(one(t) for t in triggers)))

    return asyncio.run(every())


def in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("submit_first", [True, False], ids=["submit-first", "batches-first"])
def test_two_batches_a_submit_and_a_generate_on_one_unpriced_model(
    lying: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, submit_first: bool
) -> None:
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__LEDGER_PRICE_WAIT", "4")
    one = batch_trigger(tmp_path / "one", [f"#{n}# one" for n in range(0, 4)], deadline=time.time() + 15)
    two = batch_trigger(tmp_path / "two", [f"#{n}# two" for n in range(4, 8)], deadline=time.time() + 15)
    if submit_first:
        submit(9, "s")
    threads = [in_thread(lambda: submit(10, "s2")), in_thread(lambda: generate(11, "g"))]
    events = run_triggers(one, two)
    for thread, _ in threads:
        thread.join(60)
    assert [e["status"] for e in events] == [DONE, DONE], events
    outcomes = [o for _, found in threads for o in found]
    sent = [
        row.status
        for folder in ("one", "two")
        for row in load_manifest((tmp_path / folder / "manifest.jsonl").read_text())
    ]
    assert lying.state.charged_tasks == 1, (sent, outcomes, [(t.task_id, t.input) for t in lying.state.tasks.values()])
    within_budget(lying)
    # No create charged twice; nothing left reserved.
    assert len(lying.state.charges) == len({task_id for task_id, _ in lying.state.charges})
    assert not [r for r in rows(tmp_path) if r.state == "reserved"], rows(tmp_path)


def rows_once_written(tmp_path: Path) -> list[Any]:
    """The ledger's rows, none before its file and table exist (the holder creates them in its thread)."""
    try:
        return rows(tmp_path)
    except OperationalError:
        return []


def test_a_lookup_of_a_running_task_telling_a_low_partial_actual(lying: HostileServer, tmp_path: Path) -> None:
    """Out of tests/hostile.py's scope (a readable cost_actual lying low), but the brief's idea.

    The lone create's task is held running while every answer about it says ``cost_actual`` 0.0135
    (a partial figure); only once the waiters are done is the lie taken away and the task let go,
    to end at its true 0.5. A look-up settles the lone create only once its task ended, so neither
    waiter is sent. (The task is held, not timed: a lie counted by answers once reached the task's
    end on a busy machine, and a low actual told at the end is the price, by the hostile rules.)
    """
    lying.state.add_script(Script(match="#1#", outcome="never"))
    partial = RoutePlan(persistent={"cost_actual": ("set", LIE), "cost_estimate": ("set", LIE)})
    creates = {n: {"create": lying.answers.plan[n]["create"]} for n in lying.answers.plan}
    lying.answers.plan = {**creates, 1: {**creates[1], "get": partial}}
    holder, ended = in_thread(lambda: generate(1, "holder", poll_interval=0.5, max_poll_interval=0.5))
    while True:  # until the holder's answer is in
        alive = holder.is_alive()
        if any(r.mindvideo_task_id for r in rows_once_written(tmp_path)):
            break
        assert alive, "the holder ended before its answer was settled"
        time.sleep(0.05)
    outcomes = []
    for n in range(2, 4):
        try:
            submit(n)
            outcomes.append("sent")
        except MindVideoError as exc:  # refused, or gave up waiting: nothing sent
            outcomes.append(str(exc)[:120])
    assert "sent" not in outcomes, outcomes
    assert lying.state.charged_tasks == 1
    lying.answers.plan = creates  # the lie ends before the task does
    assert lying.state.release("#1#") == 1
    holder.join()  # released: it ends at its next poll; a hang is the per-test timeout's
    assert ended and not isinstance(ended[0], BaseException), ended
    within_budget(lying)


def test_a_batch_ends_waiting_on_a_submit_whose_task_tells_its_actual_late(
    lying: HostileServer, tmp_path: Path
) -> None:
    """The Submit's task runs 4 s: the batch's look-ups back off (1, 2, 4 s) and still see its end in time."""
    lying.state.add_script(Script(match="#1#", outcome="succeeded", processing_seconds=4.0))
    submit(1, "a")
    (event,) = run_triggers(
        batch_trigger(tmp_path / "b", [f"#{n}# item" for n in range(5, 8)], deadline=time.time() + 30)
    )
    assert event["status"] == DONE, event
    statuses = [row.status for row in load_manifest((tmp_path / "b" / "manifest.jsonl").read_text())]
    assert SUCCEEDED not in statuses, statuses
    assert lying.state.charged_tasks == 1
    within_budget(lying)
    ledger_not_under(lying, tmp_path)
    assert DAY < TRUE_PRICE

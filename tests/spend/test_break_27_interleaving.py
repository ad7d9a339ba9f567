"""Break issue 27: two batches, a Submit and a Generate interleaving on one model whose price is not known.

Same hostile server as test_break_27_lookups: the server charges 0.5 while every create answer says
0.0135, under a day budget of 0.03. The oracle is the server's books.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo import spend_command
from airflow_provider_mindvideo.batch.plan import SUCCEEDED, load_manifest
from airflow_provider_mindvideo.batch.trigger import DONE, MindVideoBatchTrigger
from airflow_provider_mindvideo.client.errors import BudgetExceededError
from airflow_provider_mindvideo.emulator.state import Script
from tests.hostile import HostileServer, RoutePlan
from tests.spend.test_break_27_lookups import (
    DAY,
    LIE,
    TRUE_PRICE,
    _server,
    generate,
    ledger_not_under,
    lying,  # noqa: F401 -- the fixture
    rows,
    submit,
    within_budget,
)
from tests.spend.test_operators_ledger import batch_trigger


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
        except BaseException as exc:  # noqa: BLE001
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


def test_a_lookup_of_a_running_task_telling_a_low_partial_actual(lying: HostileServer, tmp_path: Path) -> None:
    """Out of tests/hostile.py's scope (a readable cost_actual lying low), but the brief's idea.

    The lone create's task is still running; the waiter's look-ups say ``cost_actual`` 0.0135 (a
    partial figure), its end says 0.5. ``HolderLookups.tells_price`` takes an actual told by a task
    that did not end as the model's price.
    """
    lying.state.add_script(Script(match="#1#", outcome="succeeded", processing_seconds=3.0))
    partial = RoutePlan(
        transient=[{"cost_actual": ("set", LIE), "cost_estimate": ("set", LIE)}] * 3,
        persistent={"cost_estimate": ("set", LIE)},
    )
    lying.answers.plan = {**lying.answers.plan, 1: {"create": lying.answers.plan[1]["create"], "get": partial}}
    holder, _ = in_thread(lambda: generate(1, "holder", poll_interval=2.0, max_poll_interval=2.0))
    deadline = time.monotonic() + 20
    while not ((tmp_path / "spend.db").exists() and any(r.mindvideo_task_id for r in rows(tmp_path))):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    outcomes = []
    for n in range(2, 4):
        try:
            submit(n)
            outcomes.append("sent")
        except BudgetExceededError as exc:
            outcomes.append(str(exc)[:120])
    holder.join(30)
    print("OUTCOMES", outcomes, [(r.idempotency_key[-6:], r.state, r.estimated, r.actual, r.cost) for r in rows(tmp_path)])
    within_budget(lying)


def test_a_spurious_untold_mark_from_a_lookup_is_lifted_once_the_truth_is_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter's first look-up says the Submit's task failed with no actual; it then succeeds telling 0.5.

    The charges hold whatever happens; this asks whether the model stays refused under every budget
    (untold for good) although the server now tells its price, and whether ``mindvideo-spend reconcile``
    (without naming the task) lifts it.
    """
    context, server = _server(tmp_path, monkeypatch, day=2.0)
    try:
        lie = RoutePlan(transient=[{"status": ("set", "failed"), "cost_actual": ("drop",)}])
        server.answers.plan = {**server.answers.plan, 1: {"create": server.answers.plan[1]["create"], "get": lie}}
        submit(1, "a")
        with pytest.raises(BudgetExceededError) as refused:
            submit(2, "b")
        assert "untold" in str(refused.value) or "cost_actual" in str(refused.value), str(refused.value)
        time.sleep(1.3)  # the task really ended now, telling 0.5
        code = spend_command.main(["reconcile", "--older-than", "0"])
        sent = []
        for n in range(3, 5):
            try:
                submit(n)
                sent.append(n)
            except BudgetExceededError as exc:
                sent.append(str(exc)[:160])
        assert server.state.total_charged <= 2.0 + TRUE_PRICE + 1e-9
        ledger_not_under(server, tmp_path)
        assert sent[0] == 3, (code, sent)
    finally:
        context.__exit__(None, None, None)


def test_a_batch_ends_waiting_on_a_submit_whose_task_tells_its_actual_late(
    lying: HostileServer, tmp_path: Path
) -> None:
    """The Submit's task runs 4 s: the batch's look-ups back off (1, 2, 4 s) and still see its end in time."""
    lying.state.add_script(Script(match="#1#", outcome="succeeded", processing_seconds=4.0))
    submit(1, "a")
    started = time.monotonic()
    (event,) = run_triggers(
        batch_trigger(tmp_path / "b", [f"#{n}# item" for n in range(5, 8)], deadline=time.time() + 30)
    )
    took = time.monotonic() - started
    assert event["status"] == DONE, event
    statuses = [row.status for row in load_manifest((tmp_path / "b" / "manifest.jsonl").read_text())]
    assert SUCCEEDED not in statuses, statuses
    assert lying.state.charged_tasks == 1
    within_budget(lying)
    ledger_not_under(lying, tmp_path)
    assert took < 15, took
    assert DAY < TRUE_PRICE

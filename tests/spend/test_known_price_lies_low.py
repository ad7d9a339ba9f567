"""Issue 27 (found by a break review): once a model's price IS known, a create answer's lying-low estimate still lowers what it counts.

The server charges 0.5 for MODEL while every create answer says 0.0135 (tests/hostile.py allows any
``cost_estimate``); its tasks' ends tell the true ``cost_actual`` 0.5. A first create (a Generate) tells
0.5: the model's price is known from then on. A day budget of 1.2 then leaves room for one more create
of it (0.5 + 0.5 <= 1.2 < 0.5 * 3): no allowance is owed for an unpriced model any more, so the server's
books must stay within 1.2 (within 1.7 if one were). The oracle is the server's ``total_charged``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from airflow_provider_mindvideo.batch.plan import load_manifest
from airflow_provider_mindvideo.batch.trigger import DONE
from airflow_provider_mindvideo.client.errors import BudgetExceededError
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.reading import budget_windows
from tests.spend.test_lone_create_lookups import TRUE_PRICE, _server, generate, rows, submit
from tests.spend.test_operators_ledger import batch_trigger, run_trigger

DAY = 1.2


def window(tmp_path: Path) -> tuple[float, float]:
    (found,) = budget_windows(engine_for_url(f"sqlite:///{tmp_path / 'spend.db'}"))
    return found.spent, found.reserved


def test_submits_of_a_priced_model_whose_answers_lie_low_stay_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, server = _server(tmp_path, monkeypatch, day=DAY)
    try:
        generate(1, "first")  # tells its actual 0.5 when it ends: the model's price is known
        assert window(tmp_path)[0] == pytest.approx(TRUE_PRICE)
        outcomes = []
        for n in range(2, 8):
            try:
                submit(n)
                outcomes.append("sent")
            except BudgetExceededError as refused:
                outcomes.append(str(refused)[:100])
        spent, reserved = window(tmp_path)
        detail = (
            outcomes,
            f"ledger spent {spent} reserved {reserved}",
            [(r.estimated, r.actual, r.cost) for r in rows(tmp_path)],
        )
        assert server.state.total_charged <= DAY + 1e-9, (server.state.total_charged, detail)
        assert spent + reserved >= server.state.total_charged - 1e-6, (server.state.total_charged, detail)
    finally:
        context.__exit__(None, None, None)


def test_a_batch_of_a_priced_model_whose_answers_lie_low_stays_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, server = _server(tmp_path, monkeypatch, day=DAY)
    try:
        generate(1, "first")
        event = run_trigger(
            batch_trigger(tmp_path / "b", [f"#{n}# item" for n in range(2, 8)], deadline=time.time() + 30)
        )
        assert event["status"] == DONE, event
        statuses = [row.status for row in load_manifest((tmp_path / "b" / "manifest.jsonl").read_text())]
        spent, reserved = window(tmp_path)
        assert server.state.total_charged <= DAY + 1e-9, (server.state.total_charged, statuses, spent, reserved)
        assert spent + reserved >= server.state.total_charged - 1e-6, (server.state.total_charged, spent, reserved)
    finally:
        context.__exit__(None, None, None)

"""Budgets through ``dag.test()``: a refused create fails its task unretried, and ``wait`` defers to the reset.

Real Airflow runs the DAGs (tests/dags/mindvideo_budget_dags.py) against the emulator, whose books
are the oracle. The ledger's clock is a calendar the test holds; in the wait DAG the deferred
task's trigger is the one thing replaced: it turns the calendar to the moment it waits for, as the
night passing would, instead of sleeping until midnight.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.triggers.base import TriggerEvent

from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.spend import ledger as ledger_module
from airflow_provider_mindvideo.spend import reading
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.windows import UTC
from tests.dags.mindvideo_budget_dags import DAGS
from tests.test_dags import dag_runner

IMAGE_COST = 0.0135
EVENING = dt.datetime(2026, 6, 1, 22, 30, tzinfo=UTC)  # 2026-06-01 in UTC, the budgets' default timezone
NEXT_DAY = dt.datetime(2026, 6, 2, tzinfo=UTC)


class Calendar:
    """The ledger's now: held still, turned only by the trigger below."""

    now: ClassVar[dt.datetime] = EVENING


class TheResetComes(DateTimeTrigger):
    """DateTimeTrigger, except that the time it waits for comes at once (the calendar turns to it)."""

    fired: ClassVar[list[dt.datetime]] = []

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{__name__}.TheResetComes", super().serialize()[1])

    async def run(self) -> AsyncIterator[TriggerEvent]:
        TheResetComes.fired.append(self.moment)
        Calendar.now = self.moment + dt.timedelta(seconds=1)
        yield TriggerEvent(self.moment)


@pytest.fixture
def budgeted(airflow_db: str, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The default connection with an account day budget of ``limit`` (set by the test), a ledger file, the calendar."""
    path = tmp_path / "spend.db"
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__LEDGER_CONN_ID", "mindvideo_ledger")
    monkeypatch.setattr(Calendar, "now", EVENING)
    monkeypatch.setattr(ledger_module, "utc_now", lambda: Calendar.now)
    monkeypatch.setattr(TheResetComes, "fired", [])
    monkeypatch.setattr("airflow.providers.standard.triggers.temporal.DateTimeTrigger", TheResetComes)
    return path


def day_budget(emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, limit: float) -> None:
    connection = json.loads(emulator.connection_uri())
    connection["extra"] = {"budgets": {"account": {"day": limit}}}
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps(connection))


def test_a_dag_whose_third_create_would_pass_the_day_fails_that_task_unretried(
    budgeted: Path, airflow_db: str, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 2 * IMAGE_COST + 0.001
    day_budget(emulator, monkeypatch, limit)
    run = dag_runner(airflow_db, DAGS)("mv_budget_refusal")
    states = {index: run.ti_state("generate", index) for index in range(3)}
    assert sorted(states.values()) == ["failed", "success", "success"], states
    (refused_index,) = [index for index, state in states.items() if state == "failed"]
    assert run.tries("generate", refused_index) == 1  # retries=2, but a budget refusal is not retried
    assert emulator.state.charged_tasks == 2 and emulator.state.total_charged <= limit
    engine = engine_for_url(f"sqlite:///{budgeted}")
    (refused,) = reading.refused_creates(engine)
    assert (refused.dag_id, refused.task_id, refused.map_index) == ("mv_budget_refusal", "generate", refused_index)
    assert (refused.budgets, refused.reserved, refused.created_at) == (("account",), IMAGE_COST, EVENING)
    (total,) = reading.spend_totals(engine, "dag")
    assert (total.creates, total.refused, total.settled) == (2, 1, pytest.approx(emulator.state.total_charged))


def test_a_dag_whose_create_waits_for_the_reset_creates_it_the_next_day(
    budgeted: Path, airflow_db: str, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    day_budget(emulator, monkeypatch, IMAGE_COST)
    run = dag_runner(airflow_db, DAGS)("mv_budget_wait")
    assert run.state == "success" and run.ti_state("second") == "success"
    assert run.tries("second") == 1  # deferred, not failed and retried
    assert TheResetComes.fired == [NEXT_DAY]  # it waited once, for the day's reset
    assert emulator.state.charged_tasks == 2
    engine = engine_for_url(f"sqlite:///{budgeted}")
    windows = reading.budget_windows(engine, since=EVENING - dt.timedelta(days=1))
    # One create in each day, each within its day's limit: never past a budget.
    assert [(w.start, w.spent, w.reserved) for w in windows] == [
        (dt.datetime(2026, 6, 1, tzinfo=UTC), IMAGE_COST, 0),
        (NEXT_DAY, IMAGE_COST, 0),
    ]
    # Its refusal was on the books while it waited; its reservation the next day took that row over.
    assert reading.refused_creates(engine) == []
    (second,) = [r for r in reading.recent_creates(engine) if r.task_id == "second"]
    assert second.state == "settled" and second.created_at == NEXT_DAY + dt.timedelta(seconds=1)

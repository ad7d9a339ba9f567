"""Reading the ledger: spend per budget window, totals per DAG, model, account or day, and recent creates.

For the UI page and the ``mindvideo-spend`` command. Only reads; on SQLite it takes no write lock.
Amounts are in the API's cost unit; times are UTC.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import String, case, cast, func, select
from sqlalchemy.engine import Engine

from airflow_provider_mindvideo.spend.budgets import from_micros
from airflow_provider_mindvideo.spend.engines import reading
from airflow_provider_mindvideo.spend.records import SpendRow, spend_row
from airflow_provider_mindvideo.spend.schema import budget_window, spend
from airflow_provider_mindvideo.spend.windows import UTC

Grouping = Literal["dag", "model", "account", "day"]


@dataclass(frozen=True)
class WindowSpend:
    """One budget's window: its limit, what is spent and what is held for creates in flight."""

    account: str
    budget: str
    period: str
    timezone: str
    start: dt.datetime
    resets_at: dt.datetime
    limit: float
    spent: float
    reserved: float

    @property
    def left(self) -> float:
        return max(0.0, self.limit - self.spent - self.reserved)


@dataclass(frozen=True)
class SpendTotal:
    """Creates of one DAG (model, account, UTC day) in a time range: counted, settled, still held."""

    key: str
    creates: int
    settled: float
    reserved: float

    @property
    def counted(self) -> float:
        """What counts against budgets: settled costs plus open reservations."""
        return self.settled + self.reserved


def budget_windows(
    engine: Engine,
    *,
    account: str | None = None,
    at: dt.datetime | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[WindowSpend]:
    """Budget windows with their spending: those holding ``at`` (default: now), or those starting in [since, until)."""
    query = select(budget_window)
    if since is None and until is None:
        instant = _naive(at or dt.datetime.now(UTC))
        query = query.where(budget_window.c.window_start <= instant, budget_window.c.window_end > instant)
    if since is not None:
        query = query.where(budget_window.c.window_start >= _naive(since))
    if until is not None:
        query = query.where(budget_window.c.window_start < _naive(until))
    if account is not None:
        query = query.where(budget_window.c.account == account)
    query = query.order_by(budget_window.c.account, budget_window.c.budget, budget_window.c.window_start)
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [
        WindowSpend(
            account=r.account,
            budget=r.budget,
            period=r.period,
            timezone=r.timezone,
            start=r.window_start.replace(tzinfo=UTC),
            resets_at=r.window_end.replace(tzinfo=UTC),
            limit=from_micros(r.limit_amount),
            spent=from_micros(r.spent),
            reserved=from_micros(r.reserved),
        )
        for r in rows
    ]


def spend_totals(
    engine: Engine,
    by: Grouping,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    account: str | None = None,
) -> list[SpendTotal]:
    """Creates made in [since, until) grouped ``by`` DAG, model, account or UTC day; released ones count 0."""
    column: Any = {
        "dag": func.coalesce(spend.c.dag_id, ""),
        "model": spend.c.model,
        "account": spend.c.account,
        "day": func.substr(cast(spend.c.created_at, String), 1, 10),
    }[by]
    settled = func.sum(case((spend.c.state == "settled", spend.c.cost), else_=0))
    held = func.sum(case((spend.c.state == "reserved", spend.c.reserved), else_=0))
    query = select(column.label("key"), func.count().label("creates"), settled.label("settled"), held.label("held"))
    query = _in_range(query, since, until, account).group_by(column).order_by(column)
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [SpendTotal(str(r.key), int(r.creates), from_micros(int(r.settled)), from_micros(int(r.held))) for r in rows]


def recent_creates(
    engine: Engine,
    *,
    limit: int = 50,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    account: str | None = None,
    dag_id: str | None = None,
) -> list[SpendRow]:
    """The newest creates first."""
    query = _in_range(select(spend), since, until, account)
    if dag_id is not None:
        query = query.where(spend.c.dag_id == dag_id)
    query = query.order_by(spend.c.created_at.desc(), spend.c.id.desc()).limit(limit)
    with reading(engine) as connection:
        return [spend_row(r) for r in connection.execute(query).all()]


def _in_range(query: Any, since: dt.datetime | None, until: dt.datetime | None, account: str | None) -> Any:
    if since is not None:
        query = query.where(spend.c.created_at >= _naive(since))
    if until is not None:
        query = query.where(spend.c.created_at < _naive(until))
    if account is not None:
        query = query.where(spend.c.account == account)
    return query


def _naive(instant: dt.datetime) -> dt.datetime:
    if instant.tzinfo is None:
        return instant  # read as UTC
    return instant.astimezone(UTC).replace(tzinfo=None)

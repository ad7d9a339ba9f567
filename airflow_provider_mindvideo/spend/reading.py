"""Reading the ledger: spend per budget window, totals per DAG, model, account or day, recent creates and refusals.

A create a budget refused has a row in state ``refused`` (cost 0, ``reserved`` the amount it would
have held, ``budgets`` the budget that refused it): it counts in no total, and is read apart
(:func:`refused_creates`, ``SpendTotal.refused``).

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
from airflow_provider_mindvideo.spend.schema import REFUSED, budget_window, spend
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
    """Creates of one DAG (model, account, UTC day) in a time range: counted, settled, still held.

    ``creates`` are the ones reserved (sent, or about to be); ``refused`` the ones a budget refused
    (never sent, counted nowhere).
    """

    key: str
    creates: int
    settled: float
    reserved: float
    refused: int = 0

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
    creates = func.sum(case((spend.c.state == REFUSED, 0), else_=1))
    refused = func.sum(case((spend.c.state == REFUSED, 1), else_=0))
    labelled = [settled.label("settled"), held.label("held"), refused.label(REFUSED)]
    query = select(column.label("key"), creates.label("creates"), *labelled)
    query = _in_range(query, since, until, account).group_by(column).order_by(column)
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [
        SpendTotal(str(r.key), int(r.creates), from_micros(int(r.settled)), from_micros(int(r.held)), int(r.refused))
        for r in rows
    ]


def recent_creates(
    engine: Engine,
    *,
    limit: int = 50,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    account: str | None = None,
    dag_id: str | None = None,
) -> list[SpendRow]:
    """The newest creates first (those a budget refused are :func:`refused_creates`)."""
    rows = _newest(engine, spend.c.state != REFUSED, limit, since, until, account, dag_id=dag_id)
    return [spend_row(r) for r in rows]


@dataclass(frozen=True)
class RefusedCreate:
    """A create a budget refused: nothing was sent. ``reserved`` is what it would have held; times UTC."""

    idempotency_key: str
    account: str
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    map_index: int | None
    try_number: int | None
    model: str
    budgets: tuple[str, ...]
    reserved: float
    created_at: dt.datetime


def refused_creates(
    engine: Engine,
    *,
    limit: int = 50,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    account: str | None = None,
    dag_id: str | None = None,
    model: str | None = None,
) -> list[RefusedCreate]:
    """Creates a budget refused, the newest (last refused) first; one per idempotency key.

    A refused create reserved later (``on_budget_exhausted="wait"`` after the reset, a retry) is a
    create again and is no longer listed here.
    """
    rows = _newest(engine, spend.c.state == REFUSED, limit, since, until, account, dag_id=dag_id, model=model)
    return [
        RefusedCreate(
            idempotency_key=r.idempotency_key,
            account=r.account,
            dag_id=r.dag_id,
            run_id=r.run_id,
            task_id=r.task_id,
            map_index=r.map_index,
            try_number=r.try_number,
            model=r.model,
            budgets=tuple(r.budgets.split()),
            reserved=from_micros(r.reserved),
            created_at=r.created_at.replace(tzinfo=UTC),
        )
        for r in rows
    ]


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


def _newest(
    engine: Engine,
    state: Any,
    limit: int,
    since: dt.datetime | None,
    until: dt.datetime | None,
    account: str | None,
    **equal: str | None,
) -> list[Any]:
    """Ledger rows in ``state`` (a clause), newest first; ``equal``: columns that must equal a value, when given."""
    query = _in_range(select(spend).where(state), since, until, account)
    for column, value in equal.items():
        if value is not None:
            query = query.where(spend.c[column] == value)
    query = query.order_by(spend.c.created_at.desc(), spend.c.id.desc()).limit(limit)
    with reading(engine) as connection:
        return list(connection.execute(query).all())

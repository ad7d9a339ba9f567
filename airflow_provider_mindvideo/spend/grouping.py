"""A group of new reservations decided together: a batch's items in a handful of statements, not ten each.

:meth:`Ledger.reserve_many` tries this first. It applies when every create of the group is new (no
row under its key) and none goes alone (each model's price is known, or no budget counts it): a
batch's groups after its model's first settle. Then the group's budget windows are locked (their
counter rows, in lock order: ``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's writer runs alone),
each create is accepted or refused in order against the totals the ones before it left -- the
same decisions as the conditional ``UPDATE`` of :mod:`~airflow_provider_mindvideo.spend.reserving`
one by one -- and the rows, holds and counters are written in one statement each. Otherwise it
returns None and the creates go one by one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from airflow_provider_mindvideo.spend.budgets import BudgetConfig, BudgetLimit, from_micros, to_micros
from airflow_provider_mindvideo.spend.pricing import ModelPrice, holding_amount, price_of
from airflow_provider_mindvideo.spend.records import BudgetRefusal, CreateRecord, PriceUnknownWait, SpendRow, spend_row
from airflow_provider_mindvideo.spend.reserving import counter_is, insert_ignoring, lock_order, naive, row_values
from airflow_provider_mindvideo.spend.schema import REFUSED, budget_window, spend, spend_hold
from airflow_provider_mindvideo.spend.settling import CHUNK
from airflow_provider_mindvideo.spend.windows import Window, window_at

Reserved = SpendRow | BudgetRefusal | PriceUnknownWait
_Counter = tuple[str, str, dt.datetime]  # budget, period, window start (naive UTC)


def reserve_group(
    connection: Connection,
    creates: Sequence[tuple[CreateRecord, float, str | None]],
    config: BudgetConfig,
    now: dt.datetime,
) -> list[Reserved] | None:
    """Reserve every create of the group in order, or None when one is not new or goes alone (nothing written)."""
    keys = [create.idempotency_key for create, _, _ in creates]
    if len(set(keys)) != len(keys) or _any_written(connection, keys):
        return None
    prices: dict[str, ModelPrice] = {}
    plans = []
    for create, amount, budget in creates:
        budgets = lock_order(config.applicable(budget))
        if create.model not in prices:
            prices[create.model] = price_of(connection, create.model)
        price = prices[create.model]
        if budgets and not price.known:
            return None  # it goes alone: decided one by one, under its price row's lock
        windows = [(b, window_at(b.period, now, config.timezone)) for b in budgets]
        plans.append((create, holding_amount(to_micros(amount), price), windows))
    counters = _lock_counters(connection, config, [w for _, _, windows in plans for w in windows])
    held: dict[_Counter, int] = dict.fromkeys(counters, 0)
    outcomes: list[Reserved] = []
    rows: list[dict[str, Any]] = []
    for create, micros, windows in plans:
        refusal = _first_full(config, counters, held, micros, windows)
        if refusal is None:
            for limit, window in windows:
                held[_counter(limit, window)] += micros
        outcomes.append(refusal or _row(create, config, micros, windows, now))
        rows.append(_values(create, config, micros, windows, now, refusal))
    written = _insert(connection, rows)
    # A key another reserver wrote since we looked (PostgreSQL): counted there, so it holds nothing here.
    for (create, micros, windows), outcome in zip(plans, outcomes, strict=True):
        if create.idempotency_key not in written and isinstance(outcome, SpendRow):
            for limit, window in windows:
                held[_counter(limit, window)] -= micros
    holds = [
        {"spend_id": written[create.idempotency_key], "budget": b.name, "period": b.period.value, "window_start": start}
        for (create, _, windows), outcome in zip(plans, outcomes, strict=True)
        if isinstance(outcome, SpendRow) and create.idempotency_key in written
        for b, w in windows
        for start in [naive(w.start)]
    ]
    if holds:
        connection.execute(insert(spend_hold), holds)
    limits = {_counter(b, w): b.limit for _, _, windows in plans for b, w in windows}
    for key in sorted(held):
        if held[key]:
            connection.execute(
                update(budget_window)
                .where(counter_is(_counter_key(config, key)))
                .values(reserved=budget_window.c.reserved + held[key], limit_amount=limits[key])
            )
    return outcomes


def _any_written(connection: Connection, keys: list[str]) -> bool:
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        if connection.execute(select(spend.c.id).where(spend.c.idempotency_key.in_(chunk)).limit(1)).first():
            return True
    return False


def _counter(budget: BudgetLimit, window: Window) -> _Counter:
    return (budget.name, budget.period.value, naive(window.start))


def _counter_key(config: BudgetConfig, counter: _Counter) -> dict[str, Any]:
    name, period, start = counter
    return {"account": config.account, "budget": name, "period": period, "window_start": start}


def _lock_counters(
    connection: Connection, config: BudgetConfig, windows: list[tuple[BudgetLimit, Window]]
) -> dict[_Counter, tuple[int, int]]:
    """The group's windows' counter rows (written if missing), locked in lock order: (spent, reserved) each."""
    found: dict[_Counter, tuple[int, int]] = {}
    for counter, (budget, window) in sorted({_counter(b, w): (b, w) for b, w in windows}.items()):
        key = _counter_key(config, counter)
        new = key | {
            "window_end": naive(window.resets_at),
            "timezone": config.timezone.key,
            "limit_amount": budget.limit,
            "spent": 0,
            "reserved": 0,
        }
        insert_ignoring(connection, budget_window, new, list(key))
        query = select(budget_window.c.spent, budget_window.c.reserved).where(counter_is(key))
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        row = connection.execute(query).one()
        found[counter] = (row.spent, row.reserved)
    return found


def _first_full(
    config: BudgetConfig,
    counters: dict[_Counter, tuple[int, int]],
    held: dict[_Counter, int],
    micros: int,
    windows: list[tuple[BudgetLimit, Window]],
) -> BudgetRefusal | None:
    for budget, window in windows:
        spent, reserved = counters[_counter(budget, window)]
        reserved += held[_counter(budget, window)]
        if spent + reserved + micros > budget.limit:
            return BudgetRefusal(
                account=config.account,
                budget=budget.name,
                window=window,
                timezone=config.timezone.key,
                limit=from_micros(budget.limit),
                spent=from_micros(spent),
                reserved=from_micros(reserved),
                amount=from_micros(micros),
            )
    return None


def _values(
    create: CreateRecord,
    config: BudgetConfig,
    micros: int,
    windows: list[tuple[BudgetLimit, Window]],
    now: dt.datetime,
    refusal: BudgetRefusal | None,
) -> dict[str, Any]:
    # A refused create names the budget that refused it (as reserving.record_refusal writes it).
    if refusal is not None:
        values = row_values(create, config, now, budgets=refusal.budget, reserved=micros, cost=0, state=REFUSED)
    else:
        names = " ".join(sorted({b.name for b, _ in windows}))
        values = row_values(create, config, now, budgets=names, reserved=micros, cost=micros, state="reserved")
    return values | {"idempotency_key": create.idempotency_key}


def _row(
    create: CreateRecord,
    config: BudgetConfig,
    micros: int,
    windows: list[tuple[BudgetLimit, Window]],
    now: dt.datetime,
) -> SpendRow:
    values = _values(create, config, micros, windows, now, None)
    unknown = {"estimated": None, "actual": None, "mindvideo_task_id": None, "settled_at": None}
    return spend_row(SimpleNamespace(**values, **unknown))


def _insert(connection: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert the rows (one statement, sent in batches), skipping keys written since; key -> id of those inserted."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    statement = (
        dialect_insert(spend)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(spend.c.id, spend.c.idempotency_key)
    )
    return {key: spend_id for spend_id, key in connection.execute(statement, rows)}

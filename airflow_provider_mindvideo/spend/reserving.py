"""One reservation, inside the caller's transaction: the create's row, its price, its alone rule, its windows.

Called once per create by :meth:`Ledger.try_reserve`, and once per create inside one transaction
(each under its own savepoint) by :meth:`Ledger.reserve_many`. Raises :class:`Refused` (a window
is full) or :class:`Waiting` (its model goes alone); the caller rolls back what it wrote.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection, Row

from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.spend.budgets import BudgetConfig, BudgetLimit, from_micros, to_micros
from airflow_provider_mindvideo.spend.pricing import create_in_flight, holding_amount, lock_price, price_of
from airflow_provider_mindvideo.spend.records import BudgetRefusal, CreateRecord, PriceUnknownWait, SpendRow, spend_row
from airflow_provider_mindvideo.spend.schema import REFUSED, budget_window, spend, spend_hold
from airflow_provider_mindvideo.spend.windows import UTC, Window


class Refused(Exception):
    def __init__(self, refusal: BudgetRefusal) -> None:
        self.refusal = refusal


class Waiting(Exception):
    def __init__(self, wait: PriceUnknownWait) -> None:
        self.wait = wait


def reserve_one(
    connection: Connection,
    create: CreateRecord,
    micros: int,
    config: BudgetConfig,
    windows: list[tuple[BudgetLimit, Window]],
    now: dt.datetime,
) -> SpendRow:
    """Reserve ``create`` at no less than ``micros`` and its model's bound in the ledger, or raise; its row.

    A replay of a key reserved or settled changes nothing (no price, no alone rule: it is counted).
    A key released (the API refused it) or refused by a budget earlier is held again, in its row.
    """
    found = locked_row(connection, create.idempotency_key)
    if found is not None and found.state not in ("released", REFUSED):
        return spend_row(found)
    price = price_of(connection, create.model)
    if not price.known and windows:
        # Goes alone: one create of an unpriced model in flight per account (PostgreSQL: under its price row's
        # lock). Read again once it is held: a settle committed while we waited may have told the price, or
        # marked it untold, ending the create in flight.
        lock_price(connection, create.model)
        price = price_of(connection, create.model)
    micros = holding_amount(micros, price)
    if not price.known and windows:
        if price.untold is not None:
            raise Refused(_untold(create, config, micros, windows, price.untold))
        waiting = create_in_flight(connection, config.account, create.model, create.idempotency_key)
        if waiting is not None:
            raise Waiting(waiting)
    names = " ".join(sorted({b.name for b, _ in windows}))
    values = row_values(create, config, now, budgets=names, reserved=micros, cost=micros, state="reserved")
    if found is None:
        row = values | {"idempotency_key": create.idempotency_key}
        spend_id = insert_ignoring(connection, spend, row, ["idempotency_key"], returning=spend.c.id)
        if spend_id is None:  # written since we looked (PostgreSQL: another reserver of the key committed): counted
            return spend_row(locked_row(connection, create.idempotency_key))
    else:  # the API or a budget refused it before: held again
        spend_id = found.id
        connection.execute(spend_hold.delete().where(spend_hold.c.spend_id == spend_id))
        connection.execute(update(spend).where(spend.c.id == spend_id).values(values | {"settled_at": None}))
    for budget, window in windows:
        _hold(connection, micros, config, budget, window)
    if windows:
        holds = [
            {"spend_id": spend_id, "budget": b.name, "period": b.period.value, "window_start": naive(w.start)}
            for b, w in windows
        ]
        connection.execute(insert(spend_hold), holds)
    unknown = {"estimated": None, "actual": None, "mindvideo_task_id": None, "settled_at": None}
    return spend_row(SimpleNamespace(**values, **unknown, idempotency_key=create.idempotency_key))


def _untold(
    create: CreateRecord, config: BudgetConfig, micros: int, windows: list[tuple[BudgetLimit, Window]], why: str
) -> BudgetRefusal:
    """The refusal of a create whose model's price is untold for good: no window can count it (the first is named)."""
    budget, window = windows[0]
    limit = from_micros(budget.limit)
    return BudgetRefusal(
        account=config.account,
        budget=budget.name,
        window=window,
        timezone=config.timezone.key,
        limit=limit,
        spent=0.0,
        reserved=0.0,
        amount=from_micros(micros),
        untold=why,
        model=create.model,
    )


def record_refusal(
    connection: Connection, create: CreateRecord, config: BudgetConfig, refusal: BudgetRefusal, now: dt.datetime
) -> None:
    """Write that a budget refused ``create`` (nothing was sent): a row in state ``refused``, counted in no total.

    It says what the create would have held (``reserved``), which budget refused it and when (its
    last refusal). A key with a row in another state keeps it (a replay is never refused; a
    create the API refused stays released). A later reservation of the key turns it into one.
    """
    reserved = to_micros(refusal.amount)
    values = row_values(create, config, now, budgets=refusal.budget, reserved=reserved, cost=0, state=REFUSED)
    if not insert_ignoring(
        connection, spend, values | {"idempotency_key": create.idempotency_key}, ["idempotency_key"]
    ):
        connection.execute(
            update(spend)
            .where(spend.c.idempotency_key == create.idempotency_key, spend.c.state == REFUSED)
            .values(values)
        )


def row_values(
    create: CreateRecord, config: BudgetConfig, now: dt.datetime, *, budgets: str, reserved: int, cost: int, state: str
) -> dict[str, Any]:
    """A create's ledger row but its key: who made it, for which model, what it holds and counts, and when."""
    return {
        "account": config.account,
        "dag_id": create.dag_id,
        "run_id": create.run_id,
        "task_id": create.task_id,
        "map_index": create.map_index,
        "try_number": create.try_number,
        "model": create.model,
        "budgets": budgets,
        "reserved": reserved,
        "cost": cost,
        "state": state,
        "created_at": naive(now),
    }


def _hold(connection: Connection, micros: int, config: BudgetConfig, budget: BudgetLimit, window: Window) -> None:
    key = {
        "account": config.account,
        "budget": budget.name,
        "period": budget.period.value,
        "window_start": naive(window.start),
    }
    hold = (
        update(budget_window)
        .where(counter_is(key), budget_window.c.spent + budget_window.c.reserved + micros <= budget.limit)
        .values(reserved=budget_window.c.reserved + micros, limit_amount=budget.limit)
    )
    if connection.execute(hold).rowcount:
        return
    # Not held: the window is full, or its counter row is not written yet (its first create).
    full = connection.execute(select(budget_window).where(counter_is(key))).first()
    if full is None:
        counter = key | {"window_end": naive(window.resets_at), "timezone": config.timezone.key}
        new = counter | {"limit_amount": budget.limit, "spent": 0, "reserved": 0}
        insert_ignoring(connection, budget_window, new, list(key))
        if connection.execute(hold).rowcount:
            return
        full = connection.execute(select(budget_window).where(counter_is(key))).one()
    raise Refused(
        BudgetRefusal(
            account=config.account,
            budget=budget.name,
            window=window,
            timezone=config.timezone.key,
            limit=from_micros(budget.limit),
            spent=from_micros(full.spent),
            reserved=from_micros(full.reserved),
            amount=from_micros(micros),
        )
    )


def counter_is(key: dict[str, Any]) -> Any:
    return and_(*(budget_window.c[name] == value for name, value in key.items()))


def locked_row(connection: Connection, idempotency_key: str) -> Row[Any] | None:
    query = select(spend).where(spend.c.idempotency_key == idempotency_key)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return connection.execute(query).first()


def insert_ignoring(
    connection: Connection, table: Any, values: dict[str, Any], conflict: list[str], returning: Any = None
) -> Any:
    """INSERT, doing nothing when a row with the same ``conflict`` columns exists.

    The number of rows inserted; with ``returning`` (a column), its value in the new row, or None.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    else:
        raise InputValidationError(f"The MindVideo spend ledger runs on PostgreSQL or SQLite, not {dialect}")
    statement = dialect_insert(table).values(values).on_conflict_do_nothing(index_elements=conflict)
    if returning is not None:
        return connection.execute(statement.returning(returning)).scalar()
    return int(connection.execute(statement).rowcount)


def lock_order(budgets: tuple[BudgetLimit, ...]) -> list[BudgetLimit]:
    # Every writer takes counter rows in the same order, so two transactions never wait on each other.
    return sorted(budgets, key=lambda b: (b.name, b.period.value))


def naive(instant: dt.datetime) -> dt.datetime:
    # Stored as naive UTC: SQLite keeps no offset, and both databases compare these exactly.
    return instant.astimezone(UTC).replace(tzinfo=None)

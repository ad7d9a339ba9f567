"""The spend ledger: every create reserved before it is sent, settled or released after, against budgets.

Each write is one transaction. A reservation holds its amount in the counter row of every
budget window it counts against with a conditional update,
``reserved = reserved + :amount WHERE spent + reserved + :amount <= :limit``: no row updated
means the window is full, and the whole transaction (the create's row included) is rolled back.
PostgreSQL re-checks the condition on the row's newest version under its row lock; SQLite runs
every write transaction alone (``BEGIN IMMEDIATE``). Either way concurrent workers and
triggerers on any number of machines never pass a limit together.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection, Engine, Row

from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.spend.budgets import BudgetConfig, BudgetLimit, from_micros, to_micros
from airflow_provider_mindvideo.spend.engines import reading
from airflow_provider_mindvideo.spend.records import (
    BudgetRefusal,
    BudgetWindowExceededError,
    CreateRecord,
    SpendRow,
    spend_row,
)
from airflow_provider_mindvideo.spend.schema import budget_window, ensure_schema, spend, spend_hold
from airflow_provider_mindvideo.spend.windows import UTC, Window, window_at


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


class _Refused(Exception):
    def __init__(self, refusal: BudgetRefusal) -> None:
        self.refusal = refusal


class Ledger:
    """The books of every create, in one SQL database (see :func:`engine_for_url`).

    :param clock: now, as an aware datetime (tests move it across windows).
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.engine = engine
        self.clock = clock
        ensure_schema(engine)

    def reserve(self, create: CreateRecord, amount: float, config: BudgetConfig, budget: str | None = None) -> SpendRow:
        """Write the create's row and hold ``amount`` in each budget window it counts against, or refuse.

        A replay of a key already reserved or settled changes nothing and returns its row; a key
        released earlier (the API refused it) is held again.

        :param amount: the most the create can cost, as far as anything seen says.
        :param budget: the operator's named budget, counted besides the account's.
        :raises BudgetWindowExceededError: a window would pass its limit; nothing was written.
        """
        outcome = self.try_reserve(create, amount, config, budget)
        if isinstance(outcome, BudgetRefusal):
            raise BudgetWindowExceededError(outcome)
        return outcome

    def try_reserve(
        self, create: CreateRecord, amount: float, config: BudgetConfig, budget: str | None = None
    ) -> SpendRow | BudgetRefusal:
        """:meth:`reserve`, returning the refusal instead of raising it (a batch goes on with what fits)."""
        if not (amount >= 0):
            raise InputValidationError(f"amount = {amount!r}: a reservation must be a number >= 0")
        budgets = config.applicable(budget)
        micros = to_micros(amount)
        now = self.clock().astimezone(UTC)
        windows = [(b, window_at(b.period, now, config.timezone)) for b in _lock_order(budgets)]
        try:
            with self.engine.begin() as connection:
                _reserve(connection, create, micros, config, windows, now)
        except _Refused as refused:
            return refused.refusal
        found = self.row(create.idempotency_key)
        assert found is not None
        return found

    def settle(
        self,
        idempotency_key: str,
        *,
        estimated: float | None = None,
        actual: float | None = None,
        mindvideo_task_id: str | None = None,
    ) -> SpendRow | None:
        """The create's answer told its cost: it counts ``max(estimated, actual)`` from now on.

        Idempotent, and a later settle may add what a later answer knows (the actual cost once
        the task finished). Neither known: the create stays counted at its reservation. Returns
        None for a key the ledger never reserved.
        """
        with self.engine.begin() as connection:
            found = _locked_row(connection, idempotency_key)
            if found is None:
                return None
            estimated_micros = _first_known(estimated, found.estimated)
            actual_micros = _first_known(actual, found.actual)
            known = [m for m in (estimated_micros, actual_micros) if m is not None]
            if found.state == "released" and not known:
                # Refused by the API, and nothing since says a task exists: still nothing charged.
                return spend_row(found)
            cost = max(known) if known else found.reserved
            was_held = found.reserved if found.state == "reserved" else 0
            was_spent = found.cost if found.state == "settled" else 0
            _move(connection, found.id, reserved=-was_held, spent=cost - was_spent)
            connection.execute(
                update(spend)
                .where(spend.c.id == found.id)
                .values(
                    state="settled",
                    estimated=estimated_micros,
                    actual=actual_micros,
                    cost=cost,
                    mindvideo_task_id=mindvideo_task_id or found.mindvideo_task_id,
                    settled_at=found.settled_at or _naive(self.clock()),
                )
            )
        return self.row(idempotency_key)

    def release(self, idempotency_key: str) -> SpendRow | None:
        """The API refused the create (nothing was charged): give its reservation back.

        A settled create stays settled (it was charged). Returns None for an unknown key.
        """
        with self.engine.begin() as connection:
            found = _locked_row(connection, idempotency_key)
            if found is None:
                return None
            if found.state == "reserved":
                _move(connection, found.id, reserved=-found.reserved, spent=0)
                connection.execute(
                    update(spend)
                    .where(spend.c.id == found.id)
                    .values(state="released", cost=0, settled_at=_naive(self.clock()))
                )
        return self.row(idempotency_key)

    def row(self, idempotency_key: str) -> SpendRow | None:
        """The create's row, or None."""
        with reading(self.engine) as connection:
            found = connection.execute(select(spend).where(spend.c.idempotency_key == idempotency_key)).first()
        return None if found is None else spend_row(found)


def _reserve(
    connection: Connection,
    create: CreateRecord,
    micros: int,
    config: BudgetConfig,
    windows: list[tuple[BudgetLimit, Window]],
    now: dt.datetime,
) -> None:
    names = " ".join(sorted({b.name for b, _ in windows}))
    values: dict[str, Any] = {
        "idempotency_key": create.idempotency_key,
        "account": config.account,
        "dag_id": create.dag_id,
        "run_id": create.run_id,
        "task_id": create.task_id,
        "map_index": create.map_index,
        "try_number": create.try_number,
        "model": create.model,
        "budgets": names,
        "reserved": micros,
        "cost": micros,
        "state": "reserved",
        "created_at": _naive(now),
    }
    if _insert_ignoring(connection, spend, values, ["idempotency_key"]) == 0:
        # A replay: the key's create is already counted, unless the API refused it before.
        found = _locked_row(connection, create.idempotency_key)
        assert found is not None
        if found.state != "released":
            return
        connection.execute(spend_hold.delete().where(spend_hold.c.spend_id == found.id))
        connection.execute(
            update(spend)
            .where(spend.c.id == found.id)
            .values({k: v for k, v in values.items() if k != "idempotency_key"} | {"settled_at": None})
        )
    spend_id = connection.execute(
        select(spend.c.id).where(spend.c.idempotency_key == create.idempotency_key)
    ).scalar_one()
    for budget, window in windows:
        key = {
            "account": config.account,
            "budget": budget.name,
            "period": budget.period.value,
            "window_start": _naive(window.start),
        }
        counter = key | {"window_end": _naive(window.resets_at), "timezone": config.timezone.key}
        _insert_ignoring(
            connection, budget_window, counter | {"limit_amount": budget.limit, "spent": 0, "reserved": 0}, list(key)
        )
        held = connection.execute(
            update(budget_window)
            .where(_counter_is(key), budget_window.c.spent + budget_window.c.reserved + micros <= budget.limit)
            .values(reserved=budget_window.c.reserved + micros, limit_amount=budget.limit)
        ).rowcount
        if held == 0:
            full = connection.execute(select(budget_window).where(_counter_is(key))).one()
            raise _Refused(
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
        connection.execute(
            insert(spend_hold).values(
                spend_id=spend_id, budget=budget.name, period=budget.period.value, window_start=_naive(window.start)
            )
        )


def _move(connection: Connection, spend_id: int, *, reserved: int, spent: int) -> None:
    """Shift money between a create's windows' reserved and spent columns (in lock order)."""
    if reserved == 0 and spent == 0:
        return
    account = select(spend.c.account).where(spend.c.id == spend_id).scalar_subquery()
    holds = connection.execute(
        select(spend_hold.c.budget, spend_hold.c.period, spend_hold.c.window_start)
        .where(spend_hold.c.spend_id == spend_id)
        .order_by(spend_hold.c.budget, spend_hold.c.period)
    ).all()
    for hold in holds:
        key_clause = and_(
            budget_window.c.account == account,
            budget_window.c.budget == hold.budget,
            budget_window.c.period == hold.period,
            budget_window.c.window_start == hold.window_start,
        )
        connection.execute(
            update(budget_window)
            .where(key_clause)
            .values(reserved=budget_window.c.reserved + reserved, spent=budget_window.c.spent + spent)
        )


def _counter_is(key: dict[str, Any]) -> Any:
    return and_(*(budget_window.c[name] == value for name, value in key.items()))


def _locked_row(connection: Connection, idempotency_key: str) -> Row[Any] | None:
    query = select(spend).where(spend.c.idempotency_key == idempotency_key)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return connection.execute(query).first()


def _insert_ignoring(connection: Connection, table: Any, values: dict[str, Any], conflict: list[str]) -> int:
    """INSERT, doing nothing when a row with the same ``conflict`` columns exists; the number of rows inserted."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    else:
        raise InputValidationError(f"The MindVideo spend ledger runs on PostgreSQL or SQLite, not {dialect}")
    statement = dialect_insert(table).values(values).on_conflict_do_nothing(index_elements=conflict)
    return int(connection.execute(statement).rowcount)


def _lock_order(budgets: tuple[BudgetLimit, ...]) -> list[BudgetLimit]:
    # Every writer takes counter rows in the same order, so two transactions never wait on each other.
    return sorted(budgets, key=lambda b: (b.name, b.period.value))


def _first_known(amount: float | None, stored: int | None) -> int | None:
    return stored if amount is None else to_micros(amount)


def _naive(instant: dt.datetime) -> dt.datetime:
    # Stored as naive UTC: SQLite keeps no offset, and both databases compare these exactly.
    return instant.astimezone(UTC).replace(tzinfo=None)

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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection, Engine, Row

from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.spend.budgets import BudgetConfig, to_micros
from airflow_provider_mindvideo.spend.engines import reading
from airflow_provider_mindvideo.spend.pricing import learn_price
from airflow_provider_mindvideo.spend.records import (
    BudgetRefusal,
    BudgetWindowExceededError,
    CreateRecord,
    ModelPriceUnknownError,
    PriceUnknownWait,
    SpendRow,
    spend_row,
)
from airflow_provider_mindvideo.spend.reserving import Refused, Waiting, lock_order, locked_row, naive, reserve_one
from airflow_provider_mindvideo.spend.schema import budget_window, ensure_schema, spend, spend_hold
from airflow_provider_mindvideo.spend.windows import UTC, window_at

#: What a reservation comes to: the create's row, a full window's refusal, or the create its model waits for.
Reserved = SpendRow | BudgetRefusal | PriceUnknownWait


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


class Ledger:
    """The books of every create, in one SQL database (see :func:`engine_for_url`).

    :param clock: now, as an aware datetime (tests move it across windows).
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.engine = engine
        self.clock = clock
        ensure_schema(engine)

    def reserve(self, create: CreateRecord, amount: float, config: BudgetConfig, budget: str | None = None) -> SpendRow:
        """Write the create's row and hold its amount in each budget window it counts against, or refuse.

        A replay of a key already reserved or settled changes nothing and returns its row; a key
        released earlier (the API refused it) is held again.

        :param amount: the most the create can cost as far as the caller knows; the ledger holds
            no less than its model's bound (:mod:`~airflow_provider_mindvideo.spend.pricing`).
        :param budget: the operator's named budget, counted besides the account's.
        :raises BudgetWindowExceededError: a window would pass its limit; nothing was written.
        :raises ModelPriceUnknownError: its model goes alone and another create of it is in flight.
        """
        outcome = self.try_reserve(create, amount, config, budget)
        if isinstance(outcome, BudgetRefusal):
            raise BudgetWindowExceededError(outcome)
        if isinstance(outcome, PriceUnknownWait):
            raise ModelPriceUnknownError(outcome, 0.0)
        return outcome

    def try_reserve(
        self, create: CreateRecord, amount: float, config: BudgetConfig, budget: str | None = None
    ) -> Reserved:
        """:meth:`reserve`, returning the refusal or the wait instead of raising it (a batch goes on with what fits)."""
        (outcome,) = self.reserve_many([(create, amount, budget)], config)
        return outcome

    def reserve_many(
        self, creates: Sequence[tuple[CreateRecord, float, str | None]], config: BudgetConfig
    ) -> list[Reserved]:
        """Reserve ``(create, amount, budget)`` in order, in one transaction; each accepted or refused on its own.

        Each sees the totals the ones before it left (one savepoint each: a refused one leaves
        nothing behind), so a group is what the same reservations one by one would be, in one
        commit instead of one per create.
        """
        for _, amount, _ in creates:
            if not (amount >= 0):
                raise InputValidationError(f"amount = {amount!r}: a reservation must be a number >= 0")
        now = self.clock().astimezone(UTC)
        outcomes: list[Reserved | None] = []
        with self.engine.begin() as connection:
            for create, amount, budget in creates:
                budgets = lock_order(config.applicable(budget))
                windows = [(b, window_at(b.period, now, config.timezone)) for b in budgets]
                try:
                    with connection.begin_nested():
                        reserve_one(connection, create, to_micros(amount), config, windows, now)
                    outcomes.append(None)
                except Refused as refused:
                    outcomes.append(refused.refusal)
                except Waiting as waiting:
                    outcomes.append(waiting.wait)
            accepted = [c.idempotency_key for (c, _, _), o in zip(creates, outcomes, strict=True) if o is None]
            rows = {r.idempotency_key: spend_row(r) for r in _rows(connection, accepted)}
        return [rows[c.idempotency_key] if o is None else o for (c, _, _), o in zip(creates, outcomes, strict=True)]

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
            found = locked_row(connection, idempotency_key)
            if found is None:
                return None
            estimated_micros = _first_known(estimated, found.estimated)
            actual_micros = _first_known(actual, found.actual)
            known = [m for m in (estimated_micros, actual_micros) if m is not None]
            if found.state == "released" and not known:
                # Refused by the API, and nothing since says a task exists: still nothing charged.
                return spend_row(found)
            cost = max(known) if known else found.reserved
            # Before the windows, as a reservation takes them: the price row, then the counters.
            learn_price(connection, found.model, estimated_micros, actual_micros)
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
                    settled_at=found.settled_at or naive(self.clock()),
                )
            )
        return self.row(idempotency_key)

    def release(self, idempotency_key: str) -> SpendRow | None:
        """The API refused the create (nothing was charged): give its reservation back.

        A settled create stays settled (it was charged). Returns None for an unknown key.
        """
        with self.engine.begin() as connection:
            found = locked_row(connection, idempotency_key)
            if found is None:
                return None
            if found.state == "reserved":
                _move(connection, found.id, reserved=-found.reserved, spent=0)
                connection.execute(
                    update(spend)
                    .where(spend.c.id == found.id)
                    .values(state="released", cost=0, settled_at=naive(self.clock()))
                )
        return self.row(idempotency_key)

    def row(self, idempotency_key: str) -> SpendRow | None:
        """The create's row, or None."""
        with reading(self.engine) as connection:
            found = connection.execute(select(spend).where(spend.c.idempotency_key == idempotency_key)).first()
        return None if found is None else spend_row(found)


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


def _first_known(amount: float | None, stored: int | None) -> int | None:
    return stored if amount is None else to_micros(amount)


def _rows(connection: Connection, keys: Iterable[str]) -> list[Row[Any]]:
    keys = list(keys)
    found: list[Row[Any]] = []
    for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
        chunk = keys[start : start + 500]
        found.extend(connection.execute(select(spend).where(spend.c.idempotency_key.in_(chunk))).all())
    return found


# The stateful test drives one reservation inside its own transaction.
_Refused, _reserve = Refused, reserve_one

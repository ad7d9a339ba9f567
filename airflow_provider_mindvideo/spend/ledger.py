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
from collections.abc import Callable, Sequence

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.spend.budgets import BudgetConfig, to_micros
from airflow_provider_mindvideo.spend.engines import in_transaction
from airflow_provider_mindvideo.spend.grouping import reserve_group
from airflow_provider_mindvideo.spend.records import (
    BudgetRefusal,
    BudgetWindowExceededError,
    CreateRecord,
    ModelPriceUnknownError,
    PriceUnknownWait,
    Settlement,
    SpendRow,
    spend_row,
)
from airflow_provider_mindvideo.spend.reserving import (
    Refused,
    Waiting,
    lock_order,
    naive,
    record_refusal,
    reserve_one,
)
from airflow_provider_mindvideo.spend.schema import ensure_schema, spend
from airflow_provider_mindvideo.spend.settling import settle_group
from airflow_provider_mindvideo.spend.windows import UTC, window_at

#: What a reservation comes to: the create's row, a full window's refusal, or the create its model waits for.
Reserved = SpendRow | BudgetRefusal | PriceUnknownWait


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


class Ledger:
    """The books of every create, in one SQL database (see :func:`engine_for_url`).

    :param clock: now, as an aware datetime (default :func:`utc_now`; tests move it across windows).
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.engine = engine
        self.clock = clock or utc_now
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

        Each sees the totals the ones before it left, so a group is what the same reservations
        one by one would be, in one commit instead of one per create: decided together when all
        are new and none goes alone (:mod:`~airflow_provider_mindvideo.spend.grouping`), else one
        by one, each under its own savepoint (a refused one leaves only its refused row behind).
        """
        for _, amount, _ in creates:
            if not (amount >= 0):
                raise InputValidationError(f"amount = {amount!r}: a reservation must be a number >= 0")
        now = self.clock().astimezone(UTC)

        def work(connection: Connection) -> list[Reserved]:
            if len(creates) > 1:
                grouped = reserve_group(connection, creates, config, now)
                if grouped is not None:
                    return grouped
            outcomes: list[Reserved] = []
            for create, amount, budget in creates:
                budgets = lock_order(config.applicable(budget))
                windows = [(b, window_at(b.period, now, config.timezone)) for b in budgets]
                try:
                    with connection.begin_nested():
                        outcomes.append(reserve_one(connection, create, to_micros(amount), config, windows, now))
                except Refused as refused:
                    record_refusal(connection, create, config, refused.refusal, now)
                    outcomes.append(refused.refusal)
                except Waiting as waiting:
                    outcomes.append(waiting.wait)
            return outcomes

        return in_transaction(self.engine, work)

    def settle(
        self,
        idempotency_key: str,
        *,
        estimated: float | None = None,
        actual: float | None = None,
        mindvideo_task_id: str | None = None,
        ended: bool = False,
    ) -> SpendRow | None:
        """The create's answer told its cost: it counts ``max(estimated, actual)`` from now on (until an
        ``actual`` is told, no less than its reservation: an estimate may lie low).

        Idempotent, and a later settle may add what a later answer knows (the actual cost once
        the task finished). Neither known: the create stays counted at its reservation. Returns
        None for a key the ledger never reserved (a create a budget refused included).

        :param ended: the task ended: without a readable ``actual`` while its model's price is not
            known, the price is untold for good and budgets refuse the model's creates.
        """
        (row,) = self.settle_many([Settlement(idempotency_key, estimated, actual, mindvideo_task_id, ended=ended)])
        return row

    def release(self, idempotency_key: str) -> SpendRow | None:
        """The API refused the create (nothing was charged): give its reservation back.

        A settled create stays settled (it was charged). Returns None for an unknown key.
        """
        (row,) = self.settle_many([Settlement(idempotency_key, released=True)])
        return row

    def settle_many(self, settlements: Sequence[Settlement]) -> list[SpendRow | None]:
        """:meth:`settle` or :meth:`release` each, in order, in one transaction; each create's row after (or None).

        The counters move once per budget window for the whole group (not once per create), and
        every lock is taken in one order (the creates' rows by key, the models' prices, the
        windows), so two groups settling at once never wait on each other in a circle.
        """
        if not settlements:
            return []
        now = naive(self.clock())
        keys = sorted({s.idempotency_key for s in settlements})
        return in_transaction(self.engine, lambda connection: settle_group(connection, settlements, keys, now))

    def row(self, idempotency_key: str) -> SpendRow | None:
        """The create's row, or None."""
        found = in_transaction(
            self.engine,
            lambda c: c.execute(select(spend).where(spend.c.idempotency_key == idempotency_key)).first(),
            read=True,
        )
        return None if found is None else spend_row(found)


# The stateful test drives one reservation inside its own transaction.
_Refused, _reserve = Refused, reserve_one

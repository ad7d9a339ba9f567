"""What the ledger knows of a model's price, across every DAG and process, read inside a reservation's transaction.

The same price model as the in-process ceiling (:mod:`airflow_provider_mindvideo.spend.ceiling`),
kept in the database so that every worker and triggerer shares it:

- **A model's bound**: the highest of its catalogue price and every cost a settled create of it
  told (``mindvideo_model_price.highest``). A create is reserved at no less than it.
- **Known price**: a settled create of the model told a readable ``actual``
  (``mindvideo_model_price.charged``). Prices are the API's, so they are shared by every account.
- **Goes alone**: while a model's price is not known, at most one create of it per account is
  in flight -- reserved, or settled without an ``actual`` told -- under a budget. Another waits
  (:class:`~airflow_provider_mindvideo.spend.records.PriceUnknownWait`); so a true price above
  its reservation can pass a limit at most once per model. An estimate does not end it: only a
  told ``actual`` is a price (as for ``max_cost``), and an estimate may lie low. The waiter looks
  the lone create's task up itself (:mod:`~airflow_provider_mindvideo.spend.location`), as a
  Submit never sees its own task end.
- **Untold for good**: the lone create's task *ended* without a readable ``cost_actual`` while the
  model's price was not known (``mindvideo_model_price.untold``, with why). No create of it can be
  counted then: a budget refuses them (as ``max_cost`` does) until a settle tells an ``actual``.
- **Never 0 for an unknown price**: a model nothing has priced is held at least at
  :data:`UNKNOWN_PRICE_HOLD`, so a window with nothing left refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection

from airflow_provider_mindvideo.spend.budgets import to_micros
from airflow_provider_mindvideo.spend.ceiling import catalogue_price
from airflow_provider_mindvideo.spend.records import PriceUnknownWait
from airflow_provider_mindvideo.spend.schema import model_price, spend

#: The least a create of a model with no known price is held at (micro-units): one micro-unit, so
#: that it fits only a window with room left. Its true price can pass the limit once (it goes alone).
UNKNOWN_PRICE_HOLD = 1


@dataclass(frozen=True)
class ModelPrice:
    """A model's price as the ledger knows it, in micro-units."""

    bound: int | None
    charged: int | None
    #: Why the price is untold for good (its lone create's task ended without one), if it is.
    untold: str | None = None

    @property
    def known(self) -> bool:
        return self.charged is not None


def price_of(connection: Connection, model: str) -> ModelPrice:
    """The model's bound (catalogue and every settled cost) and the highest actual charged, from one row."""
    found = connection.execute(
        select(model_price.c.highest, model_price.c.charged, model_price.c.untold).where(model_price.c.model == model)
    ).first()
    catalogue = catalogue_price(model)
    told = [None if found is None else found.highest, None if catalogue is None else to_micros(catalogue)]
    known = [m for m in told if m is not None]
    if found is None:
        return ModelPrice(max(known) if known else None, None)
    return ModelPrice(max(known) if known else None, found.charged, None if found.charged is not None else found.untold)


def holding_amount(asked: int, price: ModelPrice) -> int:
    """What a create is reserved at: the caller's bound, raised to the ledger's; never 0 for an unknown price."""
    amount = max(asked, price.bound or 0)
    if price.bound is None and not price.known:
        amount = max(amount, UNKNOWN_PRICE_HOLD)
    return amount


def lock_price(connection: Connection, model: str) -> None:
    """Serialise the reservations of a model whose price is unknown (PostgreSQL; SQLite writers run alone)."""
    if connection.dialect.name != "postgresql":
        return
    from sqlalchemy.dialects.postgresql import insert

    connection.execute(insert(model_price).values(model=model).on_conflict_do_nothing(index_elements=["model"]))
    connection.execute(select(model_price.c.model).where(model_price.c.model == model).with_for_update())


#: A create settled without an ``actual`` told: while its model's price is not known, it is still in flight.
SETTLED_WITHOUT_ACTUAL = and_(spend.c.state == "settled", spend.c.actual.is_(None))


def create_in_flight(connection: Connection, account: str, model: str, key: str) -> PriceUnknownWait | None:
    """Another create of ``model`` through ``account`` that has not told its price yet, if any."""
    found = connection.execute(
        select(spend)
        .where(
            spend.c.account == account,
            spend.c.model == model,
            spend.c.idempotency_key != key,
            or_(spend.c.state == "reserved", SETTLED_WITHOUT_ACTUAL),
        )
        .limit(1)
    ).first()
    if found is None:
        return None
    return PriceUnknownWait(
        account=account,
        model=model,
        holder=found.idempotency_key,
        holder_task=found.mindvideo_task_id,
        dag_id=found.dag_id,
        task_id=found.task_id,
        map_index=found.map_index,
    )


def learn_price(connection: Connection, model: str, estimated: int | None, actual: int | None) -> None:
    """A settle told costs of a create of ``model``: raise its bound, and its charged price on an ``actual``."""
    highest = max((m for m in (estimated, actual) if m is not None), default=None)
    if highest is None:
        return
    found = connection.execute(
        select(model_price.c.highest, model_price.c.charged).where(model_price.c.model == model)
    ).first()
    if found is None:
        _insert_missing(connection, model)
    elif _at_least(found.highest, highest) and (actual is None or _at_least(found.charged, actual)):
        return  # it told nothing new (a price is rarely raised: most settles stop here)
    _raise(connection, model_price.c.highest, model, highest)
    if actual is not None:
        _raise(connection, model_price.c.charged, model, actual)


def mark_untold(connection: Connection, model: str, why: str) -> None:
    """A create of ``model`` ended without a readable ``actual`` while its price was not known: untold for good.

    Kept when a price or an earlier reason is there (the first reason stands; a known price wins).
    """
    _insert_missing(connection, model)
    connection.execute(
        update(model_price)
        .where(model_price.c.model == model, model_price.c.charged.is_(None), model_price.c.untold.is_(None))
        .values(untold=why[:500])
    )


def _at_least(stored: int | None, micros: int) -> bool:
    return stored is not None and stored >= micros


def _insert_missing(connection: Connection, model: str) -> None:
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    connection.execute(dialect_insert(model_price).values(model=model).on_conflict_do_nothing())


def _raise(connection: Connection, column: Any, model: str, micros: int) -> None:
    # Conditional, so concurrent settles keep the highest (PostgreSQL re-checks it under the row lock).
    connection.execute(
        update(model_price)
        .where(model_price.c.model == model, or_(column.is_(None), column < micros))
        .values({column.name: micros})
    )

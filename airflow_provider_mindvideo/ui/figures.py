"""The MindVideo page's figures, read from the ledger and limited to the DAGs the viewer may read.

The ledger core (:mod:`airflow_provider_mindvideo.spend.reading`) reads across every DAG; a page
must never count a DAG its viewer may not read, so these queries take the readable DAGs and filter
in SQL. Sums are taken over whole micro-units (exact) and turned into the cost unit once, as the
core does: what the page shows is the ledger's figure to the micro-unit, rounded to the cent only
on screen. A create counts for its ``cost`` column: settled, what it cost; reserved, what it holds;
released (the API refused it: nothing charged), 0.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import String, and_, case, cast, func, or_, select
from sqlalchemy.engine import Engine

from airflow_provider_mindvideo.spend.budgets import from_micros
from airflow_provider_mindvideo.spend.engines import reading
from airflow_provider_mindvideo.spend.records import spend_row
from airflow_provider_mindvideo.spend.schema import spend
from airflow_provider_mindvideo.spend.windows import UTC

By = Literal["dag", "model"]


@dataclass(frozen=True)
class Scope:
    """Which ledger rows a page may count: readable DAGs (and DAG-less rows for who reads every DAG), filters."""

    dags: frozenset[str]
    include_dagless: bool = False
    dag: str | None = None
    model: str | None = None
    since: dt.datetime | None = None

    def where(self) -> Any:
        allowed = spend.c.dag_id.in_(sorted(self.dags)) if self.dags else spend.c.id < 0
        if self.include_dagless:
            allowed = or_(allowed, spend.c.dag_id.is_(None))
        conditions = [allowed]
        if self.dag is not None:
            conditions.append(spend.c.dag_id == self.dag)
        if self.model is not None:
            conditions.append(spend.c.model == self.model)
        if self.since is not None:
            conditions.append(spend.c.created_at >= self.since.astimezone(UTC).replace(tzinfo=None))
        return and_(*conditions)


def _key(by: By) -> Any:
    return func.coalesce(spend.c.dag_id, "") if by == "dag" else spend.c.model


_DAY = func.substr(cast(spend.c.created_at, String), 1, 10)
_SETTLED = func.sum(case((spend.c.state == "settled", spend.c.cost), else_=0))
_HELD = func.sum(case((spend.c.state == "reserved", spend.c.cost), else_=0))
_FAILED = func.sum(case((spend.c.state == "released", 1), else_=0))


def daily_spend(engine: Engine, scope: Scope, by: By) -> list[dict[str, Any]]:
    """Per UTC day and DAG (or model): what counts (settled + held), in the cost unit."""
    key = _key(by)
    query = (
        select(_DAY.label("day"), key.label("key"), func.sum(spend.c.cost).label("counted"))
        .where(scope.where())
        .group_by(_DAY, key)
        .order_by(_DAY, key)
    )
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [{"day": r.day, "key": str(r.key), "counted": from_micros(int(r.counted))} for r in rows]


def totals(engine: Engine, scope: Scope, by: By, limit: int = 10) -> list[dict[str, Any]]:
    """The DAGs (or models) that counted most: creates, settled, held, failed (released) creates."""
    key = _key(by)
    counted = func.sum(spend.c.cost)
    query = (
        select(
            key.label("key"),
            func.count().label("creates"),
            _SETTLED.label("settled"),
            _HELD.label("held"),
            _FAILED.label("failed"),
            counted.label("counted"),
        )
        .where(scope.where())
        .group_by(key)
        .order_by(counted.desc(), key)
        .limit(limit)
    )
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return [
        {
            "key": str(r.key),
            "creates": int(r.creates),
            "settled": from_micros(int(r.settled)),
            "held": from_micros(int(r.held)),
            "failed": int(r.failed),
            "counted": from_micros(int(r.counted)),
        }
        for r in rows
    ]


def overall(engine: Engine, scope: Scope) -> dict[str, Any]:
    """The whole scope in one line: creates, settled, held, failed (released) creates."""
    query = select(
        func.count().label("creates"), _SETTLED.label("settled"), _HELD.label("held"), _FAILED.label("failed")
    )
    with reading(engine) as connection:
        r = connection.execute(query.where(scope.where())).one()
    settled, held = from_micros(int(r.settled or 0)), from_micros(int(r.held or 0))
    return {"creates": int(r.creates), "settled": settled, "held": held, "failed": int(r.failed or 0)}


def recent(engine: Engine, scope: Scope, *, state: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest creates first (``state='released'``: the failed ones), as JSON-safe dicts."""
    query = select(spend).where(scope.where())
    if state is not None:
        query = query.where(spend.c.state == state)
    query = query.order_by(spend.c.created_at.desc(), spend.c.id.desc()).limit(limit)
    with reading(engine) as connection:
        rows = [spend_row(r) for r in connection.execute(query).all()]
    return [_jsonable(asdict(row)) for row in rows]


def choices(engine: Engine, scope: Scope) -> dict[str, list[str]]:
    """The DAGs and models the filters offer: those with rows in scope."""
    with reading(engine) as connection:
        dags = connection.execute(select(spend.c.dag_id).where(scope.where()).distinct()).scalars().all()
        models = connection.execute(select(spend.c.model).where(scope.where()).distinct()).scalars().all()
    return {"dags": sorted(d for d in dags if d), "models": sorted(models)}


def ledger_dags(engine: Engine) -> list[str]:
    """Every DAG the ledger has rows of (the viewer's auth manager then says which they may read)."""
    with reading(engine) as connection:
        found = connection.execute(select(spend.c.dag_id).distinct()).scalars().all()
    return [dag for dag in found if dag]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    # The idempotency key says nothing a viewer needs, and keys derive from inputs: leave it out.
    row.pop("idempotency_key", None)
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}

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
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import String, and_, case, cast, func, or_, select
from sqlalchemy.engine import Engine

from airflow_provider_mindvideo.spend.budgets import from_micros
from airflow_provider_mindvideo.spend.engines import reading
from airflow_provider_mindvideo.spend.records import spend_row
from airflow_provider_mindvideo.spend.schema import spend
from airflow_provider_mindvideo.spend.windows import UTC
from airflow_provider_mindvideo.ui.freshness import Kept

By = Literal["dag", "model"]


@dataclass(frozen=True)
class Scope:
    """Which ledger rows a page may count: readable DAGs (and DAG-less rows for who reads every DAG), filters."""

    dags: frozenset[str]
    include_dagless: bool = False
    dag: str | None = None
    model: str | None = None
    since: dt.datetime | None = None

    def unfiltered(self) -> Scope:
        """The same rows before the DAG and model filters: what the page's grouped scan reads."""
        return Scope(self.dags, self.include_dagless, since=self.since)

    def where(self) -> Any:
        sides = self.sides()
        return or_(*sides) if sides else spend.c.id < 0

    def sides(self) -> list[Any]:
        """:meth:`where` as its two sides: the readable DAGs' rows, and (who reads every DAG) rows without a DAG.

        A query for the newest rows asks each side apart: each finds them in the index's order,
        where one query with the ``OR`` sorts every row in scope.
        """
        filters = []
        if self.dag is not None:
            filters.append(spend.c.dag_id == self.dag)
        if self.model is not None:
            filters.append(spend.c.model == self.model)
        if self.since is not None:
            filters.append(spend.c.created_at >= self.since.astimezone(UTC).replace(tzinfo=None))
        sides = [and_(spend.c.dag_id.in_(sorted(self.dags)), *filters)] if self.dags else []
        if self.include_dagless:
            sides.append(and_(spend.c.dag_id.is_(None), *filters))
        return sides


_DAY = func.substr(cast(spend.c.created_at, String), 1, 10)
_SETTLED = func.sum(case((spend.c.state == "settled", spend.c.cost), else_=0))
_HELD = func.sum(case((spend.c.state == "reserved", spend.c.cost), else_=0))
_FAILED = func.sum(case((spend.c.state == "released", 1), else_=0))
_REFUSED = func.sum(case((spend.c.state == "refused", 1), else_=0))
_SENT = func.sum(case((spend.c.state == "refused", 0), else_=1))


@dataclass
class _Sums:
    creates: int = 0
    settled: int = 0  # micro-units
    held: int = 0
    failed: int = 0

    def add(self, other: _Sums) -> None:
        self.creates += other.creates
        self.settled += other.settled
        self.held += other.held
        self.failed += other.failed

    def as_json(self) -> dict[str, Any]:
        return {
            "creates": self.creates,
            "settled": from_micros(self.settled),
            "held": from_micros(self.held),
            "failed": self.failed,
            "counted": from_micros(self.settled + self.held),
        }


def summary(engine: Engine, scope: Scope, by: By, fingerprint: Hashable, top: int = 10) -> dict[str, Any]:
    """The page's totals from one grouped scan of the ledger: per (UTC day, DAG, model), then added up here.

    ``overall``, ``daily`` (counted per day and DAG or model), ``top_dags``, ``top_models`` and the
    ``choices`` the filters offer (every DAG and model in scope, whatever is filtered). The groups
    are kept while the ledger's fingerprint stays the same (:mod:`.freshness`): a filter on a DAG or
    model, or the chart by model instead of DAG, reads no row again. Refused creates (a budget said
    no: nothing sent) are no creates here: the page lists them apart (:mod:`.refusals`).
    ``fingerprint``: the ledger's (:func:`.freshness.ledger_fingerprint`), taken before.
    """
    key = (_name(engine), scope, by, top)
    return _summaries_kept.get(key, fingerprint, lambda: _summary(engine, scope, by, fingerprint, top))


def _summary(engine: Engine, scope: Scope, by: By, fingerprint: Hashable, top: int) -> dict[str, Any]:
    unfiltered = scope.unfiltered()
    groups = _groups_kept.get((_name(engine), unfiltered), fingerprint, lambda: _groups(engine, unfiltered))
    overall, daily = _Sums(), dict[tuple[str, str], int]()
    per: dict[str, dict[str, _Sums]] = {"dag": {}, "model": {}}
    choices: dict[str, set[str]] = {"dags": set(), "models": set()}
    refused = 0
    for day, dag_id, model, creates, settled, held, failed, refused_here in groups:
        choices["dags"].add(dag_id)
        choices["models"].add(model)
        if (scope.dag is not None and dag_id != scope.dag) or (scope.model is not None and model != scope.model):
            continue
        refused += refused_here
        sums = _Sums(creates, settled, held, failed)
        overall.add(sums)
        per["dag"].setdefault(dag_id, _Sums()).add(sums)
        per["model"].setdefault(model, _Sums()).add(sums)
        slot = (day, dag_id if by == "dag" else model)
        daily[slot] = daily.get(slot, 0) + settled + held

    def ranked(found: dict[str, _Sums]) -> list[dict[str, Any]]:
        order = sorted(found.items(), key=lambda kv: (-(kv[1].settled + kv[1].held), kv[0]))
        return [{"key": key, **sums.as_json()} for key, sums in order[:top]]

    return {
        "overall": {k: v for k, v in overall.as_json().items() if k != "counted"},
        "daily": [{"day": day, "key": key, "counted": from_micros(m)} for (day, key), m in sorted(daily.items())],
        "top_dags": ranked(per["dag"]),
        "top_models": ranked(per["model"]),
        "choices": {"dags": sorted(d for d in choices["dags"] if d), "models": sorted(choices["models"])},
        # How many ledger rows in scope a budget refused: none, and the page need not look for them.
        "refused_in_ledger": refused,
    }


def recent(
    engine: Engine, scope: Scope, fingerprint: Hashable, *, state: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest creates first (``state='released'``: the failed ones), as JSON-safe dicts."""
    key = (_name(engine), scope, state, limit)
    return _recent_kept.get(key, fingerprint, lambda: _recent(engine, scope, state, limit))


def _recent(engine: Engine, scope: Scope, state: str | None, limit: int) -> list[dict[str, Any]]:
    # The recent creates are what was sent: a refusal was not (the page lists those apart).
    sent = spend.c.state == state if state is not None else spend.c.state != "refused"
    newest = (spend.c.created_at.desc(), spend.c.id.desc())
    found: list[Any] = []
    with reading(engine) as connection:
        for side in scope.sides():
            found += connection.execute(select(spend).where(side, sent).order_by(*newest).limit(limit)).all()
    found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    return [_jsonable(asdict(spend_row(r))) for r in found[:limit]]


_groups_kept = Kept(size=16)
_summaries_kept = Kept(size=64)
_recent_kept = Kept(size=64)


def _name(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _groups(engine: Engine, scope: Scope) -> list[tuple[str, str, str, int, int, int, int, int]]:
    """(day, DAG or '', model, creates, settled, held, failed, refused) per group, micro-units: the one scan.

    Refused rows are no creates (``creates`` leaves them out); their count tells the page whether
    there are any to list at all.
    """
    dag = func.coalesce(spend.c.dag_id, "")
    query = (
        select(_DAY, dag, spend.c.model, _SENT, _SETTLED, _HELD, _FAILED, _REFUSED)
        .where(scope.where())
        .group_by(_DAY, dag, spend.c.model)
    )
    with reading(engine) as connection:
        return [
            (d, g, m, int(n), int(s), int(h), int(f), int(r)) for d, g, m, n, s, h, f, r in connection.execute(query)
        ]


def ledger_dags(engine: Engine) -> list[str]:
    """Every DAG the ledger has rows of (the viewer's auth manager then says which they may read)."""
    with reading(engine) as connection:
        found = connection.execute(select(spend.c.dag_id).distinct()).scalars().all()
    return [dag for dag in found if dag]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    # The idempotency key says nothing a viewer needs, and keys derive from inputs: leave it out.
    row.pop("idempotency_key", None)
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}

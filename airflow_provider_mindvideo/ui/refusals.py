"""Creates a budget refused (``over_budget``): nothing charged, nothing sent; shown on the MindVideo page.

Two sources, one per task instance:

- the ledger, where a refused create is a row with ``state = 'refused'`` (cost 0, ``reserved``:
  what it would have held);
- a batch's manifest, whose rows say ``over_budget``; the batch's ``mindvideo_batch`` XCom
  counts them (``counts.over_budget``) and names the manifest.

A batch task instance whose refusals the ledger has is counted from the ledger alone: the two
never add up the same refusal twice. The count comes from the ledger and the XCom summaries; only
the manifests of the newest refusals listed are read (parsed once per version, :mod:`.manifests`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from airflow_provider_mindvideo.batch.plan import OVER_BUDGET
from airflow_provider_mindvideo.spend.budgets import from_micros
from airflow_provider_mindvideo.spend.engines import reading
from airflow_provider_mindvideo.spend.schema import REFUSED, spend
from airflow_provider_mindvideo.ui import batch_items, manifests, records
from airflow_provider_mindvideo.ui.figures import Scope
from airflow_provider_mindvideo.ui.freshness import Kept

log = logging.getLogger(__name__)

_Instance = tuple[str, str, str, int]  # dag_id, run_id, task_id, map_index


@dataclass(frozen=True)
class _BatchRefusals:
    instance: _Instance
    count: int
    manifest: str | None
    at: dt.datetime


def refused(
    engine: Engine, scope: Scope, fingerprint: Hashable, *, in_ledger: bool = True, limit: int = 20
) -> dict[str, Any]:
    """``{"count": n, "items": [the newest refusals, newest first]}`` in the scope.

    A batch summary does not count per model: with a model filter its manifest's rows are counted.
    ``fingerprint``: the ledger's (:func:`.freshness.ledger_fingerprint`), taken before.
    ``in_ledger``: whether the ledger has refused rows in scope at all (the page's grouped scan knows).
    """
    key = (engine.url.render_as_string(hide_password=True), scope, limit)
    counts, rows = (
        _ledger_kept.get(key, fingerprint, lambda: _ledger(engine, scope.where(), limit)) if in_ledger else ({}, [])
    )
    model = scope.model
    dags = frozenset([scope.dag]) if scope.dag is not None else scope.dags
    since = scope.since or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    batches = [b for b in _batch_summaries(dags, since) if b.instance not in counts]
    batches.sort(key=lambda b: b.at, reverse=True)
    if model is None:
        count = sum(counts.values()) + sum(b.count for b in batches)
        items = rows + _manifest_items(batches, limit)
    else:
        found = [item for item in _manifest_items(batches, None) if item["model"] == model]
        count = sum(counts.values()) + len(found)
        items = rows + found
    items.sort(key=lambda item: item["created_at"], reverse=True)
    return {"count": count, "items": items[:limit]}


_ledger_kept = Kept(size=64)


def _ledger(engine: Engine, where: Any, limit: int) -> tuple[dict[_Instance, int], list[dict[str, Any]]]:
    refused_rows = where & (spend.c.state == REFUSED)
    per_instance = (
        select(spend.c.dag_id, spend.c.run_id, spend.c.task_id, spend.c.map_index, func.count())
        .where(refused_rows)
        .group_by(spend.c.dag_id, spend.c.run_id, spend.c.task_id, spend.c.map_index)
    )
    newest = select(spend).where(refused_rows).order_by(spend.c.created_at.desc(), spend.c.id.desc()).limit(limit)
    with reading(engine) as connection:
        grouped = connection.execute(per_instance).all()
        counts = {(d or "", r or "", t or "", -1 if m is None else m): int(n) for d, r, t, m, n in grouped}
        found = connection.execute(newest).all()
    return counts, [
        {
            "created_at": row.created_at.isoformat(),
            "dag_id": row.dag_id,
            "run_id": row.run_id,
            "task_id": row.task_id,
            "map_index": -1 if row.map_index is None else row.map_index,
            "model": row.model,
            "would_hold": from_micros(row.reserved),
            "budgets": row.budgets,
            "error": None,
            "source": "ledger",
        }
        for row in found
    ]


def _batch_summaries(dags: frozenset[str], since: dt.datetime) -> list[_BatchRefusals]:
    """The batch summaries (XCom ``mindvideo_batch``) of these DAGs since then that count refusals."""
    found = []
    for summary in records.batch_summaries(dags, since):
        value = summary.value
        counts = value.get("counts") if isinstance(value, Mapping) else None
        count = counts.get(OVER_BUDGET) if isinstance(counts, Mapping) else None
        if isinstance(count, int) and count > 0:
            named = value.get("manifest")
            instance = (summary.dag_id, summary.run_id, summary.task_id, summary.map_index)
            manifest = manifests.named_manifest(named, *instance) if isinstance(named, str) else None
            found.append(
                _BatchRefusals(instance, count, manifest if isinstance(manifest, str) else None, summary.timestamp)
            )
    return found


def _manifest_items(batches: list[_BatchRefusals], limit: int | None) -> list[dict[str, Any]]:
    """The refused rows of these batches' manifests, in order, until ``limit`` are found (None: all)."""
    items: list[dict[str, Any]] = []
    for batch in batches:
        if limit is not None and len(items) >= limit:
            break
        try:
            rows = manifests.manifest_rows(batch.manifest) if batch.manifest else None
        except Exception as exc:  # a corrupt or unreadable manifest: its count still shows
            log.warning("MindVideo page: could not read the manifest %s (%s)", batch.manifest, exc)
            rows = None
        dag_id, run_id, task_id, map_index = batch.instance
        for row in rows or ():
            if row.status != OVER_BUDGET:
                continue
            items.append(
                {
                    # The manifest's rows carry no time: the batch's summary's is theirs.
                    "created_at": batch.at.astimezone(dt.UTC).replace(tzinfo=None).isoformat(),
                    "dag_id": dag_id,
                    "run_id": run_id,
                    "task_id": task_id,
                    "map_index": map_index,
                    "model": row.model,
                    "would_hold": None,
                    "budgets": None,
                    "error": row.error,
                    "source": "manifest",
                    "position": batch_items.whole_number(row.position),
                }
            )
    return items

"""What the run's task instances recorded in XCom about their MindVideo work, read from Airflow's metadata DB.

The API server (where the plugin runs) reads the metadata database as Airflow's own pages do.
Three records matter to the gallery: ``mindvideo_task`` (Submit/Generate: the remote task's
summary with its output URLs), ``mindvideo_batch`` (the batch summary naming its manifest) and
``mindvideo_review_manifest`` (a review's decisions).
Where there is no metadata database (a test of the app alone) there are no records.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

#: The XCom keys the operators write (operators.generate / outcomes, operators.batch).
TASK_KEY = "mindvideo_task"
BATCH_KEY = "mindvideo_batch"
#: The review's manifest (operators.review_result): one row per decision, rounds so far included.
REVIEW_KEY = "mindvideo_review_manifest"


def run_records(dag_id: str, run_id: str) -> dict[tuple[str, int, str], Any]:
    """``{(task_id, map_index, key): value}`` of the run's MindVideo XComs."""
    try:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select
    except ImportError:  # pragma: no cover - Airflow always has them on the API server
        return {}
    query = select(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key.in_([TASK_KEY, BATCH_KEY, REVIEW_KEY])
    )
    try:
        with create_session() as session:
            rows = session.execute(query).all()
    except Exception as exc:  # no metadata DB, or not migrated: the ledger and manifests still show
        log.warning("MindVideo gallery: could not read the run's XComs (%s); showing the ledger's rows", exc)
        return {}
    found: dict[tuple[str, int, str], Any] = {}
    for row in rows:
        try:
            value = XComModel.deserialize_value(row)
        except Exception:
            continue
        found[(row.task_id, row.map_index, row.key)] = value
    return found


class BatchSummary(NamedTuple):
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    value: Any
    timestamp: dt.datetime


def batch_summaries(dag_ids: Iterable[str], since: dt.datetime) -> list[BatchSummary]:
    """The ``mindvideo_batch`` summaries pushed since then by these DAGs' batch task instances."""
    try:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select
    except ImportError:  # pragma: no cover - Airflow always has them on the API server
        return []
    wanted = sorted(dag_ids)
    if not wanted:
        return []
    query = select(
        XComModel.dag_id, XComModel.run_id, XComModel.task_id, XComModel.map_index, XComModel.value, XComModel.timestamp
    ).where(XComModel.key == BATCH_KEY, XComModel.dag_id.in_(wanted), XComModel.timestamp >= since)
    try:
        with create_session() as session:
            rows = session.execute(query).all()
    except Exception as exc:  # no metadata DB: the ledger's figures still show
        log.warning("MindVideo page: could not read the batch summaries (%s)", exc)
        return []
    found = []
    for row in rows:
        try:
            value = XComModel.deserialize_value(row)
        except Exception:
            continue
        stamp = row.timestamp if row.timestamp.tzinfo else row.timestamp.replace(tzinfo=dt.UTC)
        found.append(BatchSummary(row.dag_id, row.run_id, row.task_id, row.map_index, value, stamp))
    return found


def rendered_prompts(dag_id: str, run_id: str) -> dict[tuple[str, int], str]:
    """``{(task_id, map_index): prompt}`` from the run's rendered template fields (a Submit/Generate's ``input``).

    The task records hold no input (never stored in XCom); Airflow keeps each task instance's
    rendered fields for its "Rendered templates" view, which the same readers of the DAG may see.
    """
    try:
        from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rendered
        from airflow.utils.session import create_session
        from sqlalchemy import select
    except ImportError:  # pragma: no cover - Airflow always has them on the API server
        return {}
    query = select(Rendered.task_id, Rendered.map_index, Rendered.rendered_fields).where(
        Rendered.dag_id == dag_id, Rendered.run_id == run_id
    )
    try:
        with create_session() as session:
            rows = session.execute(query).all()
    except Exception as exc:
        log.warning("MindVideo gallery: could not read the run's rendered fields (%s)", exc)
        return {}
    found: dict[tuple[str, int], str] = {}
    for task_id, map_index, fields in rows:
        value = fields.get("input") if isinstance(fields, dict) else None
        if isinstance(value, str) and value.startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                continue
        prompt = value.get("prompt") if isinstance(value, dict) else None
        if isinstance(prompt, str):
            found[(task_id, map_index)] = prompt
    return found

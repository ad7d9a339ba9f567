"""What the run's task instances recorded in XCom about their MindVideo work, read from Airflow's metadata DB.

The API server (where the plugin runs) reads the metadata database as Airflow's own pages do.
Two records matter to the gallery: ``mindvideo_task`` (Submit/Generate: the remote task's
summary with its output URLs) and ``mindvideo_batch`` (the batch summary naming its manifest).
Where there is no metadata database (a test of the app alone) there are no records.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: The XCom keys the operators write (operators.generate / outcomes, operators.batch).
TASK_KEY = "mindvideo_task"
BATCH_KEY = "mindvideo_batch"


def run_records(dag_id: str, run_id: str) -> dict[tuple[str, int, str], Any]:
    """``{(task_id, map_index, key): value}`` of the run's MindVideo XComs."""
    try:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select
    except ImportError:  # pragma: no cover - Airflow always has them on the API server
        return {}
    query = select(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key.in_([TASK_KEY, BATCH_KEY])
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

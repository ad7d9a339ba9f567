"""Reconciling reservations left open: creates whose process was killed between the reservation and the answer.

Such a create stays counted at its reservation (never under-counted). Its own task settles it when
it runs again (a retry or a clear replays the same idempotency key: the API answers with the
original task, free). Reconcile settles the others it can: it looks the task up
(``GET /api/v1/tasks/{id}``) when its id is known -- written on the row, or given by whoever
found it (the MindVideo dashboard, the task's log) -- and settles it at what the task tells
(``max(estimated, actual)``, the reservation when neither is readable). The API has no lookup by
idempotency key, and the ledger stores no create's payload (a replay needs it), so a create
whose task id nobody knows stays reserved, and reconcile says so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import and_, or_, select

from airflow_provider_mindvideo.client.errors import MindVideoError
from airflow_provider_mindvideo.client.models import MindVideoTask
from airflow_provider_mindvideo.spend.engines import in_transaction
from airflow_provider_mindvideo.spend.ledger import Ledger
from airflow_provider_mindvideo.spend.pricing import SETTLED_WITHOUT_ACTUAL
from airflow_provider_mindvideo.spend.records import Settlement, SpendRow, spend_row
from airflow_provider_mindvideo.spend.reserving import naive
from airflow_provider_mindvideo.spend.schema import model_price, spend

#: A reservation younger than this is probably a create whose answer is on its way.
DEFAULT_AGE = dt.timedelta(minutes=30)

#: ``(account, task_id)`` -> the task, as the API tells it now.
TaskLookup = Callable[[str, str], MindVideoTask]


@dataclass(frozen=True)
class Reconciled:
    """What reconcile did with one open reservation: ``settled`` it, or ``left reserved`` (``why`` says)."""

    row: SpendRow
    outcome: str
    why: str


def open_reservations(ledger: Ledger, older_than: dt.timedelta = DEFAULT_AGE) -> list[SpendRow]:
    """Creates reserved before ``now - older_than`` and not settled nor released since, the oldest first.

    A create settled without an ``actual`` (a Submit's answer tells at most an estimate) is open too
    while its model's price is neither known nor untold: it keeps the model's other creates waiting,
    and Submit never sees its task end. The next create of the model looks it up itself; reconcile
    settles it when none comes (once its model is settled either way, it is not read again).
    """
    before = naive(ledger.clock() - older_than)
    decided = select(model_price.c.model).where(
        or_(model_price.c.charged.is_not(None), model_price.c.untold.is_not(None))
    )
    without_actual = and_(SETTLED_WITHOUT_ACTUAL, spend.c.model.not_in(decided))
    query = (
        select(spend)
        .where(or_(spend.c.state == "reserved", without_actual), spend.c.created_at < before)
        .order_by(spend.c.created_at, spend.c.id)
    )
    rows = in_transaction(ledger.engine, lambda connection: connection.execute(query).all(), read=True)
    return [spend_row(row) for row in rows]


def reconcile(
    ledger: Ledger,
    lookup: TaskLookup,
    *,
    older_than: dt.timedelta = DEFAULT_AGE,
    task_ids: Mapping[str, str] | None = None,
) -> list[Reconciled]:
    """Settle every open reservation older than ``older_than`` whose task is known; say why of the others.

    :param lookup: fetches a task through the row's MindVideo connection (``account``).
    :param task_ids: idempotency key -> MindVideo task id, for creates whose answer was lost.
    """
    given = dict(task_ids or {})
    done = []
    for row in open_reservations(ledger, older_than):
        task_id = row.mindvideo_task_id or given.get(row.idempotency_key)
        if task_id is None:
            why = (
                "its answer never came, so the ledger knows no task id, and it stores no payload to replay the key: "
                "it stays counted at its reservation until its Airflow task runs again (a retry or a clear replays "
                "the key, free, and settles it), or give its task id (--task KEY=TASK_ID)"
            )
            done.append(Reconciled(row, "left reserved", why))
            continue
        try:
            task = lookup(row.account, task_id)
        except MindVideoError as error:
            done.append(Reconciled(row, "left reserved", f"task {task_id} could not be read: {error}"))
            continue
        (settled,) = ledger.settle_many([Settlement.told_by(row.idempotency_key, task, task_id)])
        assert settled is not None  # an open reservation's row
        told = (
            "" if settled.estimated is not None or settled.actual is not None else " (no cost told: at its reservation)"
        )
        done.append(
            Reconciled(settled, "settled", f"task {task_id} is {task.reported_status or task.status.value}{told}")
        )
    return done

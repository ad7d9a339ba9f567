"""Settling a group of creates inside the caller's transaction: their rows, their models' prices, their windows.

Called by :meth:`Ledger.settle_many` (and so by ``settle`` and ``release``, a group of one). A
batch's answers arrive by the hundred; each create's row is written, but the counters of the
windows they hold money in move once per window for the whole group.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.engine import Connection, Row

from airflow_provider_mindvideo.spend.budgets import to_micros
from airflow_provider_mindvideo.spend.pricing import learn_price, mark_untold
from airflow_provider_mindvideo.spend.records import Settlement, SpendRow, spend_row
from airflow_provider_mindvideo.spend.schema import budget_window, spend, spend_hold

#: SQLite's bound-parameter limit allows no more in one IN (...).
CHUNK = 500


def settle_group(
    connection: Connection, settlements: Sequence[Settlement], keys: list[str], now: dt.datetime
) -> list[SpendRow | None]:
    """Apply ``settlements`` in order; ``keys`` (sorted, distinct) are theirs. Each create's row after, or None."""
    rows = {r.idempotency_key: dict(r._mapping) for r in locked_rows(connection, keys)}
    before = {key: dict(row) for key, row in rows.items()}
    moves: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # spend id -> reserved, spent
    told: dict[str, list[int | None]] = {}  # model -> highest cost told, highest actual
    untold: dict[str, str] = {}  # model -> why: a task of it ended without a readable actual
    for settlement in settlements:
        row = rows.get(settlement.idempotency_key)
        if row is None or row["state"] == "refused":
            continue  # never reserved: nothing was sent under this key
        if settlement.released:
            _release(row, moves, now)
            continue
        _settle(row, settlement, moves, told, now)
        if settlement.ended and row["actual"] is None and row["state"] == "settled":
            task = row["mindvideo_task_id"] or "?"
            untold.setdefault(row["model"], f"its task {task} ended without a readable cost_actual")
    for model in sorted(told.keys() | untold.keys()):  # before the windows, as a reservation takes them
        if model in told:
            learn_price(connection, model, told[model][0], told[model][1])
        if model in untold:  # a price told by this group (or before) wins: mark_untold leaves it
            mark_untold(connection, model, untold[model])
    _move_counters(connection, rows, moves)
    changed = [row for key, row in rows.items() if row != before[key]]
    if changed:
        connection.execute(
            update(spend)
            .where(spend.c.id == bindparam("row_id"))
            .values({name: bindparam(f"new_{name}") for name in _WRITTEN}),
            [{"row_id": row["id"]} | {f"new_{name}": row[name] for name in _WRITTEN} for row in changed],
        )
    return [_shown(rows.get(s.idempotency_key)) for s in settlements]


_WRITTEN = ("state", "estimated", "actual", "cost", "mindvideo_task_id", "settled_at")


def _settle(
    row: dict[str, Any],
    settlement: Settlement,
    moves: dict[int, list[int]],
    told: dict[str, list[int | None]],
    now: dt.datetime,
) -> None:
    estimated = _first_known(settlement.estimated, row["estimated"])
    actual = _first_known(settlement.actual, row["actual"])
    known = [m for m in (estimated, actual) if m is not None]
    if row["state"] == "released" and not known:
        return  # refused by the API, and nothing since says a task exists: still nothing charged
    # Only a told actual is a cost: until one is, an estimate may raise the count, never lower it
    # below the reservation (a Submit of a priced model, whose answers lie low, never tells one).
    cost = max(known) if actual is not None else max(row["reserved"], estimated or 0)
    if known:
        highest, charged = told.setdefault(row["model"], [None, None])
        told[row["model"]] = [max(highest or 0, *known), charged if actual is None else max(charged or 0, actual)]
    was_held = row["reserved"] if row["state"] == "reserved" else 0
    was_spent = row["cost"] if row["state"] == "settled" else 0
    move = moves[row["id"]]
    move[0] -= was_held
    move[1] += cost - was_spent
    row.update(
        state="settled",
        estimated=estimated,
        actual=actual,
        cost=cost,
        mindvideo_task_id=settlement.mindvideo_task_id or row["mindvideo_task_id"],
        settled_at=row["settled_at"] or now,
    )


def _release(row: dict[str, Any], moves: dict[int, list[int]], now: dt.datetime) -> None:
    if row["state"] != "reserved":
        return  # a settled create stays settled: it was charged
    moves[row["id"]][0] -= row["reserved"]
    row.update(state="released", cost=0, settled_at=now)


def _move_counters(connection: Connection, rows: dict[str, dict[str, Any]], moves: dict[int, list[int]]) -> None:
    """Shift money between the windows' reserved and spent columns: one UPDATE per window, in lock order."""
    moving = [spend_id for spend_id, (reserved, spent) in moves.items() if reserved or spent]
    if not moving:
        return
    account_of = {row["id"]: row["account"] for row in rows.values()}
    totals: dict[tuple[str, str, str, dt.datetime], list[int]] = defaultdict(lambda: [0, 0])
    for start in range(0, len(moving), CHUNK):
        chunk = moving[start : start + CHUNK]
        for hold in connection.execute(select(spend_hold).where(spend_hold.c.spend_id.in_(chunk))):
            total = totals[(account_of[hold.spend_id], hold.budget, hold.period, hold.window_start)]
            total[0] += moves[hold.spend_id][0]
            total[1] += moves[hold.spend_id][1]
    for (account, budget, period, window_start), (reserved, spent) in sorted(totals.items()):
        if reserved == 0 and spent == 0:
            continue
        connection.execute(
            update(budget_window)
            .where(
                and_(
                    budget_window.c.account == account,
                    budget_window.c.budget == budget,
                    budget_window.c.period == period,
                    budget_window.c.window_start == window_start,
                )
            )
            .values(reserved=budget_window.c.reserved + reserved, spent=budget_window.c.spent + spent)
        )


def locked_rows(connection: Connection, keys: Iterable[str]) -> list[Row[Any]]:
    """The rows of ``keys`` (on PostgreSQL locked, in key order); SQLite's writer runs alone."""
    keys = sorted(keys)
    found: list[Row[Any]] = []
    for start in range(0, len(keys), CHUNK):
        query = select(spend).where(spend.c.idempotency_key.in_(keys[start : start + CHUNK]))
        if connection.dialect.name == "postgresql":
            query = query.order_by(spend.c.idempotency_key).with_for_update()
        found.extend(connection.execute(query).all())
    return found


def _shown(row: dict[str, Any] | None) -> SpendRow | None:
    if row is None or row["state"] == "refused":
        return None
    return spend_row(_AsRow(row))


class _AsRow:
    """A row dict read by attribute, as :func:`spend_row` reads a database row."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _first_known(amount: float | None, stored: int | None) -> int | None:
    return stored if amount is None else to_micros(amount)

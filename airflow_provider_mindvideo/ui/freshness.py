"""Answers kept while what they were computed from stays the same: the pages' aggregates and a run's items.

Grouping 100,000 ledger rows by day, DAG and model, or joining a 10,000-item run's ledger rows,
manifest and XComs, costs a few hundred milliseconds; a page asks again every time someone opens
or filters it. Each answer is kept with a **fingerprint** of its inputs and given again only
while a new fingerprint, cheap to take, equals it:

- the ledger's rows the answer reads (:func:`ledger_fingerprint`; the spend page: the viewer's
  DAGs since the window's start; the gallery: the run's): how many, the highest id, and two sums
  over them that any create, settlement, release or refusal changes (its state and its cost,
  each weighted by the row's id, so that two rows changing in opposite ways do not cancel out);
  one pass over the rows without sorting or grouping; and the newest ``created_at``, which a row
  rewritten in place (a create refused again, with what it would hold now) moves;
- the run's XCom records and the manifests' (size, modification time), by the caller.

Nothing is kept past a change: the figures stay the ledger's, to the micro-unit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine

from airflow_provider_mindvideo.spend.engines import reading
from airflow_provider_mindvideo.spend.schema import spend

T = TypeVar("T")

# A state's weight in the fingerprint: any change of state changes the sum.
_STATE_CODE = case(
    (spend.c.state == "reserved", 1),
    (spend.c.state == "settled", 2),
    (spend.c.state == "released", 3),
    (spend.c.state == "refused", 4),
    else_=5,
)
# 997 different weights: a change of row a and the opposite change of row b cancel out only when
# a and b weigh the same and change by the same amount at the same time.
_WEIGHT = spend.c.id % 997 + 1


def ledger_fingerprint(engine: Engine, *where: Any) -> tuple[Any, ...]:
    """What changes whenever a row of the ledger (of those ``where`` selects) is added or changed."""
    query = select(
        func.count(),
        func.max(spend.c.id),
        func.sum(spend.c.cost * _WEIGHT),
        func.sum(_STATE_CODE * _WEIGHT),
        # A create refused again (or a refused/released one reserved again) is its row rewritten in
        # place, its state and cost possibly the same: its time moves to now, past every other row's.
        func.max(spend.c.created_at),
    ).where(*where)
    with reading(engine) as connection:
        *sums, newest = connection.execute(query).one()
    return (*(int(value or 0) for value in sums), str(newest))


class Kept:
    """Up to ``size`` answers by key, each given again only while its fingerprint is unchanged."""

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[Hashable, Any]] = OrderedDict()

    def get(self, key: Hashable, fingerprint: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[0] == fingerprint:
                self._entries.move_to_end(key)
                return found[1]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            self._entries[key] = (fingerprint, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

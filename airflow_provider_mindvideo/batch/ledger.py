"""A batch's creates in the spend ledger, from the triggerer's event loop: every call to the books in a thread,
and calls made while one is running go together in the next, so 10,000 items are not 10,000 thread hops.

Without budgets the books do nothing (:attr:`SpendBooks.counting` is False) and nothing here goes to a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_mindvideo.client.models import MindVideoTask, readable_cost
from airflow_provider_mindvideo.spend.location import SpendBooks
from airflow_provider_mindvideo.spend.records import BudgetRefusal, CreateRecord

_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class BatchBooks:
    """One batch run's books: reserve before a create is sent, settle on its answer and its end, release on a refusal.

    :param creator: what the ledger's rows name: ``dag_id``, ``run_id``, ``task_id``, ``map_index``.
    """

    def __init__(self, books: SpendBooks | None, creator: Mapping[str, Any] | None, try_number: int) -> None:
        self.books = books
        self.creator = dict(creator or {})
        self.try_number = try_number
        self._queued: list[_Call] = []
        self._flushing: asyncio.Task[None] | None = None
        self._settles: set[asyncio.Future[Any]] = set()

    @property
    def counting(self) -> bool:
        return self.books is not None and self.books.counting

    @property
    def _books(self) -> SpendBooks:
        assert self.books is not None
        return self.books

    def record(self, key: str, model: str) -> CreateRecord:
        return CreateRecord(
            key,
            model,
            dag_id=self.creator.get("dag_id"),
            run_id=self.creator.get("run_id"),
            task_id=self.creator.get("task_id"),
            map_index=self.creator.get("map_index"),
            try_number=self.try_number,
        )

    async def try_reserve(self, key: str, model: str, amount: float) -> BudgetRefusal | None:
        """Reserve ``amount`` for the create under ``key``; the refusal when a budget window is full.

        :raises LedgerUnavailableError: the ledger could not be written (nothing may be sent).
        """
        if not self.counting:
            return None
        outcome = await self._call(lambda: self._books.try_reserve(self.record(key, model), amount))
        return outcome if isinstance(outcome, BudgetRefusal) else None

    def settle(self, key: str, task: MindVideoTask) -> None:
        """The create's answer, or its ended task, told its cost: settled in the background (:meth:`drain` waits)."""
        if not self.counting:
            return
        estimated, actual = readable_cost(task.cost_estimate), readable_cost(task.cost_actual)
        self._later(lambda: self._books.settle(key, estimated=estimated, actual=actual, mindvideo_task_id=task.task_id))

    def release(self, key: str) -> None:
        """The API refused the create: its reservation is given back (in the background)."""
        if self.counting:
            self._later(lambda: self._books.release(key))

    async def drain(self) -> None:
        """Until every settle and release asked for so far is written; raises the first that failed."""
        while self._settles:
            done = list(self._settles)
            self._settles.clear()
            for outcome in await asyncio.gather(*done, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome

    def _later(self, call: Callable[[], Any]) -> None:
        future = self._enqueue(call)
        self._settles.add(future)

    async def _call(self, call: Callable[[], Any]) -> Any:
        return await self._enqueue(call)

    def _enqueue(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((call, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        # Calls queued while one group is in its thread wait for the next group: one hop each.
        while self._queued:
            group, self._queued = self._queued, []
            outcomes = await asyncio.to_thread(_run_all, [call for call, _ in group])
            for (_, future), (value, error) in zip(group, outcomes, strict=True):
                if future.cancelled():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(value)


def _run_all(calls: list[Callable[[], Any]]) -> list[tuple[Any, BaseException | None]]:
    """In a thread: each call in order (each its own transaction), its value or its error."""
    outcomes: list[tuple[Any, BaseException | None]] = []
    for call in calls:
        try:
            outcomes.append((call(), None))
        except Exception as error:
            outcomes.append((None, error))
    return outcomes


def seconds_until(instant_epoch: float) -> float:
    return max(0.0, instant_epoch - time.time())

"""A batch's creates in the spend ledger, from the triggerer's event loop: every call to the books in a thread,
and calls made while one is running go together in the next, so 10,000 items are not 10,000 thread hops.
A group is two transactions, not one per create: its settles and releases (:meth:`Ledger.settle_many`),
then its reservations (:meth:`Ledger.reserve_many`). A reservation waits up to :data:`RESERVE_DELAY`
and a settle up to :data:`SETTLE_DELAY` for others to go with it.

Without budgets the books do nothing (:attr:`SpendBooks.counting` is False) and nothing here goes to a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from airflow_provider_mindvideo.batch.sharing import stepped_aside
from airflow_provider_mindvideo.client.errors import MindVideoError
from airflow_provider_mindvideo.client.models import MindVideoTask
from airflow_provider_mindvideo.spend.location import HolderLookups, SpendBooks
from airflow_provider_mindvideo.spend.records import (
    BudgetRefusal,
    CreateRecord,
    PriceUnknownWait,
    Settlement,
    SpendRow,
)

_Answer = tuple[Settlement, "asyncio.Future[Any]"]
_Reservation = tuple[CreateRecord, float, "asyncio.Future[Any]"]

#: How often an item whose model goes alone (its price not known, another create of it in flight) asks again.
PRICE_POLL = 0.5

#: How long a settle or release may wait for others to go with it (or for the next reservations).
#: Answers arrive one by one; written one transaction each, they cost more CPU than the items. A
#: reservation waiting to be settled stays counted at its bound meanwhile (over-counted, never
#: under); a model's lone create tells its price within this plus :data:`PRICE_POLL`.
SETTLE_DELAY = 1.0

#: How long a reservation waits for others to go with it: items start one by one as others end and
#: as the rate limit lets them, a few per 50 ms, so at 0.05 s most groups were of one or two and each
#: paid a transaction (1.3-1.4x the trigger's CPU per item). A quarter second groups a dozen at a
#: request rate of 50/s; an item's task is a quarter second later, the batch's wall is unchanged
#: (its pace is the rate limit's), and a create that would go alone is not held any longer.
RESERVE_DELAY = 0.25


class BatchBooks:
    """One batch run's books: reserve before a create is sent, settle on its answer and its end, release on a refusal.

    :param creator: what the ledger's rows name: ``dag_id``, ``run_id``, ``task_id``, ``map_index``.
    :param look_up: reads a task (the hook's ``aget_task``): an item waiting for its model's lone
        create looks that create's task up when it is not the batch's own (another DAG's Submit
        never sees its task end) and settles it once that task ended.
    """

    def __init__(
        self,
        books: SpendBooks | None,
        creator: Mapping[str, Any] | None,
        try_number: int,
        look_up: Callable[[str], Awaitable[MindVideoTask]] | None = None,
    ) -> None:
        self.books = books
        self.creator = dict(creator or {})
        self.try_number = try_number
        self.look_up = look_up
        self._mine: set[str] = set()  # keys this run reserved: their answers and ends settle them
        self._lookups = HolderLookups()
        self._queued: list[_Answer] = []
        self._reservations: list[_Reservation] = []
        self._flushing: asyncio.Task[None] | None = None
        self._settle_timer: asyncio.TimerHandle | None = None
        self._reserve_timer: asyncio.TimerHandle | None = None
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
        self._mine.add(key)
        while True:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._reservations.append((self.record(key, model), amount, future))
            if self._reserve_timer is None:
                self._reserve_timer = asyncio.get_running_loop().call_later(RESERVE_DELAY, self._start)
            outcome = await future
            if not isinstance(outcome, PriceUnknownWait):
                return outcome if isinstance(outcome, BudgetRefusal) else None
            # Its model goes alone: the item waits in this loop (the batch's timeout ends the wait),
            # its slot of the loop serving other batches meanwhile.
            async with stepped_aside():
                await self._look_up_holder(outcome)
                await asyncio.sleep(PRICE_POLL)

    async def _look_up_holder(self, wait: PriceUnknownWait) -> None:
        """Settle the lone create ``wait`` names from its task, if it is another's and due a look (one item asks)."""
        if self.look_up is None or wait.holder in self._mine:
            return
        task_id = self._lookups.due(wait)  # marks the look before it is made: the other waiting items skip it
        if task_id is None:
            return
        try:
            task = await self.look_up(task_id)
        except MindVideoError:
            return  # unreadable now: a later look, or the batch's timeout, ends the wait
        if task.is_terminal:  # a running task's actual is not its last word
            self._later(Settlement.told_by(wait.holder, task, task_id))

    def settle(self, key: str, task: MindVideoTask) -> None:
        """The create's answer, or its ended task, told its cost: settled in the background (:meth:`drain` waits)."""
        if not self.counting:
            return
        self._later(Settlement.told_by(key, task))

    def release(self, key: str) -> None:
        """The API refused the create: its reservation is given back (in the background)."""
        if self.counting:
            self._later(Settlement(key, released=True))

    async def drain(self) -> None:
        """Until every settle and release asked for so far is written; raises the first that failed."""
        if self._queued:
            self._start()  # now, not after the settle delay
        while self._settles:
            done = list(self._settles)
            self._settles.clear()
            for outcome in await asyncio.gather(*done, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome

    def _later(self, settlement: Settlement) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((settlement, future))
        self._settles.add(future)
        if self._settle_timer is None:
            self._settle_timer = loop.call_later(SETTLE_DELAY, self._start)

    def _start(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        # Calls queued while one group is in its thread wait for the next group: one hop each.
        while self._queued or self._reservations:
            for timer in (self._settle_timer, self._reserve_timer):  # this group takes what waits for it
                if timer is not None:
                    timer.cancel()
            self._settle_timer = self._reserve_timer = None
            group, self._queued = self._queued, []
            # An item cancelled while its reservation waited (the batch's hard stop) sends nothing: not written.
            reservations = [r for r in self._reservations if not r[2].cancelled()]
            self._reservations = []
            creates = [(create, amount) for create, amount, _ in reservations]
            outcomes, reserved = await asyncio.to_thread(self._run_group, [s for s, _ in group], creates)
            for (_, future), outcome in zip(group, outcomes, strict=True):
                _resolve(future, outcome)
            for (create, _, future), outcome in zip(reservations, reserved, strict=True):
                if future.cancelled() and isinstance(outcome[0], SpendRow):
                    # Cancelled while its group was written: nothing will be sent under the key. Left
                    # reserved, it would hold money, and an unpriced model's other creates, for good.
                    self.release(create.idempotency_key)
                _resolve(future, outcome)

    def _run_group(
        self, settlements: list[Settlement], creates: list[tuple[CreateRecord, float]]
    ) -> tuple[list[_Outcome], list[_Outcome]]:
        """In a thread: settles and releases first, in one transaction (what they free and tell is then
        seen by the reservations), then every reservation in one transaction."""
        outcomes: list[_Outcome] = []
        if settlements:
            settled, failed = _outcome(lambda: self._books.settle_many(settlements))
            outcomes = [(None, failed)] * len(settlements) if failed is not None else [(v, None) for v in settled]
        if not creates:
            return outcomes, []
        value, error = _outcome(lambda: self._books.reserve_many(creates))
        if error is not None:  # the ledger failed: no reservation of the group was written
            return outcomes, [(None, error)] * len(creates)
        return outcomes, [(v, None) for v in value]


_Outcome = tuple[Any, BaseException | None]


def _outcome(call: Callable[[], Any]) -> _Outcome:
    try:
        return call(), None
    except Exception as error:
        return None, error


def _resolve(future: asyncio.Future[Any], outcome: _Outcome) -> None:
    if future.cancelled():
        return
    value, error = outcome
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def seconds_until(instant_epoch: float) -> float:
    return max(0.0, instant_epoch - time.time())

"""What the batches of one event loop share: items in flight, requests in flight, saves; and CPU in small steps.

A triggerer runs every deferred task of a deployment in one asyncio loop: other teams' sensors,
Airflow's own triggers, our waits. A batch is one trigger there, and its ``max_active`` is its own;
the bounds here are the loop's, shared by every batch trigger in it (:func:`loop_share`, one per
running loop), and handed round-robin between the batches waiting (:class:`FairSlots`), so that
two 10,000-item batches progress side by side instead of the first one taking every slot.

CPU work done between two awaits (rows built, read, rendered; workers started; waiters woken) is
cut into steps of at most :data:`WORK_PER_STEP` units (:func:`in_steps`): between two steps the
loop serves everyone else.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

_T = TypeVar("_T")

#: Items in flight (between their first create and their end), every batch of one loop together.
#: Each is a coroutine the loop wakes: a turn that finds them all ready at once (a rate-limit pause
#: ending, a group of intents stored) runs a step of each. A thousand short steps are tens of
#: milliseconds; and at an account's usual 100 requests a second a thousand images in flight
#: already keep the rate busy -- more would only queue for it.
LOOP_ACTIVE = 1000
#: Requests (creates, looks) the loop's batches have on the wire at once.
LOOP_REQUESTS = 64
#: Outputs being saved at once (``download_to``), every batch of one loop together.
LOOP_SAVES = 8
#: Units of CPU work (a row built, read or rendered; a worker started; a waiter woken) in one step.
WORK_PER_STEP = 100


class FairSlots:
    """At most ``capacity`` held at once in one loop; freed slots go round-robin to the tenants waiting.

    A plain semaphore serves waiters first come first served: a batch with 1,000 workers queued
    would take ten slots for every one of a batch with 100. Here each tenant (a batch) waits in a
    line of its own, and a freed slot goes to the next tenant in turn.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        # Tenants in turn order (a dict keeps insertion order): the one served goes to the back.
        self._lines: dict[object, collections.deque[asyncio.Future[None]]] = {}

    async def acquire(self, tenant: object) -> None:
        if self.held < self.capacity and not self._lines:
            self.held += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line = self._lines.setdefault(tenant, collections.deque())
        line.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed a slot in the same turn it was cancelled: pass it on
            elif turn in line:
                line.remove(turn)
                if not line and self._lines.get(tenant) is line:
                    del self._lines[tenant]
            raise

    def release(self) -> None:
        self.held -= 1
        while self.held < self.capacity and self._lines:
            tenant, line = next(iter(self._lines.items()))
            turn = line.popleft()
            del self._lines[tenant]
            if line:
                self._lines[tenant] = line
            if turn.cancelled():  # its waiter was cancelled and has not run since: no slot for it
                continue
            turn.set_result(None)
            self.held += 1

    @contextlib.asynccontextmanager
    async def slot(self, tenant: object) -> AsyncIterator[None]:
        """Hold a slot while the block runs (:func:`stepped_aside` lends it out meanwhile)."""
        await self.acquire(tenant)
        holding = _Holding(self, tenant)
        token = _holding.set(holding)
        try:
            yield
        finally:
            _holding.reset(token)
            if holding.held:
                self.release()

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self._lines.values())


@dataclasses.dataclass
class _Holding:
    slots: FairSlots
    tenant: object
    held: bool = True


# The slot the running task holds (the innermost), if any: a task is one item's coroutine.
_holding: contextvars.ContextVar[_Holding | None] = contextvars.ContextVar("mindvideo_batch_slot", default=None)


@contextlib.asynccontextmanager
async def stepped_aside() -> AsyncIterator[None]:
    """While the running task waits for something that is not the loop's to give (money held by other
    creates, a model's price, a budget window, a 429 pause), the slot it holds serves other batches;
    it waits its turn for one again after.

    Without this, a batch whose items all wait for a budget window to reset would hold every slot
    of the loop for hours, and the loop's other batches would make no progress at all.
    """
    holding = _holding.get()
    if holding is None or not holding.held:
        yield
        return
    holding.held = False
    holding.slots.release()
    try:
        yield
    except BaseException:
        # Leaving (cancelled, the batch's hard stop): the item ends without a slot. Taking one back
        # first would make a cancellation wait until another batch's item (a 300 s video) freed one.
        raise
    await holding.slots.acquire(holding.tenant)
    holding.held = True


class LoopShare:
    """The bounds every batch trigger of one event loop shares."""

    def __init__(self) -> None:
        self.active = FairSlots(LOOP_ACTIVE)
        self.requests = FairSlots(LOOP_REQUESTS)
        self.saves = FairSlots(LOOP_SAVES)


_shares: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopShare] = weakref.WeakKeyDictionary()


def loop_share() -> LoopShare:
    """The running loop's share (made on first use; it goes with the loop)."""
    loop = asyncio.get_running_loop()
    share = _shares.get(loop)
    if share is None:
        share = _shares[loop] = LoopShare()
    return share


def clamp_active(max_active: int, log: Any) -> int:
    """``max_active``, or the loop's :data:`LOOP_ACTIVE` when larger, saying so in one log line."""
    if max_active <= LOOP_ACTIVE:
        return max_active
    log.warning(
        "max_active=%d is more than one triggerer's event loop serves: clamped to %d, the items in flight of "
        "every batch in this triggerer together. Each item in flight is a coroutine the loop shared with every "
        "other deferred task wakes; more would only queue for the account's rate limit while their wake-ups "
        "hold the loop.",
        max_active,
        LOOP_ACTIVE,
    )
    return LOOP_ACTIVE


async def in_steps(items: Iterable[_T], per_step: int = WORK_PER_STEP) -> AsyncIterator[_T]:
    """``items``, letting the loop turn after every ``per_step`` of them: the caller's work on each is one unit."""
    for done, item in enumerate(items, 1):
        yield item
        if done % per_step == 0:
            await asyncio.sleep(0)

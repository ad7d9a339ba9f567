"""Per-connection request limits: at most so many requests in flight, and so many a second.

MindVideo documents no rate limits, but accounts have them, and a mapped fan-out of hundreds
of generations should not find them by collecting 429s. The limits are a connection's
``max_concurrency`` and ``max_requests_per_second`` extras, enforced per process (a worker, a
triggerer) for every hook on that connection, sync or async. Unset, they cost nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_mindvideo.client.protocol import ClientSettings


#: Set (in a task's context) by a sender of many requests for one job -- a batch's items: they take a
#: pacing turn only behind every other request of the loop waiting for one (at most one of theirs is
#: in line at a time), so that a single task's wait on the same connection is never queued behind a
#: batch's backlog.
bulk: contextvars.ContextVar[bool] = contextvars.ContextVar("mindvideo_bulk_requests", default=False)

# How often to ask again while every turn of the second is in flight (their answers are not timed).
_IN_FLIGHT_POLL = 0.01
_SECOND = 1.0 + 1e-6


@dataclass
class Pacer:
    r"""Turns every ``1 / rate`` seconds, taken only once due, and never more than ``rate`` in one second.

    A turn is never booked ahead: a request whose sender was held up (a busy event loop) must
    not go out right behind the next one. But a sender that takes its turn a little late (a
    timer's millisecond, a busy loop) does not push the turns after it back: they keep the
    cadence, up to one interval of lateness. Counting each interval from the late send instead
    lost the lateness at every turn: 86 requests a second of the 95 allowed, in the batch probe.
    The promise is the server's: no second of its clock holds more than ``ceil(rate)`` of the
    requests. A request reaches the server some time after its turn, at the latest by the moment
    its answer (or its failure) is back: it may arrive late, the next one early. So a turn counts
    from when it is taken until a second after it is :meth:`finish`\ ed; a new turn is due only
    while fewer than ``ceil(rate)`` count. Counting turns from when they were taken let a
    request delayed on its way (a busy machine) arrive within a second of the R-th after it:
    R + 1 in one second at the server.
    """

    rate: float
    _next_free: float = 0.0
    #: Turns taken and not finished yet.
    _in_flight: int = 0
    #: When the finished turns finished, oldest first; only those of the last second matter.
    _ended: collections.deque[float] = field(default_factory=collections.deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(self, now: float) -> float:
        """Take the turn if it is due (0.0), else the seconds until it is: ask again then."""
        with self._lock:
            if now < self._next_free:
                return self._next_free - now
            # A second and a microsecond: the subtraction rounds, and the promise must hold exactly.
            while self._ended and now - self._ended[0] >= _SECOND:
                self._ended.popleft()
            if self._in_flight + len(self._ended) >= math.ceil(self.rate):
                if self._ended:
                    # At least a microsecond: a wait below the clock's resolution would not move it.
                    return max(_SECOND - (now - self._ended[0]), 1e-6)
                return min(1.0 / self.rate, _IN_FLIGHT_POLL)  # all in flight: an answer frees a turn
            interval = 1.0 / self.rate
            due = self._next_free
            # Below one a second the window (one second) is shorter than the interval: no cadence
            # to keep there, every two turns are a full interval apart.
            on_time = self.rate >= 1.0 and now - due < interval
            self._next_free = (due if on_time else now) + interval
            self._in_flight += 1
            return 0.0

    def finish(self, now: float) -> None:
        """The request of a turn is answered, or failed: from a second after ``now`` it no longer counts."""
        with self._lock:
            self._in_flight -= 1
            self._ended.append(now)


class ConnectionLimits:
    """The limits of one connection in this process; shared by all its hooks."""

    def __init__(self, max_concurrency: int | None, max_requests_per_second: float | None) -> None:
        self.max_concurrency = max_concurrency
        self.pacer = Pacer(max_requests_per_second) if max_requests_per_second else None
        self._threads = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._lines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._bulk_lines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def delay(self) -> float:
        """0.0 when a request may be sent now (and it is counted), else seconds to wait before asking again."""
        return self.pacer.reserve(time.monotonic()) if self.pacer else 0.0

    def finish(self) -> None:
        """The request of a turn :meth:`delay` or :meth:`await_turn` gave is answered, or failed."""
        if self.pacer is not None:
            self.pacer.finish(time.monotonic())

    async def await_turn(self, within: float) -> bool:
        """Wait for a pacing turn in an event loop (it is then counted); False if none comes within ``within`` s.

        Coroutines wait in line (FIFO), and only the first sleeps until the turn: were they
        all to sleep until it and ask again, each turn would wake every waiter -- in a batch,
        hundreds of wake-ups per request, enough CPU to make the turns themselves late.
        """
        if self.pacer is None:
            return True
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        line = _per_loop(self._lines, loop)
        # Bulk requests first wait in a line of their own: one at a time joins the ordinary line.
        bulk_line = _per_loop(self._bulk_lines, loop) if bulk.get() else None
        try:
            async with asyncio.timeout(within):
                if bulk_line is not None:
                    await bulk_line.acquire()
                try:
                    await line.acquire()
                except BaseException:
                    if bulk_line is not None:
                        bulk_line.release()
                    raise
        except TimeoutError:
            return False
        try:
            while delay := self.delay():
                if time.monotonic() - started + delay > within:
                    return False
                await asyncio.sleep(delay)
            return True
        finally:
            # The ordinary line first: a request waiting there goes before the next bulk one joins.
            line.release()
            if bulk_line is not None:
                bulk_line.release()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the connection's in-flight slots (threads of this process)."""
        if self._threads is None:
            yield
            return
        with self._threads:
            yield

    @contextlib.asynccontextmanager
    async def aslot(self) -> AsyncIterator[None]:
        """Hold one of the connection's in-flight slots (coroutines of the running loop)."""
        if self.max_concurrency is None:
            yield
            return
        loop = asyncio.get_running_loop()
        semaphore = self._loops.get(loop)
        if semaphore is None:
            semaphore = self._loops[loop] = asyncio.Semaphore(self.max_concurrency)
        async with semaphore:
            yield


def _per_loop(
    locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock], loop: asyncio.AbstractEventLoop
) -> asyncio.Lock:
    lock = locks.get(loop)
    if lock is None:
        lock = locks[loop] = asyncio.Lock()
    return lock


_UNLIMITED = ConnectionLimits(None, None)
_registry: dict[ClientSettings, ConnectionLimits] = {}
_registry_lock = threading.Lock()


def limits_for(settings: ClientSettings) -> ConnectionLimits:
    """This process's limits for the account and limits ``settings`` describe."""
    if settings.max_concurrency is None and settings.max_requests_per_second is None:
        return _UNLIMITED
    with _registry_lock:
        if settings not in _registry:
            _registry[settings] = ConnectionLimits(settings.max_concurrency, settings.max_requests_per_second)
        return _registry[settings]

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
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_mindvideo.client.protocol import ClientSettings


@dataclass
class Pacer:
    """Turns every ``1 / rate`` seconds, taken only once due, and never more than ``rate`` in one second.

    A turn is never booked ahead: a request whose sender was held up (a busy event loop) must
    not go out right behind the next one. But a sender that takes its turn a little late (a
    timer's millisecond, a busy loop) does not push the turns after it back: they keep the
    cadence, up to one interval of lateness. Counting each interval from the late send instead
    lost the lateness at every turn: 86 requests a second of the 95 allowed, in the batch probe.
    Turns that bunch after a late one are bounded by the window: no second (of the times the
    turns were taken) holds more than ``ceil(rate)`` of them.
    """

    rate: float
    _next_free: float = 0.0
    _recent: collections.deque[float] = field(default_factory=collections.deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(self, now: float) -> float:
        """Take the turn if it is due (0.0), else the seconds until it is: ask again then."""
        with self._lock:
            if now < self._next_free:
                return self._next_free - now
            per_second = math.ceil(self.rate)
            if len(self._recent) >= per_second and (wait := self._recent[0] + 1.0 - now) > 0.0:
                return wait  # (computed once: 0.0 is "take it", so a rounding must not say both)
            interval = 1.0 / self.rate
            due = self._next_free
            # Below one a second the window (one second) is shorter than the interval: no cadence
            # to keep there, every two turns are a full interval apart.
            on_time = self.rate >= 1.0 and now - due < interval
            self._next_free = (due if on_time else now) + interval
            self._recent.append(now)
            if len(self._recent) > per_second:
                self._recent.popleft()
            return 0.0


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

    def delay(self) -> float:
        """0.0 when a request may be sent now (and it is counted), else seconds to wait before asking again."""
        return self.pacer.reserve(time.monotonic()) if self.pacer else 0.0

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
        line = self._lines.get(loop)
        if line is None:
            line = self._lines[loop] = asyncio.Lock()
        try:
            async with asyncio.timeout(within):
                await line.acquire()
        except TimeoutError:
            return False
        try:
            while delay := self.delay():
                if time.monotonic() - started + delay > within:
                    return False
                await asyncio.sleep(delay)
            return True
        finally:
            line.release()

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

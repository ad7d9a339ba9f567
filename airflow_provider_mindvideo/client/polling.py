"""When to look at a MindVideo task again. Pure: shared by the trigger and the worker's wait loop.

The interval is a function of how long the wait has lasted, not of how many polls were made:
a quarter of the elapsed time, kept between ``poll_interval`` and ``max_poll_interval``. Fast
image models are seen finishing within seconds; a ten-minute video job is polled a handful of
times, not a hundred. And since elapsed time comes from an absolute start carried in the
trigger's kwargs, a trigger re-created after a triggerer restart resumes the same schedule.
"""

from __future__ import annotations

import random

#: Fraction of the elapsed wait used as the next interval.
GROWTH = 0.25
#: Each interval is spread by +/- this fraction, so waits started together drift apart.
JITTER = 0.2
# Shared: a generator per wait would cost 2.5 KiB of state for each of thousands of waits.
_RNG = random.Random()


def next_poll_delay(
    elapsed: float, poll_interval: float, max_poll_interval: float, rng: random.Random | None = None
) -> float:
    """Seconds until the next poll of a task waited on for ``elapsed`` seconds."""
    base = min(max_poll_interval, max(poll_interval, elapsed * GROWTH))
    return min(max_poll_interval, base * (rng or _RNG).uniform(1 - JITTER, 1 + JITTER))


def check_poll_settings(poll_interval: float, max_poll_interval: float) -> None:
    """Refuse settings that would poll constantly or never grow, when the DAG is parsed."""
    if poll_interval <= 0:
        raise ValueError(f"poll_interval = {poll_interval!r}: must be > 0 seconds")
    if max_poll_interval < poll_interval:
        raise ValueError(f"max_poll_interval = {max_poll_interval!r}: must be >= poll_interval ({poll_interval!r})")


#: Waits that start at the same moment (a triggerer taking over thousands of deferred tasks, or
#: restarting) make their first checks at most this many per slice of time: all at once, 5,000
#: first checks (connection lookups, requests, log lines) held one event loop for 1.3-1.7 s.
FIRST_CHECKS_PER_SLICE = 25
SLICE_SECONDS = 0.1


class FirstCheckSlots:
    """Spread the first checks of waits that start together over slices of ``slice_seconds``.

    Pure: the caller passes the clock. One per event loop; each wait asks once, as it starts,
    and holds its first check for the delay it is given. A wait that starts alone, or while
    waits start more slowly than ``per_slice`` a slice, is never held.
    """

    def __init__(self, per_slice: int = FIRST_CHECKS_PER_SLICE, slice_seconds: float = SLICE_SECONDS) -> None:
        if per_slice < 1 or slice_seconds <= 0:
            raise ValueError(f"per_slice = {per_slice!r}, slice_seconds = {slice_seconds!r}: must be >= 1 and > 0")
        self.per_slice = per_slice
        self.slice_seconds = slice_seconds
        self._slice_start = float("-inf")  # the latest slice handed out, possibly in the future
        self._taken = 0

    def delay(self, now: float) -> float:
        """Seconds until this wait's first check: 0, or the start of the first slice with room."""
        if now >= self._slice_start + self.slice_seconds:
            self._slice_start, self._taken = now, 0
        elif self._taken >= self.per_slice:
            self._slice_start += self.slice_seconds
            self._taken = 0
        self._taken += 1
        return max(0.0, self._slice_start - now)

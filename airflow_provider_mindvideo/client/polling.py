"""When to look at a MindVideo task again. Pure: shared by the trigger and the worker's wait loops.

Two schedules, chosen per poll from what the process learnt of the task's model
(:mod:`.durations`: the last few durations of each model):

- **Backoff**, for a model not seen yet (a cold process, a new model, a wait that names no
  model): a quarter of the elapsed wait, kept between ``poll_interval`` and
  ``max_poll_interval``. Fast image models are seen finishing within seconds; a ten-minute
  video job is polled a handful of times, not a hundred.
- **Aimed**, once a few tasks of the model were seen ending: sparse until the shortest recent
  durations (each interval the elapsed wait, at most ``max_poll_interval``), then polls on a
  grid ``DENSE`` of the typical duration apart (never closer than ``poll_interval``) up to a
  little past the longest recent duration: most tasks end there, and are seen within a few
  percent of their duration. A task slower than every recent peer (the model may have drifted)
  is polled by the backoff again.

Every interval is at most ``max_poll_interval``, so no task, whatever the model's history, is
seen later than that after it ended. Elapsed time comes from an absolute start carried in the
trigger's kwargs: a trigger re-created after a triggerer restart resumes a schedule (cold at
first: it learns again).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

#: Fraction of the elapsed wait used as the next interval (the backoff).
GROWTH = 0.25
#: Each interval is spread by +/- this fraction (aimed polls: moved earlier by up to this fraction
#: of their spacing), so waits started together drift apart.
JITTER = 0.2
#: Aimed polls are this fraction of the model's typical (median recent) duration apart.
DENSE = 0.05
#: Before the grid, the interval is this fraction of the elapsed wait (at most ``max_poll_interval``).
SPARSE = 1.0
#: The grid goes this fraction of the recent spread past the longest recent duration.
TAIL = 0.25
#: Recent durations needed before polls are aimed: fewer say too little about the spread.
MIN_DURATIONS = 4
# Shared: a generator per wait would cost 2.5 KiB of state for each of thousands of waits.
_RNG = random.Random()


def next_poll_delay(
    elapsed: float,
    poll_interval: float,
    max_poll_interval: float,
    rng: random.Random | None = None,
    durations: Sequence[float] = (),
) -> float:
    """Seconds until the next poll of a task waited on for ``elapsed`` seconds.

    ``durations``: recent durations of the task's model, shortest first
    (:meth:`.RecentDurations.of`); empty for the backoff alone.
    """
    rng = rng or _RNG
    if len(durations) >= MIN_DURATIONS:
        aimed = _aimed_delay(elapsed, poll_interval, max_poll_interval, rng, durations)
        if aimed is not None:
            return aimed
    # Cold, or slower than every recent peer (their durations may be of a model that since drifted).
    base = min(max_poll_interval, max(poll_interval, elapsed * GROWTH))
    return min(max_poll_interval, base * rng.uniform(1 - JITTER, 1 + JITTER))


def _aimed_delay(
    elapsed: float, poll_interval: float, max_poll_interval: float, rng: random.Random, durations: Sequence[float]
) -> float | None:
    """The delay to the next poll aimed at the model's recent durations; None once past them."""
    # Not the very shortest of many: one task that was quick for once must not densify every wait.
    shortest = durations[len(durations) // 10]
    # A little past the longest: the next task is as likely as any to be the slowest yet.
    last = durations[-1] + TAIL * (durations[-1] - shortest)
    spacing = max(poll_interval, DENSE * durations[len(durations) // 2])
    soonest = elapsed + poll_interval
    if soonest > last:
        return None
    # The grid runs down from the last point to one at or before the shortest duration.
    first_aimed = last - math.ceil((last - shortest) / spacing) * spacing
    if soonest < first_aimed:
        # Before the grid: sparse, yet a task quicker than its peers (the model sped up) is seen
        # within its own duration again at worst.
        sparse = min(max_poll_interval, max(poll_interval, SPARSE * elapsed)) * rng.uniform(1 - JITTER, 1)
        return min(first_aimed - elapsed, sparse)
    target = last - ((last - soonest) // spacing) * spacing  # the first point due no sooner than poll_interval
    early = rng.uniform(0, JITTER) * spacing
    return min(max_poll_interval, max((1 - JITTER) * poll_interval, target - elapsed - early))


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

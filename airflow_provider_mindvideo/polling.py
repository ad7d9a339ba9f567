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

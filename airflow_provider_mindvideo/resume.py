"""Not resuming a deferred task sooner than Airflow can take it back: the fast-resume race.

When a trigger fires, Airflow puts its task back in the queue. If that happens before the
scheduler has processed the exit of the worker process that deferred (its "success" executor
event, a second or two later, more on a loaded machine), the resumed try can be queued or
running when that late event arrives, and Airflow 3.2 and 3.3 fail it: "Executor ... reported
that the task instance ... finished with state success, but the task instance's state attribute
is queued" (or running). Only a remote task that ends within seconds of the deferral meets it:
the provider's triggers hold such an event back until ``[mindvideo] resume_not_before`` seconds
have passed since the deferral; a wait that takes longer is not delayed at all.
"""

from __future__ import annotations

import time
from asyncio import sleep
from typing import Any

#: Seconds between a deferral and the event that resumes its task, at least (the default of
#: ``[mindvideo] resume_not_before``). See docs/troubleshooting.md for how it was measured.
DEFAULT_RESUME_NOT_BEFORE = 20.0


def resume_not_before() -> float:
    """``[mindvideo] resume_not_before``, read in the triggerer when an event is about to fire."""
    from airflow.sdk import conf

    return max(0.0, conf.getfloat("mindvideo", "resume_not_before", fallback=DEFAULT_RESUME_NOT_BEFORE))


def hold_seconds(deferred_at: float, now: float, not_before: float) -> float:
    """How long to hold an event back: until ``not_before`` seconds after the deferral, or not at all."""
    return max(0.0, deferred_at + not_before - now)


async def hold_until_resumable(deferred_at: float, log: Any) -> float:
    """Sleep until the event may resume the task; the seconds held (0.0 for a wait that took long enough)."""
    held = hold_seconds(deferred_at, time.time(), resume_not_before())
    if held > 0:
        log.info(
            "Holding the event %.1f s: it came %.1f s after the deferral, and Airflow may fail a task resumed "
            "before it has processed the deferring try's exit ([mindvideo] resume_not_before)",
            held,
            time.time() - deferred_at,
        )
        await sleep(held)
    return held

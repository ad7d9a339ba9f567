"""Calendar windows of a budget: a day, an ISO week (from Monday) or a month, in one IANA timezone. Pure.

A window starts at the first instant whose local date is its first date: local midnight, or,
where a clock change skips midnight (America/Havana, America/Santiago), the end of the skipped
hour; where a whole day is skipped (Pacific/Apia, 30 December 2011) its window is empty and the
next begins. Windows are contiguous: every instant lies in exactly one window of each period,
``start <= instant < resets_at``. Instants are aware datetimes; the results are in UTC.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from zoneinfo import ZoneInfo

UTC = dt.UTC


class Period(str, enum.Enum):
    """How long a budget's window lasts."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True)
class Window:
    """One calendar window: ``start <= instant < resets_at`` (both UTC)."""

    period: Period
    first_date: dt.date
    start: dt.datetime
    resets_at: dt.datetime

    def describe(self, timezone: ZoneInfo) -> str:
        """The window in a reader's words: ``the day 2026-03-29 (Europe/Berlin)``, ``the month 2026-03 (UTC)``."""
        if self.period is Period.DAY:
            what = f"the day {self.first_date.isoformat()}"
        elif self.period is Period.WEEK:
            what = f"the week from Monday {self.first_date.isoformat()}"
        else:
            what = f"the month {self.first_date:%Y-%m}"
        return f"{what} ({timezone.key})"


def first_date_of(period: Period, day: dt.date) -> dt.date:
    """The first local date of the window of ``period`` that holds ``day``."""
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def next_first_date(period: Period, first: dt.date) -> dt.date:
    """The first date of the window after the one starting on ``first``."""
    if period is Period.DAY:
        return first + dt.timedelta(days=1)
    if period is Period.WEEK:
        return first + dt.timedelta(days=7)
    return (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def day_starts(day: dt.date, timezone: ZoneInfo) -> dt.datetime:
    """The first instant (UTC) whose local date in ``timezone`` is ``day`` or later."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=timezone)
    instant = midnight.astimezone(UTC)
    if instant.astimezone(timezone).replace(tzinfo=None) == midnight.replace(tzinfo=None):
        # Midnight exists; fold=0 is the earlier of two midnights when the clock went back.
        return instant
    # Midnight fell in a gap: the day starts when the clock jumps. Between the two readings of
    # midnight lies the jump; find its second (tz database changes are on whole seconds).
    low = midnight.replace(fold=1).astimezone(UTC)
    high = instant
    low, high = min(low, high), max(low, high)
    while high - low > dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(timezone).date() >= day:
            high = middle
        else:
            low = middle
    return high


def window_at(period: Period, instant: dt.datetime, timezone: ZoneInfo) -> Window:
    """The window of ``period`` that holds ``instant`` (an aware datetime)."""
    if instant.tzinfo is None:
        raise ValueError(f"instant {instant!r} has no timezone: pass an aware datetime")
    instant = instant.astimezone(UTC)
    first = first_date_of(period, instant.astimezone(timezone).date())
    # Where the clock went back across midnight the local date can run behind the windows:
    # step to the window whose boundaries hold the instant.
    while day_starts(first, timezone) > instant:
        first = first_date_of(period, first - dt.timedelta(days=1))
    following = next_first_date(period, first)
    while day_starts(following, timezone) <= instant:
        first, following = following, next_first_date(period, following)
    return Window(period, first, day_starts(first, timezone), day_starts(following, timezone))

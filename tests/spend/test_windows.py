"""Budget windows: contiguous calendar days, ISO weeks and months in a timezone, across clock changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_mindvideo.spend.windows import UTC, Period, day_starts, window_at

# Zones whose clocks do awkward things: DST at midnight (Havana, Santiago, Beirut, Cairo), back
# across midnight (Sao Paulo until 2019), half-hour DST (Lord Howe), a skipped day (Apia, 2011).
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Havana",
    "America/Santiago",
    "America/Sao_Paulo",
    "Asia/Beirut",
    "Africa/Cairo",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Asia/Kolkata",
    "Pacific/Kiritimati",
]

instants = st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2037, 12, 31), timezones=st.just(UTC))


@settings(max_examples=400, deadline=None)
@given(instant=instants, zone=st.sampled_from(ZONES), period=st.sampled_from(list(Period)))
def test_every_instant_lies_in_exactly_one_window_that_starts_on_a_first_date(
    instant: dt.datetime, zone: str, period: Period
) -> None:
    tz = ZoneInfo(zone)
    window = window_at(period, instant, tz)
    assert window.start <= instant < window.resets_at
    # The start is the exact boundary: the instant before it is in the previous window.
    before = window.start - dt.timedelta(microseconds=1)
    assert window_at(period, before, tz).resets_at == window.start
    # The next window begins where this one resets (no gap, no overlap).
    assert window_at(period, window.resets_at, tz).start == window.resets_at
    local_start = window.start.astimezone(tz)
    if period is Period.WEEK:
        assert window.first_date.weekday() == 0
    if period is Period.MONTH:
        assert window.first_date.day == 1
    # The window starts on its first date, or later on where that date's midnight was skipped.
    assert local_start.date() >= window.first_date
    assert before.astimezone(tz).date() < window.first_date or zone == "America/Sao_Paulo"


@settings(max_examples=200, deadline=None)
@given(day=st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2037, 12, 31)), zone=st.sampled_from(ZONES))
def test_a_day_starts_at_local_midnight_or_when_the_clock_jumps_past_it(day: dt.date, zone: str) -> None:
    tz = ZoneInfo(zone)
    start = day_starts(day, tz)
    assert start.astimezone(tz).date() >= day
    assert (start - dt.timedelta(seconds=1)).astimezone(tz).date() < day
    local = start.astimezone(tz)
    if local.date() == day:
        assert (local.hour, local.minute) <= (1, 0)  # midnight, or the end of a gap over midnight


@pytest.mark.parametrize(
    ("period", "instant", "zone", "start", "resets"),
    [
        # Berlin's month ends at 22:00 UTC in summer, 23:00 in winter.
        (
            Period.MONTH,
            "2026-05-31T21:59:59+00:00",
            "Europe/Berlin",
            "2026-04-30T22:00:00+00:00",
            "2026-05-31T22:00:00+00:00",
        ),
        (
            Period.MONTH,
            "2026-05-31T22:00:00+00:00",
            "Europe/Berlin",
            "2026-05-31T22:00:00+00:00",
            "2026-06-30T22:00:00+00:00",
        ),
        # The day of the spring change in Berlin is 23 hours long.
        (
            Period.DAY,
            "2026-03-29T12:00:00+00:00",
            "Europe/Berlin",
            "2026-03-28T23:00:00+00:00",
            "2026-03-29T22:00:00+00:00",
        ),
        # ISO week: Monday 00:00 UTC.
        (Period.WEEK, "2026-12-06T20:00:00+00:00", "UTC", "2026-11-30T00:00:00+00:00", "2026-12-07T00:00:00+00:00"),
        # Havana skips 00:00-01:00 on 2026-03-08: the day starts at 01:00 local (05:00 UTC).
        (
            Period.DAY,
            "2026-03-08T12:00:00+00:00",
            "America/Havana",
            "2026-03-08T05:00:00+00:00",
            "2026-03-09T04:00:00+00:00",
        ),
        # Apia skipped 30 December 2011: the 29th's window runs into the 31st.
        (
            Period.DAY,
            "2011-12-30T09:59:59+00:00",
            "Pacific/Apia",
            "2011-12-29T10:00:00+00:00",
            "2011-12-30T10:00:00+00:00",
        ),
    ],
)
def test_windows_at_known_clock_changes(period: Period, instant: str, zone: str, start: str, resets: str) -> None:
    window = window_at(period, dt.datetime.fromisoformat(instant), ZoneInfo(zone))
    assert (window.start.isoformat(), window.resets_at.isoformat()) == (start, resets)


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        window_at(Period.DAY, dt.datetime(2026, 1, 1), ZoneInfo("UTC"))

"""The poll schedule (client/polling.py) and what it learns from (client/durations.py): pure, so tested by simulation."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_mindvideo.client.durations import RecentDurations, observed_duration
from airflow_provider_mindvideo.client.polling import GROWTH, JITTER, MIN_DURATIONS, next_poll_delay

POLL, CAP = 5.0, 60.0


def seen_at(true_duration: float, durations: tuple[float, ...], seed: int = 0, poll: float = POLL, cap: float = CAP):
    """When a wait polling by the schedule sees a task that ends ``true_duration`` seconds in, and its poll count."""
    rng = random.Random(seed)
    elapsed, polls = 0.0, 0
    while elapsed < true_duration:
        elapsed += next_poll_delay(elapsed, poll, cap, rng, durations)
        polls += 1
    return elapsed, polls


def backoff(elapsed: float, poll: float, cap: float, rng: random.Random) -> float:
    """The schedule as it was before it learnt: a quarter of the elapsed wait, within [poll, cap], jittered."""
    base = min(cap, max(poll, elapsed * GROWTH))
    return min(cap, base * rng.uniform(1 - JITTER, 1 + JITTER))


def band(typical: float, spread: float = 0.1, count: int = 16) -> tuple[float, ...]:
    """``count`` durations spread evenly within +/- ``spread`` of ``typical``, shortest first."""
    return tuple(sorted(typical * (1 - spread + 2 * spread * i / (count - 1)) for i in range(count)))


# -- cold start: today's backoff -------------------------------------------------------------------


@given(
    elapsed=st.floats(0, 10_000),
    poll=st.floats(0.01, 100),
    extra=st.floats(0, 1_000),
    known=st.lists(st.floats(0.1, 1_000), max_size=MIN_DURATIONS - 1),
    seed=st.integers(0, 2**32),
)
def test_a_model_not_seen_enough_is_polled_by_the_backoff(
    elapsed: float, poll: float, extra: float, known: list[float], seed: int
) -> None:
    cap = poll + extra
    delay = next_poll_delay(elapsed, poll, cap, random.Random(seed), tuple(sorted(known)))
    assert delay == backoff(elapsed, poll, cap, random.Random(seed))


# -- the guarantees, whatever was learnt ----------------------------------------------------------

durations_learnt = st.lists(st.floats(0.01, 5_000), min_size=0, max_size=16).map(lambda found: tuple(sorted(found)))


@given(
    elapsed=st.floats(0, 20_000),
    poll=st.floats(0.01, 100),
    extra=st.floats(0, 1_000),
    durations=durations_learnt,
    seed=st.integers(0, 2**32),
)
def test_every_interval_is_within_the_users_bounds(
    elapsed: float, poll: float, extra: float, durations: tuple[float, ...], seed: int
) -> None:
    cap = poll + extra
    delay = next_poll_delay(elapsed, poll, cap, random.Random(seed), durations)
    # Never beyond the cap; never sooner than poll_interval, but for the jitter that spreads waits.
    assert (1 - JITTER) * poll - 1e-9 <= delay <= cap


@settings(max_examples=300)
@given(
    true_duration=st.floats(0.01, 3_000),
    durations=durations_learnt,
    seed=st.integers(0, 2**32),
)
def test_no_task_is_seen_later_than_the_cap_after_it_ended(
    true_duration: float, durations: tuple[float, ...], seed: int
) -> None:
    """A new model, a model that drifted, a task far slower or quicker than its peers: at most 60 s late."""
    seen, polls = seen_at(true_duration, durations, seed)
    assert seen - true_duration <= CAP
    # And the wait makes progress: never more polls than poll_interval (jittered) would allow.
    assert polls <= true_duration / ((1 - JITTER) * POLL) + 1


# -- what learning buys ----------------------------------------------------------------------------


@pytest.mark.parametrize("typical", [130.0, 200.0, 600.0])
def test_long_videos_of_a_known_model_are_seen_within_a_few_percent_with_fewer_polls(typical: float) -> None:
    learnt = band(typical)
    late, polls, polls_cold = [], [], []
    for i, true_duration in enumerate(band(typical, count=101)):
        seen, count = seen_at(true_duration, learnt, seed=i)
        late.append((seen - true_duration) / true_duration)
        polls.append(count)
        polls_cold.append(seen_at(true_duration, (), seed=i)[1])
    assert statistics.median(late) <= 0.03
    assert sorted(late)[94] <= 0.08
    assert statistics.mean(polls) <= statistics.mean(polls_cold)


def test_short_images_are_seen_sooner_than_by_the_backoff() -> None:
    learnt = band(40.0)
    aimed = [seen_at(d, learnt, seed=i)[0] - d for i, d in enumerate(band(40.0, count=101))]
    cold = [seen_at(d, (), seed=i)[0] - d for i, d in enumerate(band(40.0, count=101))]
    assert statistics.median(aimed) < statistics.median(cold)


def test_a_task_slower_than_every_recent_peer_is_polled_by_the_backoff() -> None:
    """The model may have drifted: what was learnt no longer says when this task ends."""
    learnt = band(100.0)
    for elapsed in (120.0, 200.0, 1_000.0):
        assert next_poll_delay(elapsed, POLL, CAP, random.Random(3), learnt) == backoff(
            elapsed, POLL, CAP, random.Random(3)
        )


def test_polls_before_the_usual_end_are_sparse() -> None:
    learnt = band(300.0)
    assert next_poll_delay(100.0, POLL, CAP, random.Random(0), learnt) >= (1 - JITTER) * CAP
    # Early on, the interval is the elapsed wait: a task quicker than its peers is not a minute late.
    assert (1 - JITTER) * 10 <= next_poll_delay(10.0, POLL, CAP, random.Random(0), learnt) <= 10
    # ... and the first aimed poll is not pushed past the shortest duration (274 s) for the cap.
    assert next_poll_delay(240.0, POLL, CAP, random.Random(0), learnt) <= 274.0 - 240.0


def test_waits_started_together_drift_apart() -> None:
    learnt = band(200.0)
    rng = random.Random(1)
    assert len({round(next_poll_delay(185.0, POLL, CAP, rng, learnt), 6) for _ in range(20)}) > 10


# -- the store: bounded, recent ---------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.floats(-10, 1e6) | st.just(float("nan")) | st.just(float("inf"))), max_size=400
    )
)
def test_the_store_never_holds_more_than_its_bounds(records: list[tuple[int, float]]) -> None:
    store = RecentDurations(per_model=5, models=7)
    for model, seconds in records:
        store.record(f"model-{model}", seconds)
    assert len(store) <= 7
    for model in range(51):
        known = store.of(f"model-{model}")
        assert len(known) <= 5
        assert list(known) == sorted(known)
        assert all(seconds > 0 for seconds in known)


def test_a_model_twice_as_slow_is_tracked_within_the_window() -> None:
    store = RecentDurations(per_model=16)
    for _ in range(40):
        store.record("veo", 100.0)
    for _ in range(16):
        store.record("veo", 200.0)
    assert store.of("veo") == (200.0,) * 16


def test_the_model_used_least_lately_is_forgotten_first() -> None:
    store = RecentDurations(per_model=4, models=2)
    store.record("a", 1.0)
    store.record("b", 2.0)
    store.record("a", 3.0)  # a used again: b is now the oldest
    store.record("c", 4.0)
    assert store.of("b") == ()
    assert store.of("a") == (1.0, 3.0)
    assert store.of("c") == (4.0,)
    assert store.of(None) == ()


def test_a_wait_learns_only_from_an_end_it_bracketed() -> None:
    assert observed_duration(None, 50.0, 0.0) is None  # never seen running (restart, or ended before the first look)
    assert observed_duration(40.0, 50.0, 0.0) == 45.0
    assert observed_duration(5.0, 50.0, 10.0) is None  # seen running before the wait began: not this wait's clock

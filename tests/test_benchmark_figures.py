"""How the triggerer benchmark turns one run's records into figures (pure: no triggerer is started)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.triggerer import Workload, summarise

WORKLOAD = Workload(waits=2, poll_interval=5.0, max_poll_interval=60.0, shortest=10.0, longest=20.0)
HANDED_OVER = 1000.0


def _figures(terminal_at: list[float], done_at: list[float], lags: list[tuple[float, float]], **probe: Any) -> Any:
    ids = ["t0", "t1"]
    measured = {
        "wall_s": 30.0,
        "cpu_s": 1.0,
        "supervisor_cpu_s": 0.1,
        "rss_before": 0,
        "memory": [],
        "peak_rss": 0,
        "handover": probe.get("handover"),
        "all_created_at": HANDED_OVER + 0.5,
        "lags": lags,
        "connections": 1,
        "collections": probe.get("collections", []),
        "started_at": HANDED_OVER,
        "done_at": dict(zip(ids, done_at, strict=True)),
    }
    after = {
        "tasks": [{"task_id": i, "terminal_at": at} for i, at in zip(ids, terminal_at, strict=True)],
        "requests": {"get": 11},
    }
    return summarise("ours", WORKLOAD, ids, measured, {"requests": {"get": 0}}, after)


def test_a_task_that_ended_before_the_hand_over_is_late_only_from_the_hand_over() -> None:
    figures = _figures(
        [HANDED_OVER - 30, HANDED_OVER + 10], [HANDED_OVER + 4, HANDED_OVER + 12], [(HANDED_OVER + 1, 0)]
    )
    assert figures["ended_before_handover"] == 0.5
    assert figures["latency_p50_s"] == pytest.approx(3.0)  # 4 s after the hand-over, 2 s after its end
    assert figures["latency_from_task_end_p50_s"] == pytest.approx(18.0)  # 34 s and 2 s, both from the task's end


def test_the_stall_at_start_is_shown_apart_from_full_garbage_collections() -> None:
    lags = [(HANDED_OVER + 2.0, 0.6), (HANDED_OVER + 5.0, 0.15), (HANDED_OVER + 6.0, 0.01)]
    collections = [(HANDED_OVER + 1.9, 2, 0.5), (HANDED_OVER + 5.0, 0, 0.1)]  # a young collection is no stall
    figures = _figures([HANDED_OVER + 10] * 2, [HANDED_OVER + 11] * 2, lags, collections=collections)
    assert figures["start_stall_waits_ms"] == pytest.approx(600)
    assert figures["start_full_collection_ms"] == pytest.approx(500)
    assert figures["start_stall_not_collecting_ms"] == pytest.approx(150)


def test_the_floor_sentence_says_what_the_figures_say() -> None:
    from benchmarks.run import floor_comparison

    def results(ours: tuple[float, float], floor: tuple[float, float]) -> Any:
        def run(memory: float, stall: float) -> dict[str, float]:
            return {"rss_per_wait_kib": memory, "start_stall_waits_ms": stall, "start_full_collection_ms": stall - 10}

        return {5000: {"ours": [run(*ours)], "floor": [run(*floor)]}}

    lighter = floor_comparison(results(ours=(23.0, 250.0), floor=(29.0, 340.0)), 5000)
    assert "held 29.0 KiB per wait" in lighter and "stalled the loop 340 ms as its waits started" in lighter
    assert "the hand-over's included, took 330 ms" in lighter  # a collection is not said to be part of the stall
    assert "ours 6.0 KiB less per wait and 90 ms less stall." in lighter
    heavier = floor_comparison(results(ours=(31.5, 400.0), floor=(29.0, 340.0)), 5000)
    assert "ours 2.5 KiB more per wait and 60 ms more stall." in heavier


def test_the_targets_are_read_at_their_own_n_even_when_the_baseline_finished_a_larger_one() -> None:
    from benchmarks.run import FULL, ROWS, Run, targets_n, waits_targets

    def kind(cpu: float) -> list[dict[str, float]]:
        return [{key: 1.0 for _, key, _ in ROWS} | {"cpu_per_wait_ms": cpu}]

    run = Run(quick=False, sizes=[500, 5000, 20000], repeats=1, base_url="", workload=FULL, command="")
    results: Any = {n: {"ours": kind(1.0), "baseline": kind(base)} for n, base in ((500, 2.0), (5000, 4.0))}
    results[20000] = {"ours": kind(1.0), "baseline": kind(1.5)}
    assert targets_n(results, run) == 5000
    cpu = waits_targets(results, run)[0]
    assert cpu == ("CPU per completed wait <= 0.5x the baseline's (N=5,000)", "0.25x", True)

    results[5000]["baseline"][0]["died"] = "Too many open files"
    assert targets_n(results, run) == 20000  # the largest N where both finished, when theirs did not
    assert waits_targets(results, run)[0][2] is False


def test_no_schedule_5_s_apart_sees_95_percent_of_short_images_within_20_percent() -> None:
    """benchmarks/detection_bound.py: the least late mass over every schedule is below any one schedule's,
    and a schedule that reaches it exists (polls at 12, 17, 22 and 27 s: 2.17 + 1.33 + 0.5 s late)."""
    from benchmarks.detection_bound import _late, best_schedule

    def late(polls: list[float]) -> float:
        return sum(_late(a, b, 0.20) for a, b in zip([0.0, *polls], polls, strict=False))

    every_5_s = late([5.0 * k for k in range(1, 15)])
    shifted = late([7.0 + 5.0 * k for k in range(14)])
    assert every_5_s == pytest.approx(5.0)
    assert shifted == pytest.approx(4.0)
    assert best_schedule(0.20, least=True) == pytest.approx(4.0, abs=0.06)  # 8% of the 50 s of short images

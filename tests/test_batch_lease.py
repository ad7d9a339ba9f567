"""The batch lease over any interleaving of runs -- three copies of a try and one of its retry --
that claim, renew, write, release, are cancelled, freeze and thaw (hypothesis, stateful), on a
local folder, with one clock that the machine moves:

- at most one run believes it holds the batch (:meth:`BatchLease.valid`) at any moment;
- a fenced journal write succeeds only for the run the lease names, and never after another
  run claimed it since;
- once a run released the batch with its final event, every run of that try gets that event;
- a run of an earlier try never takes the batch from a later one (it is told it is superseded).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from airflow_provider_mindvideo.batch import lease
from airflow_provider_mindvideo.batch.lease import BatchLease, LeaseLost

SECONDS = 10.0
#: The try of each run: three copies of try 1 (triggerers that lost their heartbeat), one of the retry.
TRIES = (1, 1, 1, 2)
RUNS = len(TRIES)


class Clock:
    """time.monotonic() and time.time() of every run: one clock, moved by the machine only."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + 1_700_000_000.0


class Interleavings(RuleBasedStateMachine):
    clock: Clock  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="mindvideo-lease-"))
        self.result_path = f"file://{self.folder}/manifest.jsonl"
        self.runs = [BatchLease(self.result_path, None, number, seconds=SECONDS) for number in TRIES]
        #: The run that last claimed the batch (its index), and the event each try released.
        self.holder: int | None = None
        self.released: dict[int, dict[str, Any]] = {}

    @rule(seconds=st.floats(0, 3 * SECONDS))
    def time_passes(self, seconds: float) -> None:
        """Runs not called meanwhile are frozen, or slow: they renew nothing."""
        self.clock.now += seconds

    @rule(run=st.integers(0, RUNS - 1))
    def claim(self, run: int) -> None:
        try_number = TRIES[run]
        outcome, record = self.runs[run]._claim()
        if outcome in ("held", "taken"):
            assert try_number not in self.released, "a released batch was claimed again by its own try"
            assert max(self.released, default=0) < try_number, "a stale try took the batch from a later one"
            self.holder = run
        elif outcome == "finished":
            assert record is not None and record["event"] == self.released[try_number]
        elif outcome == "superseded":
            assert record is not None and max(record["try_number"], record.get("wanted_by", 0)) > try_number

    @rule(run=st.integers(0, RUNS - 1))
    def renew(self, run: int) -> None:
        try:
            self.runs[run]._renew()
        except LeaseLost:
            return
        assert run == self.holder

    @rule(run=st.integers(0, RUNS - 1))
    def write_the_journal(self, run: int) -> None:
        try:
            self.runs[run].fenced(lambda: None)
        except LeaseLost:
            return
        assert run == self.holder and TRIES[run] not in self.released

    @rule(run=st.integers(0, RUNS - 1))
    def release(self, run: int) -> None:
        event = {"status": "done", "by": run}
        if self.runs[run]._release(event):
            assert run == self.holder
            self.released[TRIES[run]] = event

    @rule(run=st.integers(0, RUNS - 1))
    def cancelled(self, run: int) -> None:
        """Airflow cancelled the run: it lets go without an event, for a waiting run to take over."""
        if self.runs[run]._release(None):
            assert run == self.holder

    @invariant()
    def one_believer_at_most(self) -> None:
        believers = [n for n, run in enumerate(self.runs) if run.valid()]
        assert len(believers) <= 1, believers
        assert believers in ([], [self.holder])

    def teardown(self) -> None:
        for run in self.runs:
            run.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def test_the_lease_over_any_interleaving(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(lease, "time", clock)
    Interleavings.clock = clock
    run_state_machine_as_test(
        Interleavings,
        settings=settings(
            max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )

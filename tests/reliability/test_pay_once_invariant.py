"""The pay-once invariant, stated and checked over any sequence of faults (hypothesis, stateful).

One task instance of MindVideoGenerateOperator (the operator and hook as shipped, on the
worker path) runs try after try against the emulator, while the machine below injects what a
hostile world does between and during tries: lost and unreadable create answers, 5xx and 429
bursts, refusals at creation, slow and failing remote tasks, a worker killed between the
create and the record, retries and clears. After every try and at the end:

- each try created at most one remote task (charges counted by the emulator);
- the task instance never has more than one remote task that did not fail;
- it never pays for more than ``max_generations`` tasks.

The emulator answers a new task with 201, so the walk knows what it created; the bound for an
API that cannot be told from a replay is checked in ``tests/test_submission.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from airflow_provider_mindvideo.client.errors import MindVideoError
from airflow_provider_mindvideo.client.protocol import RetryPolicy
from airflow_provider_mindvideo.emulator import EmulatorConfig, MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.operators import MindVideoGenerateOperator

MAX_GENERATIONS = 4
RETRIES = RetryPolicy(max_retries=2, deadline=5.0, backoff=0.01, max_backoff=0.02)
CREATE_FAULTS = st.sampled_from(
    [
        {"kind": "drop"},  # created, answer lost
        {"kind": "truncated"},
        {"kind": "malformed_json"},
        {"kind": "missing_fields"},
        {"kind": "status", "status": 503},
        {"kind": "status", "status": 429, "retry_after": "0"},
        {"kind": "html", "status": 502},
    ]
)
# How a task created in a try ends.
TASK_FATES = st.sampled_from(["refused at once", "fails later", "slow", "succeeds"])


class WorkerKilled(BaseException):
    """Stands for SIGKILL between the create and the XCom record: nothing after it runs."""


@dataclass
class TaskInstance:
    """What the operator reads of Airflow's runtime task instance, and where it writes."""

    try_number: int = 0
    dag_id: str = "mv_invariant"
    task_id: str = "generate"
    run_id: str = "manual__invariant"
    map_index: int = -1
    xcom: dict[str, Any] = field(default_factory=dict)
    die_on_push: bool = False

    def xcom_push(self, key: str, value: Any) -> None:
        if self.die_on_push:
            raise WorkerKilled
        self.xcom[key] = value


class PayOnce(RuleBasedStateMachine):
    emulator: MindVideoEmulator  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.emulator.state.reset()
        self.ti = TaskInstance()
        self.succeeded = False
        self.charges_per_try: list[int] = []

    # One rule, always enabled: whether a try succeeded depends on the machine's speed (a try's
    # 0.6 s wait), so a rule enabled by it would make hypothesis draw differently on a replay.
    @rule(
        fate=TASK_FATES,
        create_fault=st.none() | CREATE_FAULTS,
        fault_times=st.integers(1, 3),
        poll_faults=st.integers(0, 3),
        killed=st.booleans(),
    )
    def a_try(
        self, fate: str, create_fault: dict[str, Any] | None, fault_times: int, poll_faults: int, killed: bool
    ) -> None:
        """Airflow runs the next try; ``fate`` is how a task created now would end; the world misbehaves.

        After a success the next try is a user clearing the finished task: it must find the task it
        paid for, whatever was drawn for it.
        """
        if self.succeeded:
            self.clear()
            return
        self.emulator.state.scripts.clear()
        if fate == "refused at once":
            self.emulator.script("", "failed", queued_seconds=0, processing_seconds=0, times=1)
        elif fate == "fails later":
            self.emulator.script("", "failed", times=1)
        elif fate == "slow":
            self.emulator.script("", "succeeded", processing_seconds=1.0, times=1)  # outlives this try's wait
        if create_fault is not None:
            self.emulator.add_fault(route="create", times=fault_times, **create_fault)
        if poll_faults:
            self.emulator.add_fault("status", route="get", status=503, times=poll_faults)
        self._run_try(killed)

    def clear(self) -> None:
        """A user clears the finished task: a new try, which must find the task it paid for."""
        before = self.emulator.state.charged_tasks
        self._run_try(killed=False)
        assert self.emulator.state.charged_tasks == before, "a clear after success paid again"

    def _run_try(self, killed: bool) -> None:
        self.ti.try_number += 1
        self.ti.die_on_push = killed
        operator = MindVideoGenerateOperator(
            task_id="generate",
            model="gpt-image-2",
            input={"prompt": "an invariant lighthouse"},
            deferrable=False,
            poll_interval=0.02,
            max_poll_interval=0.05,
            timeout=0.6,
            max_generations=MAX_GENERATIONS,
            retries=10,
        )
        operator.__dict__["hook"] = MindVideoHook(retry_policy=RETRIES)
        before = self.emulator.state.charged_tasks
        try:
            operator.execute({"ti": self.ti})  # type: ignore[arg-type]
            self.succeeded = True
        except (MindVideoError, WorkerKilled, Exception):
            pass  # a failed try: Airflow retries it (the next a_try)
        finally:
            operator.hook.close()
        self.charges_per_try.append(self.emulator.state.charged_tasks - before)

    @invariant()
    def each_try_created_at_most_one_task(self) -> None:
        assert all(charges <= 1 for charges in self.charges_per_try), self.charges_per_try

    @invariant()
    def at_most_one_remote_task_that_did_not_fail(self) -> None:
        alive = [t for t in self.emulator.state.snapshot()["tasks"] if t["status"] not in ("failed", "cancelled")]
        assert len(alive) <= 1, alive

    @invariant()
    def never_more_than_max_generations(self) -> None:
        assert self.emulator.state.charged_tasks <= MAX_GENERATIONS


@pytest.fixture
def invariant_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[MindVideoEmulator]:
    config = EmulatorConfig(queued_seconds=0.01, processing_seconds={"image": 0.05, "video": 0.05})
    with MindVideoEmulator(config=config) as emulator:
        conn = {"conn_type": "mindvideo", "host": emulator.base_url, "password": emulator.api_key}
        monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps({**conn, "extra": {"timeout": 1}}))
        yield emulator


def test_each_try_pays_at_most_once_under_any_faults(invariant_emulator: MindVideoEmulator) -> None:
    PayOnce.emulator = invariant_emulator
    run_state_machine_as_test(
        PayOnce,
        settings=settings(
            max_examples=20,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )

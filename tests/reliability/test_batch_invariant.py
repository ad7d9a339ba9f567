"""The batch's pay-once and spend-ceiling invariants over any sequence of tries and faults (hypothesis, stateful).

One batch task instance (the trigger as shipped, against the emulator) runs try after try,
while the machine injects lost and refused creates, 5xx and 429 bursts, remote tasks that fail
at once or later, downloads of the outputs (saved by the trigger) that meet a 5xx, a proxy's
HTML page or a late answer, and triggerers killed mid-batch, saves in flight (the same try then
runs again). After every
try, with the emulator's own counters:

- each item was charged at most once in each try (restarts of that try included);
- no item ever has more than one remote task that did not fail;
- the batch never pays for more than ``items * max_generations`` tasks;
- it never spends more than ``max_cost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from airflow_provider_mindvideo.batch.plan import dump_work_list, entries_from_list, work_list
from airflow_provider_mindvideo.batch.trigger import MindVideoBatchTrigger
from airflow_provider_mindvideo.emulator import EmulatorConfig, MindVideoEmulator

ITEMS = 4
MAX_GENERATIONS = 3
IMAGE_COST = 0.0135
CREATE_FAULTS = st.sampled_from(
    [
        {"kind": "drop"},  # created, answer lost
        {"kind": "status", "status": 503},
        {"kind": "status", "status": 429, "retry_after": "0"},
        {"kind": "truncated"},
    ]
)
# A save's trouble must never turn into a charge: the trigger saves while others generate.
FILE_FAULTS = st.sampled_from(
    [
        {"kind": "status", "status": 503},
        {"kind": "html"},
        {"kind": "delay", "seconds": 0.2},
    ]
)
FATES = st.sampled_from(["refused at once", "fails later", "succeeds"])


@dataclass
class Ti:
    dag_id: str = "mv_batch_invariant"
    task_id: str = "generate"
    run_id: str = "manual__invariant"
    map_index: int = -1


class BatchPaysOnce(RuleBasedStateMachine):
    emulator: MindVideoEmulator  # set by the test
    folder: Path

    def __init__(self) -> None:
        super().__init__()
        self.emulator.state.reset()
        # A new task instance each example: its tries start at 1 again (the lease names the try).
        for stale in [*self.folder.glob("*.jsonl"), *self.folder.glob("*.lease.*")]:
            stale.unlink()
        shutil.rmtree(self.folder / "media", ignore_errors=True)
        items = work_list(entries_from_list([{"prompt": f"item {i}"} for i in range(ITEMS)]), "gpt-image-2", Ti())
        (self.folder / "work.jsonl").write_text(dump_work_list(items))
        self.try_number = 0
        self.max_cost: float | None = None
        self.charges_per_try: list[Counter[str]] = []

    @rule(
        fates=st.lists(FATES, min_size=ITEMS, max_size=ITEMS),
        create_fault=st.none() | CREATE_FAULTS,
        file_fault=st.none() | FILE_FAULTS,
        killed_after=st.none() | st.integers(0, ITEMS),
        ceiling=st.none() | st.integers(1, ITEMS * MAX_GENERATIONS),
    )
    def a_try(
        self,
        fates: list[str],
        create_fault: dict[str, Any] | None,
        file_fault: dict[str, Any] | None,
        killed_after: int | None,
        ceiling: int | None,
    ) -> None:
        """Airflow runs the next try; each item's new task would meet its fate; the triggerer may die mid-batch."""
        if self.max_cost is None and ceiling is not None and self.try_number == 0:
            self.max_cost = ceiling * IMAGE_COST + IMAGE_COST / 3  # fixed for the task instance
        self.try_number += 1
        state = self.emulator.state
        state.scripts.clear()
        for i, fate in enumerate(fates):
            if fate == "refused at once":
                self.emulator.script(f"item {i}", "failed", queued_seconds=0, processing_seconds=0, times=1)
            elif fate == "fails later":
                self.emulator.script(f"item {i}", "failed", times=1)
        if create_fault is not None:
            self.emulator.add_fault(route="create", times=1, **create_fault)
        if file_fault is not None:
            self.emulator.add_fault(route="files", times=2, **file_fault)
        before = Counter(task["prompt"] for task in state.snapshot()["tasks"])
        if killed_after is not None:
            asyncio.run(self._run_until_killed(killed_after))
        asyncio.run(self._run())
        after = Counter(task["prompt"] for task in state.snapshot()["tasks"])
        self.charges_per_try.append(after - before)

    def _trigger(self) -> MindVideoBatchTrigger:
        return MindVideoBatchTrigger(
            f"file://{self.folder}/work.jsonl",
            f"file://{self.folder}/manifest.jsonl",
            try_number=self.try_number,
            max_generations=MAX_GENERATIONS,
            max_active=2,
            max_cost=self.max_cost,
            poll_interval=0.02,
            max_poll_interval=0.05,
            progress_interval=0.1,
            download_to=f"file://{self.folder}/media",
            download_allow_private_urls=True,
        )

    async def _run(self) -> None:
        events = [event.payload async for event in self._trigger().run()]
        assert len(events) == 1 and events[0]["status"] == "done", events

    async def _run_until_killed(self, creates: int) -> None:
        runner = asyncio.ensure_future(self._run())
        start = self.emulator.state.requests["create"]
        while not runner.done() and self.emulator.state.requests["create"] - start < creates:
            await asyncio.sleep(0.005)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    @invariant()
    def each_item_pays_at_most_once_per_try(self) -> None:
        for charges in self.charges_per_try:
            assert all(count <= 1 for count in charges.values()), self.charges_per_try

    @invariant()
    def at_most_one_task_per_item_that_did_not_fail(self) -> None:
        alive = Counter(
            t["prompt"] for t in self.emulator.state.snapshot()["tasks"] if t["status"] not in ("failed", "cancelled")
        )
        assert all(count <= 1 for count in alive.values()), alive

    @invariant()
    def never_more_than_max_generations_per_item(self) -> None:
        assert self.emulator.state.charged_tasks <= ITEMS * MAX_GENERATIONS

    @invariant()
    def never_past_the_ceiling(self) -> None:
        if self.max_cost is not None:
            assert self.emulator.state.total_charged <= self.max_cost + 1e-9


@pytest.fixture
def invariant_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[MindVideoEmulator]:
    config = EmulatorConfig(queued_seconds=0.01, processing_seconds={"image": 0.05, "video": 0.05})
    with MindVideoEmulator(config=config) as emulator:
        conn = {"conn_type": "mindvideo", "host": emulator.base_url, "password": emulator.api_key}
        monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps({**conn, "extra": {"timeout": 1}}))
        yield emulator


def test_a_batch_pays_once_per_item_and_stays_under_max_cost_under_any_faults(
    invariant_emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    BatchPaysOnce.emulator = invariant_emulator
    BatchPaysOnce.folder = tmp_path
    run_state_machine_as_test(
        BatchPaysOnce,
        settings=settings(
            max_examples=12,
            stateful_step_count=5,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )

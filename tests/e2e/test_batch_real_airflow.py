"""MindVideoBatchGenerateOperator on real Airflow processes: a killed worker, a killed triggerer, a 429 storm.

One cluster for the module (api-server, scheduler, dag-processor, triggerer; SQLite and the
LocalExecutor; a throwaway Airflow home), two emulators in processes of their own: one plain,
one with a rate limit (``--rate-limit``) behind the ``mindvideo_storm`` connection.
Everything is stopped by process group at the end, also when a test fails. Each test resets
the emulator it uses and reads what it charged: charges per prompt, and creates per
Idempotency-Key (the first is the charge, every other one a free replay).

What part one's ``dag.test()`` runs cover is not repeated here (tests/test_batch_dags.py):
items regenerated on retry, the ceiling reached halfway, inputs files with bad lines.
Run alone with ``pytest -m e2e``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.processes import BIN, LocalAirflow, wait_for

pytestmark = pytest.mark.e2e

DAG_ID = "mindvideo_batch_e2e"
DAGS = Path(__file__).resolve().parent / "dags"
IMAGE_COST = 0.0135
# Requests a second the storm emulator admits per key: far below what five items in flight ask.
STORM_RATE = 3


class Emulator:
    """An emulator process of the cluster, seen through its control API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def state(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/_emulator/state", timeout=30).json())

    def reset(self) -> None:
        httpx.post(f"{self.url}/_emulator/reset", timeout=30).raise_for_status()

    def control(self, what: str, **body: Any) -> None:
        httpx.post(f"{self.url}/_emulator/{what}", json=body, timeout=30).raise_for_status()

    def charges_by_prompt(self) -> Counter[str]:
        return Counter(task["prompt"] for task in self.state()["tasks"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalAirflow, Emulator, Emulator]]:
    cluster = LocalAirflow(tmp_path_factory.mktemp("airflow-batch-e2e"), dags=DAGS)
    try:
        plain = Emulator(cluster.start_emulator("emulator"))
        storm = Emulator(cluster.start_emulator("emulator-storm", "--rate-limit", str(STORM_RATE)))
        cluster.connect("mindvideo_default", plain.url)
        cluster.connect("mindvideo_storm", storm.url)
        cluster.start_airflow(DAG_ID)
        yield cluster, plain, storm
    finally:
        cluster.stop_all()


def write_prompts(cluster: LocalAirflow, name: str, prompts: list[str]) -> str:
    path = cluster.home / f"{name}.csv"
    path.write_text("prompt\n" + "".join(f'"{prompt}"\n' for prompt in prompts))
    return path.as_uri()


def trigger(cluster: LocalAirflow, **conf: str) -> str:
    return cluster.trigger(DAG_ID, conf)


def finished(cluster: LocalAirflow, run_id: str, timeout: float = 300) -> str:
    def state() -> str | None:
        rows = cluster.query("select state from dag_run where dag_id = ? and run_id = ?", DAG_ID, run_id)
        return rows[0][0] if rows and rows[0][0] in ("success", "failed") else None

    return str(wait_for(state, "the run to finish", timeout=timeout))


def tries(cluster: LocalAirflow, run_id: str) -> int:
    ((number,),) = cluster.query(
        "select try_number from task_instance where dag_id = ? and run_id = ? and task_id = 'generate'", DAG_ID, run_id
    )
    return int(number)


def summary(cluster: LocalAirflow, run_id: str) -> dict[str, Any]:
    ((value,),) = cluster.query(
        "select value from xcom where dag_id = ? and run_id = ? and task_id = 'generate' and key = 'return_value'",
        DAG_ID,
        run_id,
    )
    return dict(json.loads(value))


def restart_triggerer(airflow: LocalAirflow) -> None:
    """kill -9 the running triggerer and start another (tests may run in any order: any name)."""
    running = [name for name in airflow.processes if name.startswith("triggerer")]
    airflow.kill(running[0])
    airflow.start(f"triggerer-{len(running) + 1}-{time.monotonic_ns()}", str(BIN / "airflow"), "triggerer")


def test_a_worker_killed_while_saving_outputs_retries_without_paying_again(
    cluster: tuple[LocalAirflow, Emulator, Emulator],
) -> None:
    airflow, emulator, _ = cluster
    emulator.reset()
    prompts = [f"e2e batch, worker killed while saving {i}" for i in range(5)]
    # The trigger's five saves meet a 503 (a blip: it leaves them to the worker), and the worker's
    # five downloads are answered 40 s late: the worker is busy saving when killed.
    emulator.control("faults", kind="status", route="files", status=503, times=5)
    emulator.control("faults", kind="delay", route="files", seconds=40, times=5)
    # 10 s at MindVideo: a trigger that fires within seconds of the deferral can meet Airflow's own
    # race (the executor's late "success" for the deferring process marks the resumed try
    # up_for_retry), which would add a try this test does not make.
    emulator.control("scripts", match="worker killed", outcome="succeeded", processing_seconds=10)
    destination = airflow.home / "media" / "worker-killed"
    run_id = trigger(
        airflow, inputs_path=write_prompts(airflow, "worker-killed", prompts), download_to=destination.as_uri()
    )

    wait_for(lambda: emulator.state()["requests"].get("files", 0) >= 6, "the worker to start saving", timeout=240)
    ((pid,),) = wait_for(
        lambda: airflow.query(
            "select pid from task_instance where run_id = ? and task_id = 'generate' and state = 'running'"
            " and pid is not null",
            run_id,
        ),
        "the resumed task's process",
    )
    os.kill(int(pid), signal.SIGKILL)  # after the trigger's event, mid-download, before any XCom push

    assert finished(airflow, run_id) == "success"
    assert tries(airflow, run_id) == 2
    charges = emulator.charges_by_prompt()
    assert sorted(charges) == sorted(prompts) and set(charges.values()) == {1}
    # Try 2 replayed each item's key once (free) and re-attached: nothing was generated again.
    assert emulator.state()["creates_per_key"] == {"2": 5}
    assert summary(airflow, run_id)["counts"]["succeeded"] == 5
    assert len(list(destination.glob("*.png"))) == 5


def test_a_triggerer_killed_while_saving_outputs_keeps_the_files_and_pays_nothing_again(
    cluster: tuple[LocalAirflow, Emulator, Emulator],
) -> None:
    # The trigger saves each item's outputs as it finishes (the worker only what is missing):
    # saving is the triggerer's, so it is the triggerer that dies mid-download here.
    airflow, emulator, _ = cluster
    emulator.reset()
    prompts = [f"e2e batch, killed while saving {i}" for i in range(5)]
    # Two downloads go through; the next three are answered 40 s late: the triggerer is saving when killed.
    emulator.control("faults", kind="delay", route="files", seconds=40, after=2, times=3)
    emulator.control("scripts", match="killed while saving", outcome="succeeded", processing_seconds=4)
    destination = airflow.home / "media" / "triggerer-killed-saving"
    run_id = trigger(
        airflow, inputs_path=write_prompts(airflow, "killed-saving", prompts), download_to=destination.as_uri()
    )

    def saving() -> bool:
        return len(list(destination.glob("*.png"))) >= 2 and emulator.state()["requests"].get("files", 0) >= 5

    wait_for(saving, "two files stored and three downloads hanging", timeout=240)
    stored = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in destination.glob("*.png")}
    restart_triggerer(airflow)

    assert finished(airflow, run_id) == "success"
    assert tries(airflow, run_id) == 1  # the restarted triggerer took the batch over, saving included
    charges = emulator.charges_by_prompt()
    assert sorted(charges) == sorted(prompts) and set(charges.values()) == {1}
    # Every item was created before the kill: the new trigger replayed each key once (free).
    assert emulator.state()["creates_per_key"] == {"2": 5}
    assert summary(airflow, run_id)["counts"]["succeeded"] == 5
    after = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in destination.glob("*.png")}
    assert len(after) == 5 and not list(destination.glob(".*.partial"))
    assert {name: after[name] for name in stored} == stored  # files stored before the kill were not written again


def test_a_triggerer_killed_mid_batch_costs_no_charge_and_at_most_one_replay_per_item(
    cluster: tuple[LocalAirflow, Emulator, Emulator],
) -> None:
    airflow, emulator, _ = cluster
    emulator.reset()
    prompts = [f"e2e batch, slow, triggerer killed {i}" for i in range(20)]
    # Five in flight at a time, each 4 s at MindVideo: the batch takes about 16 s of creating and waiting.
    emulator.control("scripts", match="triggerer killed", outcome="succeeded", processing_seconds=4)
    run_id = trigger(airflow, inputs_path=write_prompts(airflow, "triggerer-killed", prompts))

    created = wait_for(lambda: 5 <= (n := emulator.state()["charged_tasks"]) < 20 and n, "the batch to be half made")
    restart_triggerer(airflow)

    assert finished(airflow, run_id) == "success"
    assert tries(airflow, run_id) == 1  # the restarted triggerer took the batch over: no retry needed
    charges = emulator.charges_by_prompt()
    assert sorted(charges) == sorted(prompts) and set(charges.values()) == {1}
    state = emulator.state()
    assert state["total_charged"] == pytest.approx(20 * IMAGE_COST)
    per_key = {int(n): keys for n, keys in state["creates_per_key"].items()}
    assert set(per_key) <= {1, 2} and sum(per_key.values()) == 20, per_key
    # The restarted trigger walked every item again: those created before the kill were replayed, once.
    assert per_key.get(2, 0) >= created, per_key
    assert summary(airflow, run_id)["counts"]["succeeded"] == 20


def test_a_429_storm_is_ridden_out_paying_once_per_item(cluster: tuple[LocalAirflow, Emulator, Emulator]) -> None:
    airflow, _, storm = cluster
    storm.reset()
    prompts = [f"e2e batch in a 429 storm {i}" for i in range(15)]
    run_id = trigger(airflow, inputs_path=write_prompts(airflow, "storm", prompts), conn_id="mindvideo_storm")

    assert finished(airflow, run_id) == "success"
    state = storm.state()
    assert state["rate_limited"] > 0, "the storm never came"
    assert tries(airflow, run_id) == 1
    assert state["charged_tasks"] == 15 and set(storm.charges_by_prompt().values()) == {1}
    assert summary(airflow, run_id)["counts"]["succeeded"] == 15

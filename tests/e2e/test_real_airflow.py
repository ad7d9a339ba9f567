"""The content pipeline on real Airflow processes: api-server, scheduler, dag-processor, triggerer.

SQLite and the LocalExecutor, a throwaway Airflow home, the emulator in a process of its own,
everything on 127.0.0.1 and stopped by process group at the end, also when a test fails.
Run alone with ``pytest -m e2e``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.processes import BIN, ROOT, LocalAirflow, wait_for

pytestmark = pytest.mark.e2e

DAG_ID = "mindvideo_content_pipeline"
# Long enough that the mapped sensors are certainly deferred when the triggerer is killed.
IMAGE_SECONDS = 12


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalAirflow, str]]:
    cluster = LocalAirflow(tmp_path_factory.mktemp("airflow-e2e"), dags=ROOT / "example_dags")
    try:
        emulator = cluster.start_emulator("emulator", "--image-seconds", str(IMAGE_SECONDS))
        cluster.connect("mindvideo_default", emulator)
        cluster.start_airflow(DAG_ID)
        # The example runs only when triggered: unpausing it must not start (and pay for) a run.
        assert not cluster.query("select 1 from dag_run where dag_id = ?", DAG_ID)
        yield cluster, emulator
    finally:
        cluster.stop_all()


def trigger(cluster: LocalAirflow, conf: dict[str, Any]) -> str:
    run_id = f"e2e__{time.time_ns()}"
    return cluster.trigger(DAG_ID, {"destination": (cluster.home / "media" / run_id).as_uri(), **conf}, run_id)


def run_state(cluster: LocalAirflow, run_id: str) -> str:
    return str(cluster.query("select state from dag_run where run_id = ?", run_id)[0][0])


def charged(emulator: str, prompts: list[str]) -> int:
    """Remote tasks charged for these prompts (each test uses prompts of its own)."""
    tasks = httpx.get(f"{emulator}/_emulator/state").json()["tasks"]
    return sum(1 for task in tasks if task["prompt"] in prompts)


def task_logs(cluster: LocalAirflow, run_id: str, task_id: str) -> Path:
    return cluster.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"


def deferred_sensors(cluster: LocalAirflow, run_id: str) -> int:
    logs = task_logs(cluster, run_id, "wait").glob("map_index=*/attempt=1.log")
    return sum(1 for log in logs if "Pausing task as DEFERRED" in log.read_text())


def test_pipeline_survives_a_killed_triggerer_and_pays_once(cluster: tuple[LocalAirflow, str]) -> None:
    airflow, emulator = cluster
    prompts = [f"e2e triggerer test {i}" for i in range(5)]
    run_id = trigger(airflow, {"prompts": prompts, "size": "16:9"})

    wait_for(lambda: deferred_sensors(airflow, run_id) == 5, "all five sensors to be deferred")
    airflow.kill("triggerer")
    airflow.start("triggerer-2", str(BIN / "airflow"), "triggerer")

    wait_for(lambda: run_state(airflow, run_id) in ("success", "failed"), "the run to finish", timeout=240)
    assert run_state(airflow, run_id) == "success", airflow.query(
        "select task_id, map_index, state, try_number from task_instance where run_id = ?", run_id
    )
    assert charged(emulator, prompts) == 5
    states = airflow.query("select task_id, map_index, state, try_number from task_instance where run_id = ?", run_id)
    assert all(state == "success" and tries == 1 for _, _, state, tries in states), states
    # Every sensor's wait ran in a triggerer process: each has the trigger's own log, fired.
    trigger_logs = list(task_logs(airflow, run_id, "wait").glob("map_index=*/attempt=1.log.trigger.*.log"))
    fired = {log.parent.name for log in trigger_logs if "Trigger fired event" in log.read_text()}
    assert fired == {f"map_index={i}" for i in range(5)}
    assert len(list((airflow.home / "media" / run_id).glob("task_*_0.png"))) == 5


def test_worker_killed_right_after_submit_retries_and_pays_once(cluster: tuple[LocalAirflow, str]) -> None:
    airflow, emulator = cluster
    prompts = ["a worker that will not see its answer"]
    # The create request is answered 60 s late: the remote task exists while the worker waits.
    httpx.post(
        f"{emulator}/_emulator/faults", json={"kind": "delay", "route": "create", "seconds": 60}
    ).raise_for_status()
    run_id = trigger(airflow, {"prompts": prompts, "size": "1:1"})

    wait_for(lambda: charged(emulator, prompts), "the submit to reach MindVideo")
    ((pid,),) = wait_for(
        lambda: airflow.query(
            "select pid from task_instance where run_id = ? and task_id = 'submit' and state = 'running'"
            " and pid is not null",
            run_id,
        ),
        "the running submit task",
    )
    os.kill(int(pid), signal.SIGKILL)  # the task process, mid-request, before any XCom push

    wait_for(lambda: run_state(airflow, run_id) in ("success", "failed"), "the run to finish", timeout=240)
    assert run_state(airflow, run_id) == "success"
    ((tries,),) = airflow.query("select try_number from task_instance where run_id = ? and task_id = 'submit'", run_id)
    assert tries == 2
    assert charged(emulator, prompts) == 1


#: Each example's conf for the test: its own prompts where it takes any, and its files in the test's home.
EXAMPLES: dict[str, dict[str, Any]] = {
    "mindvideo_content_pipeline": {"prompts": ["a manual run's fox"], "destination": True},
    "mindvideo_daily_batch": {"destination": True},
    "mindvideo_image_edit": {},
    "mindvideo_review_pipeline": {"prompts": ["a manual run's whale"], "destination": True},
    "mindvideo_taskflow": {},
    "mindvideo_video": {},
}


def test_every_example_runs_when_triggered_without_a_logical_date(cluster: tuple[LocalAirflow, str]) -> None:
    # Airflow 3 gives a run triggered from the UI, `airflow dags trigger` or the REST API with
    # `logical_date: null` no logical date, and so no `ds`: the daily batch failed to render on
    # every manual trigger.
    airflow, _ = cluster
    runs = {}
    for dag_id, conf in EXAMPLES.items():
        wait_for(lambda dag_id=dag_id: airflow.query("select 1 from dag where dag_id = ?", dag_id), f"{dag_id} parsed")
        if conf.get("destination"):
            conf = {**conf, "destination": (airflow.home / "media" / dag_id).as_uri()}
        runs[dag_id] = airflow.post_run(dag_id, {"logical_date": None, "conf": conf})
    review_run = runs.pop("mindvideo_review_pipeline")

    def settled() -> bool:
        review = airflow.query("select state from task_instance where run_id = ? and task_id = 'review'", review_run)
        finished = all(run_state(airflow, run_id) in ("success", "failed") for run_id in runs.values())
        return finished and review == [("awaiting_input",)]

    wait_for(settled, "every example to finish (the review: to wait for a person)", timeout=300)
    assert {dag_id: run_state(airflow, run_id) for dag_id, run_id in runs.items()} == dict.fromkeys(runs, "success")
    dates = airflow.query(
        f"select logical_date from dag_run where run_id in ({','.join('?' * 6)})", *runs.values(), review_run
    )
    assert dates == [(None,)] * 6

"""What the scenarios read and assert: runs and task instances from the metadata database, charges from the emulator."""

from __future__ import annotations

import base64
import html
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scripts.e2e_distributed.config import check, log
from scripts.e2e_distributed.deployment import Deployment
from scripts.processes import process_tree, wait_for


def trigger_dag(deployment: Deployment, dag_id: str, conf: dict[str, Any]) -> str:
    run_id = f"dist__{dag_id}__{time.time_ns()}"
    deployment.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))
    return run_id


def deferred_trigger(deployment: Deployment, run_id: str, task_id: str = "generate") -> int:
    """The trigger of the run's task once it is deferred (waits up to 10 minutes)."""
    ((trigger_id,),) = wait_for(
        lambda: deployment.query(
            "select trigger_id from task_instance where run_id = %s and task_id = %s"
            " and state = 'deferred' and trigger_id is not null",
            run_id,
            task_id,
        ),
        f"{task_id} to be deferred",
        timeout=600,
    )
    return int(trigger_id)


def run_state(deployment: Deployment, run_id: str) -> str | None:
    rows = deployment.query("select state from dag_run where run_id = %s", run_id)
    return str(rows[0][0]) if rows else None


def wait_for_run(deployment: Deployment, run_id: str, timeout: float) -> float:
    """Wait until the run ends; assert it succeeded; return its wall time in seconds."""
    wait_for(lambda: run_state(deployment, run_id) in ("success", "failed"), f"run {run_id} to end", timeout)
    states = deployment.query(
        "select task_id, state, count(*), max(try_number) from task_instance where run_id = %s"
        " group by task_id, state order by task_id",
        run_id,
    )
    check(run_state(deployment, run_id) == "success", f"run {run_id} failed: {states}")
    ((seconds,),) = deployment.query(
        "select extract(epoch from end_date - start_date) from dag_run where run_id = %s", run_id
    )
    log(f"run {run_id} succeeded in {float(seconds):.0f} s: {states}")
    return float(seconds)


def charged_for(deployment: Deployment, marker: str) -> tuple[int, int]:
    """(remote tasks charged, distinct prompts among them) for prompts containing `marker`."""
    tasks = [t for t in deployment.emulator_state()["tasks"] if marker in (t["prompt"] or "")]
    return len(tasks), len({t["prompt"] for t in tasks})


def ti_states(deployment: Deployment, run_id: str, task_id: str) -> dict[str, int]:
    rows = deployment.query(
        "select state, count(*) from task_instance where run_id = %s and task_id = %s group by state", run_id, task_id
    )
    return {str(state): int(count) for state, count in rows}


def running_on(deployment: Deployment, run_id: str, worker: str) -> dict[str, int]:
    """Task instances of the run running in this worker's processes, by task id."""
    mine = process_tree(deployment.processes[worker].pid)
    rows = deployment.query(
        "select task_id, pid from task_instance where run_id = %s and state = 'running' and pid is not null", run_id
    )
    found: dict[str, int] = {}
    for task_id, pid in rows:
        if int(pid) in mine:
            found[task_id] = found.get(task_id, 0) + 1
    return found


def triggers_of(deployment: Deployment, job_id: int) -> set[int]:
    return {row[0] for row in deployment.query("select id from trigger where triggerer_id = %s", job_id)}


def generating_peak(tasks: list[dict[str, Any]]) -> int:
    """The most of these remote tasks created and not yet terminal at one moment."""
    moments = sorted(
        [(t["created_at"], 1) for t in tasks] + [(t["terminal_at"], -1) for t in tasks if t["terminal_at"] is not None]
    )
    peak = running = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    return peak


def trigger_kwargs_text(fernet: Any, stored: str) -> str:
    """A trigger row's kwargs as JSON text: Fernet-encrypted, or plain (Airflow reads both)."""
    return stored if stored.startswith("{") else str(fernet.decrypt(stored.encode()).decode())


def trigger_deadlines(deployment: Deployment, run_id: str) -> dict[int, tuple[float, Any]]:
    """Per map index: the trigger's own deadline kwarg and the task's deferral timeout."""
    from airflow.models.crypto import get_fernet

    fernet = get_fernet()
    rows = deployment.query(
        "select ti.map_index, t.kwargs, ti.trigger_timeout from task_instance ti join trigger t on t.id = ti.trigger_id"
        " where ti.run_id = %s and ti.state = 'deferred'",
        run_id,
    )
    found: dict[int, tuple[float, Any]] = {}
    for map_index, kwargs, timeout in rows:
        text = trigger_kwargs_text(fernet, kwargs)
        match = re.search(r'"deadline":\s*([0-9.]+)', text)
        check(match is not None, f"no deadline in the trigger of map index {map_index}")
        assert match is not None
        found[int(map_index)] = (float(match.group(1)), timeout)
    return found


def held_by(deployment: Deployment, run_id: str, job_id: int, expected: int) -> Callable[[], bool]:
    """Whether this triggerer holds `expected` of the run's deferred waits, when called."""

    def count() -> bool:
        return expected == int(
            deployment.query(
                "select count(*) from trigger t join task_instance ti on ti.trigger_id = t.id"
                " where ti.run_id = %s and t.triggerer_id = %s",
                run_id,
                job_id,
            )[0][0]
        )

    return count


def key_forms(key: str) -> set[str]:
    """The key as logs, JSON, URLs, HTML and headers may spell it."""
    return {
        key,
        json.dumps(key)[1:-1],
        key.replace("/", "\\/"),
        urllib.parse.quote(key, safe=""),
        urllib.parse.quote_plus(key),
        html.escape(key),
        base64.b64encode(key.encode()).decode().rstrip("="),
        base64.b64encode(f"Bearer {key}".encode()).decode().rstrip("="),
        key.encode().hex(),
        repr(key.encode())[2:-1],
    }


def files_with_key(folder: Path, forms: set[str]) -> list[str]:
    found = []
    needles = [form.encode() for form in forms]
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                content = path.read_bytes()
            except OSError:
                continue
            if any(needle in content for needle in needles):
                found.append(str(path))
    return found

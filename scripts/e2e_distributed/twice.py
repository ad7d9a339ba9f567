"""Scenario "twice": one batch trigger run by two triggerers at once, against the emulator's books.

The triggerer holding the batch is frozen (SIGSTOP, its whole process tree: a lost heartbeat, a
paused VM) until Airflow re-assigns its trigger to the other triggerer and that one's run has
taken the batch over (batch/lease.py); then it is thawed (SIGCONT) and runs on, its copy of the
trigger believing for a moment the batch is its own. The remote tasks are held the whole time.
Checked: every item charged once, one file each, the run succeeds, and the journal (manifest,
intents, lease) is whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scripts.e2e_distributed.checks import charged_for, deferred_trigger, trigger_dag, wait_for_run
from scripts.e2e_distributed.config import check, env_int, log
from scripts.e2e_distributed.deployment import Deployment, start_triggerer
from scripts.processes import process_tree, wait_for

TWICE_ITEMS = env_int("MINDVIDEO_DIST_TWICE_ITEMS", 40)


def _signal_tree(deployment: Deployment, name: str, sig: signal.Signals) -> set[int]:
    """Send ``sig`` to the triggerer and every process it started; their pids."""
    root = deployment.processes[name].pid
    pids = {root} | process_tree(root)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
    return pids


def _lease(deployment: Deployment, run_id: str) -> dict[str, Any] | None:
    from airflow_provider_mindvideo.batch.lease import lease_path

    path = Path(lease_path(_manifest_path(deployment, run_id)))
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def scenario_twice(deployment: Deployment, figures: dict[str, Any]) -> None:
    marker = f"twice-{secrets.token_hex(3)}"
    prompts = [f"A {marker} harbour {i}" for i in range(TWICE_ITEMS)]
    # Held until both triggerers have run the batch: no item can end before the thaw.
    deployment.emulator_control("scripts", {"match": marker, "outcome": "never"})
    destination = deployment.home / "media" / "twice"
    run_id = trigger_dag(deployment, "mindvideo_dist_batch", {"prompts": prompts, "destination": destination.as_uri()})
    log(f"scenario twice: a batch of {len(prompts)} in {run_id}")
    trigger_id = deferred_trigger(deployment, run_id)
    wait_for(lambda: charged_for(deployment, marker)[0] == len(prompts), "every item's create", 600, 0.3)
    rows = deployment.query("select triggerer_id from trigger where id = %s", trigger_id)
    victim = next(name for name, job in deployment.triggerer_jobs.items() if rows and job == rows[0][0])
    survivor = next(name for name in deployment.triggerer_jobs if name != victim)
    given_to = deployment.triggerer_jobs[survivor]
    # Not frozen inside the lease's lock (a claim, a renewal, a journal write): that would keep
    # the batch from the other triggerer until the thaw (docs/operators/batch.md).
    with _lease_lock(deployment, run_id):
        frozen = _signal_tree(deployment, victim, signal.SIGSTOP)
    frozen_at = time.monotonic()
    log(f"SIGSTOP {victim} holding the batch ({len(frozen)} processes)")
    try:
        wait_for(
            lambda: deployment.query("select 1 from trigger where id = %s and triggerer_id = %s", trigger_id, given_to),
            f"{survivor} to be given the batch",
            timeout=300,
            every=0.2,
        )
        reassigned = time.monotonic() - frozen_at

        def taken_over() -> bool:
            lease = _lease(deployment, run_id) or {}
            return bool(lease) and not lease.get("released") and lease.get("pid") not in frozen

        wait_for(taken_over, f"{survivor}'s run to take the batch over", timeout=300, every=0.2)
        took_over = time.monotonic() - frozen_at
        log(f"{survivor} was given the batch after {reassigned:.0f} s and took it over after {took_over:.0f} s")
    finally:
        _signal_tree(deployment, victim, signal.SIGCONT)
    log(f"SIGCONT {victim}: both triggerers have run the batch")
    released = deployment.emulator_control("release", {"match": marker})["released"]
    seconds = wait_for_run(deployment, run_id, timeout=1800)
    charged, distinct = charged_for(deployment, marker)
    check(charged == len(prompts), f"twice: charged {charged} remote tasks for {len(prompts)} items")
    check(distinct == len(prompts), f"twice: {distinct} distinct prompts charged for {len(prompts)}")
    stored = sum(1 for _ in destination.glob("task_*"))
    check(stored == len(prompts), f"twice: {stored} files stored for {len(prompts)} items")
    lease = _lease(deployment, run_id) or {}
    event = lease.get("event") or {}
    check(bool(lease.get("released")) and event.get("status") == "done", f"twice: the lease {lease}")
    check(lease.get("pid") not in frozen, f"twice: the frozen triggerer released the batch: {lease}")
    manifest = Path(_manifest_path(deployment, run_id))
    rows_text = manifest.read_text().splitlines()
    statuses = [json.loads(line)["status"] for line in rows_text if line.strip()]
    check(statuses.count("succeeded") == len(prompts), f"twice: manifest statuses {statuses}")
    check(not manifest.with_suffix(".intents").exists(), "twice: the intents were left behind")
    # A triggerer frozen past its heartbeat may not come back whole: the next scenarios get a fresh one.
    deployment.kill(victim)
    del deployment.triggerer_jobs[victim]
    start_triggerer(deployment, victim)
    figures.update(
        twice=f"{len(prompts)} items, {charged} charged, {stored} files, {seconds:.0f} s; {victim} frozen, the batch"
        f" given to {survivor} after {reassigned:.0f} s and taken over after {took_over:.0f} s; {released} held"
        " tasks released after the thaw",
    )


@contextlib.contextmanager
def _lease_lock(deployment: Deployment, run_id: str) -> Iterator[None]:
    from airflow_provider_mindvideo.batch.lease import lease_path, lock_file

    handle = os.open(lock_file(lease_path(_manifest_path(deployment, run_id))), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _manifest_path(deployment: Deployment, run_id: str) -> str:
    from airflow_provider_mindvideo.batch.records import default_manifest_url

    folder = f"file://{deployment.home / 'airflow'}/mindvideo/batches"
    return default_manifest_url(folder, "mindvideo_dist_batch", run_id, "generate", -1)[7:]

"""Scenarios 1 and 1b: the mapped content pipeline, and a batch, with workers and triggerers `kill -9`-ed mid-run."""

from __future__ import annotations

import secrets
import time
from typing import Any

from scripts.e2e_distributed.checks import (
    charged_for,
    deferred_trigger,
    running_on,
    ti_states,
    trigger_dag,
    triggers_of,
    wait_for_run,
)
from scripts.e2e_distributed.config import BATCH_ITEMS, PIPELINE_PROMPTS, check, log
from scripts.e2e_distributed.deployment import Deployment, start_triggerer, start_worker
from scripts.processes import wait_for


def kill_worker_running(deployment: Deployment, run_id: str, worker: str, task_id: str, mapped: int) -> dict[str, int]:
    """kill -9 the worker's processes once a quarter of this task's instances are done and it
    runs one of them (mid-phase, not at its first task); start it again."""

    def busy() -> dict[str, int] | None:
        if ti_states(deployment, run_id, task_id).get("success", 0) < mapped // 4:
            return None
        mine = running_on(deployment, run_id, worker)
        return mine if mine.get(task_id) else None

    running = wait_for(
        busy,
        f"{worker} to run {task_id} tasks",
        timeout=900,
        every=0.3,
    )
    deployment.kill(worker)
    log(f"kill -9 {worker} running {running}")
    start_worker(deployment, worker)
    return dict(running)


def scenario_pipeline(deployment: Deployment, figures: dict[str, Any]) -> None:
    """1. The mapped content pipeline; kill -9 a Celery worker and a triggerer mid-run."""
    marker = f"pipeline-{secrets.token_hex(3)}"
    prompts = [f"A {marker} lighthouse, study {i}" for i in range(PIPELINE_PROMPTS)]
    before = deployment.emulator_state()
    # The remote tasks are held until the triggerer has been killed and its waits adopted, so
    # that every wait is certainly deferred then, whatever the machine's speed.
    deployment.emulator_control("scripts", {"match": marker, "outcome": "never"})
    destination = deployment.home / "media" / "pipeline"
    run_id = trigger_dag(
        deployment,
        "mindvideo_content_pipeline",
        {"prompts": prompts, "size": "1:1", "destination": destination.as_uri()},
    )
    log(f"scenario 1: {len(prompts)} prompts in {run_id}")

    # Saves begin only once every wait has ended (they map over the waits' output), so one
    # worker dies among the submits and the other among the saves; each comes back at once.
    killed_with = {"worker-1": kill_worker_running(deployment, run_id, "worker-1", "submit", len(prompts))}

    # Whichever triggerer holds waits dies (the scheduler does not promise an even split).
    def holder() -> tuple[str, set[int]] | None:
        for name, job_id in deployment.triggerer_jobs.items():
            held = triggers_of(deployment, job_id)
            if held:
                return name, held
        return None

    wait_for(
        lambda: ti_states(deployment, run_id, "wait").get("deferred") == len(prompts),
        "every wait to be deferred",
        timeout=1200,
        every=2,
    )
    victim_name, orphans = wait_for(holder, "a triggerer to hold deferred waits", timeout=60, every=0.3)
    survivor_name = next(name for name in deployment.triggerer_jobs if name != victim_name)
    survivor = deployment.triggerer_jobs[survivor_name]
    killed_at = time.monotonic()
    deployment.kill(victim_name)
    log(f"kill -9 {victim_name} holding {len(orphans)} trigger(s)")
    adopted: set[int] = set()

    def taken_over() -> bool:
        rows = deployment.query("select id, triggerer_id from trigger where id = any(%s)", list(orphans))
        adopted.update(trigger_id for trigger_id, owner in rows if owner == survivor)
        # Every orphan is either held by the survivor or already fired there (row gone).
        return all(owner == survivor for _, owner in rows)

    wait_for(taken_over, f"{survivor_name} to adopt {victim_name}'s waits", timeout=300, every=0.2)
    takeover = time.monotonic() - killed_at
    log(f"{survivor_name} adopted {len(orphans)} orphaned trigger(s) in {takeover:.1f} s ({len(adopted)} seen held)")
    check(len(adopted) > 0, "no orphaned trigger was seen held by the surviving triggerer")
    del deployment.triggerer_jobs[victim_name]
    start_triggerer(deployment, victim_name)
    released = deployment.emulator_control("release", {"match": marker})["released"]
    check(released == len(prompts), f"released {released} held remote tasks for {len(prompts)} prompts")

    killed_with["worker-2"] = kill_worker_running(deployment, run_id, "worker-2", "save", len(prompts))

    seconds = wait_for_run(deployment, run_id, timeout=1800)
    charged, distinct = charged_for(deployment, marker)
    check(charged == len(prompts), f"charged {charged} remote tasks for {len(prompts)} prompts")
    check(distinct == len(prompts), f"{distinct} distinct prompts charged for {len(prompts)}")
    stored = sorted(destination.glob("task_*"))
    check(len(stored) == len(prompts), f"{len(stored)} files stored for {len(prompts)} prompts")
    retried = deployment.query(
        "select task_id, count(*) from task_instance where run_id = %s and try_number > 1 group by task_id", run_id
    )
    after = deployment.emulator_state()
    requests = sum(after["requests"].values()) - sum(before["requests"].values())
    figures.update(
        pipeline_prompts=len(prompts),
        pipeline_seconds=seconds,
        pipeline_charged=charged,
        pipeline_files=len(stored),
        pipeline_requests_per_item=requests / len(prompts),
        pipeline_rate_limited=after["rate_limited"] - before["rate_limited"],
        pipeline_retried=dict(retried),
        orphaned_triggers=len(orphans),
        takeover_seconds=takeover,
        workers_killed_with=killed_with,
    )


def scenario_batch(deployment: Deployment, figures: dict[str, Any]) -> None:
    """1b. A batch of BATCH_ITEMS in one task: kill -9 the triggerer holding it mid-creates, and
    the worker saving its outputs mid-downloads."""
    marker = f"batch-{secrets.token_hex(3)}"
    prompts = [f"A {marker} meadow {i}" for i in range(BATCH_ITEMS)]
    # Not held: the batch keeps at most max_active (100) items in flight, so it must progress.
    # Each item takes a few seconds, so the batch is still creating when its triggerer dies.
    deployment.emulator_control("scripts", {"match": marker, "outcome": "succeeded", "processing_seconds": 3})
    destination = deployment.home / "media" / "batch"
    run_id = trigger_dag(deployment, "mindvideo_dist_batch", {"prompts": prompts, "destination": destination.as_uri()})
    log(f"scenario 1b: a batch of {len(prompts)} in {run_id}")
    ti_id = deferred_trigger(deployment, run_id)
    # Mid-creates: a quarter of the items created, and the trigger held by a triggerer.
    wait_for(lambda: charged_for(deployment, marker)[0] >= len(prompts) // 4, "a quarter of the creates", 1200, 0.3)
    rows = deployment.query("select triggerer_id from trigger where id = %s", ti_id)
    victim = next(name for name, job in deployment.triggerer_jobs.items() if rows and job == rows[0][0])
    survivor_name = next(name for name in deployment.triggerer_jobs if name != victim)
    survivor = deployment.triggerer_jobs[survivor_name]
    created_at_kill = charged_for(deployment, marker)[0]
    killed_at = time.monotonic()
    deployment.kill(victim)
    log(f"kill -9 {victim} holding the batch with {created_at_kill} of {len(prompts)} created")
    wait_for(
        lambda: deployment.query("select 1 from trigger where id = %s and triggerer_id = %s", ti_id, survivor),
        f"{survivor_name} to adopt the batch",
        timeout=300,
        every=0.2,
    )
    takeover = time.monotonic() - killed_at
    log(f"{survivor_name} adopted the batch in {takeover:.1f} s")
    del deployment.triggerer_jobs[victim]
    start_triggerer(deployment, victim)

    # The batch resumes on a worker to save its outputs: that worker dies mid-downloads.
    def saving() -> str | None:
        stored = sum(1 for _ in destination.glob("task_*")) if destination.exists() else 0
        if stored < 1:
            return None
        for worker in ("worker-1", "worker-2"):
            if running_on(deployment, run_id, worker).get("generate"):
                return worker
        return None

    worker = wait_for(saving, "a worker saving the batch's outputs", timeout=1200, every=0.2)
    files_at_kill = sum(1 for _ in destination.glob("task_*"))
    deployment.kill(worker)
    log(f"kill -9 {worker} saving the batch, {files_at_kill} of {len(prompts)} files stored")
    start_worker(deployment, worker)
    seconds = wait_for_run(deployment, run_id, timeout=1800)
    charged, distinct = charged_for(deployment, marker)
    check(charged == len(prompts), f"the batch: charged {charged} remote tasks for {len(prompts)} items")
    check(distinct == len(prompts), f"the batch: {distinct} distinct prompts charged for {len(prompts)}")
    stored = sum(1 for _ in destination.glob("task_*"))
    check(stored == len(prompts), f"the batch: {stored} files stored for {len(prompts)} items")
    figures.update(
        batch=f"{len(prompts)} items, {charged} charged, {stored} files, {seconds:.0f} s; triggerer killed with"
        f" {created_at_kill} created (adopted after {takeover:.0f} s), worker killed with {files_at_kill} files saved",
    )

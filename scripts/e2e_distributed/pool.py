"""Scenario 2: an Airflow pool caps creates account-wide across two workers; the per-process limit does not."""

from __future__ import annotations

import secrets
from typing import Any

from scripts.e2e_distributed.checks import charged_for, generating_peak, trigger_dag, wait_for_run
from scripts.e2e_distributed.config import POOL_CREATE_DELAY, POOL_PROMPTS, POOL_SIZE, check, log
from scripts.e2e_distributed.deployment import Deployment


def scenario_pool(deployment: Deployment, figures: dict[str, Any]) -> None:
    """2. An Airflow pool caps creates account-wide across two workers; the per-process limit does not."""
    for dag_id in ("mindvideo_dist_unpooled", "mindvideo_dist_pooled"):
        marker = f"{dag_id}-{secrets.token_hex(3)}"
        prompts = [f"A {marker} kite {i}" for i in range(POOL_PROMPTS)]
        # Each run's creates are slow and its images quick: overlap comes from the creates.
        deployment.emulator_control("scripts", {"match": marker, "outcome": "succeeded", "processing_seconds": 2})
        deployment.emulator_control(
            "faults", {"kind": "delay", "route": "create", "seconds": POOL_CREATE_DELAY, "times": POOL_PROMPTS}
        )
        deployment.emulator_control("reset-counters", {})
        run_id = trigger_dag(deployment, dag_id, {"prompts": prompts})
        wait_for_run(deployment, run_id, timeout=900)
        state = deployment.emulator_state()
        peak_creates = state["max_in_flight_creates"]
        peak_generating = generating_peak([t for t in state["tasks"] if marker in (t["prompt"] or "")])
        charged, _ = charged_for(deployment, marker)
        check(charged == len(prompts), f"{dag_id}: charged {charged} for {len(prompts)} prompts")
        figures[f"{dag_id}_peak_creates"] = peak_creates
        figures[f"{dag_id}_peak_generating"] = peak_generating
        log(f"scenario 2, {dag_id}: at most {peak_creates} creates in flight, {peak_generating} generating")
    unpooled = figures["mindvideo_dist_unpooled_peak_creates"]
    pooled = figures["mindvideo_dist_pooled_peak_creates"]
    check(pooled <= POOL_SIZE, f"with the pool of {POOL_SIZE}, {pooled} creates were in flight at once")
    check(
        figures["mindvideo_dist_pooled_peak_generating"] <= POOL_SIZE,
        f"with the pool of {POOL_SIZE} (deferred included), more were generating at once",
    )
    check(
        unpooled > POOL_SIZE,
        f"without the pool, the connection's max_concurrency={POOL_SIZE} per process held account-wide"
        f" ({unpooled} at most): the scenario did not show what it should",
    )

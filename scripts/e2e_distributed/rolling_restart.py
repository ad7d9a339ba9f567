"""Scenario 3: each triggerer stopped and started in turn while WAITS waits are deferred."""

from __future__ import annotations

import json
import secrets
import signal
import time
from typing import Any

from scripts.e2e_distributed.checks import (
    charged_for,
    held_by,
    key_forms,
    ti_states,
    trigger_dag,
    trigger_deadlines,
    trigger_kwargs_text,
    triggers_of,
    wait_for_run,
)
from scripts.e2e_distributed.config import WAITS, check, log
from scripts.e2e_distributed.deployment import Deployment, start_triggerer
from scripts.processes import wait_for


def scenario_rolling_restart(deployment: Deployment, figures: dict[str, Any]) -> None:
    """3. Stop and start each triggerer in turn while WAITS waits are deferred."""
    from airflow.models.crypto import get_fernet

    marker = f"rolling-{secrets.token_hex(3)}"
    prompts = [f"A {marker} harbour {i}" for i in range(WAITS)]
    deployment.emulator_control("scripts", {"match": marker, "outcome": "never"})
    run_id = trigger_dag(deployment, "mindvideo_dist_waits", {"prompts": prompts})
    started = time.monotonic()
    wait_for(
        lambda: ti_states(deployment, run_id, "wait").get("deferred") == WAITS,
        f"all {WAITS} waits to be deferred",
        timeout=1800,
        every=2,
    )
    deferring = time.monotonic() - started
    log(f"scenario 3: {WAITS} waits deferred after {deferring:.0f} s")
    before = trigger_deadlines(deployment, run_id)
    check(len(before) == WAITS, f"{len(before)} deferred waits with a trigger, expected {WAITS}")
    # The trigger rows are gone once the waits end: look for the key in them while they exist.
    forms = key_forms(deployment.api_key)
    fernet = get_fernet()
    rows = [trigger_kwargs_text(fernet, kwargs) for (kwargs,) in deployment.query("select kwargs from trigger")]
    check(len(rows) >= WAITS, f"{len(rows)} trigger rows for {WAITS} deferred waits")
    check(not any(form in text for text in rows for form in forms), "the API key is in a trigger row's kwargs")
    figures["key_scan_trigger_rows"] = len(rows)
    restarts: dict[str, float] = {}
    moved: dict[str, int] = {}
    for name, other in (("triggerer-1", "triggerer-2"), ("triggerer-2", "triggerer-1")):
        moved[name] = len(triggers_of(deployment, deployment.triggerer_jobs[name]))
        stopping = time.monotonic()
        deployment.kill(name, signal.SIGTERM)  # a graceful stop, as a deploy does
        held = held_by(deployment, run_id, deployment.triggerer_jobs[other], WAITS)
        wait_for(held, f"{other} to hold all {WAITS} waits", timeout=600)
        restarts[name] = time.monotonic() - stopping
        log(f"{name} stopped holding {moved[name]}: {other} holds all {WAITS} after {restarts[name]:.1f} s")
        del deployment.triggerer_jobs[name]
        start_triggerer(deployment, name)
    after = trigger_deadlines(deployment, run_id)
    check(after == before, "a wait's deadline (trigger kwargs or deferral timeout) changed across the restarts")
    check(ti_states(deployment, run_id, "wait") == {"deferred": WAITS}, "a wait left the deferred state")
    ((released_at,),) = deployment.query("select now()")
    released = deployment.emulator_control("release", {"match": marker})["released"]
    check(released == WAITS, f"released {released} held remote tasks, expected {WAITS}")
    ending = time.monotonic()
    seconds = wait_for_run(deployment, run_id, timeout=1800)
    ended = time.monotonic() - ending
    charged_tasks = {t["task_id"] for t in deployment.emulator_state()["tasks"] if marker in (t["prompt"] or "")}
    charged, distinct = charged_for(deployment, marker)
    check(charged == WAITS and distinct == WAITS, f"charged {charged} ({distinct} prompts) for {WAITS} waits")
    retried = deployment.query("select count(*) from task_instance where run_id = %s and try_number > 1", run_id)[0][0]
    check(retried == 0, f"{retried} task instances were retried: a restart lost them")
    # Each wait ended in the triggerer, with the XComs a worker would have pushed: no task run
    # was queued once the remote tasks were released.
    resumed = deployment.query(
        "select count(*) from task_instance where run_id = %s and task_id = 'wait' and queued_dttm >= %s",
        run_id,
        released_at,
    )[0][0]
    check(resumed == 0, f"{resumed} waits were resumed on a worker instead of ending in the triggerer")
    xcoms: dict[str, dict[int, Any]] = {}
    for key, map_index, value in deployment.query(
        "select key, map_index, value from xcom where run_id = %s and task_id = 'wait'", run_id
    ):
        # A JSON column (decoded by psycopg2) in this Airflow; text or bytes in others.
        decoded = (
            json.loads(value if isinstance(value, str) else bytes(value))
            if isinstance(value, bytes | memoryview | str)
            else value
        )
        xcoms.setdefault(key, {})[int(map_index)] = decoded
    urls = xcoms.get("return_value", {})
    records = xcoms.get("mindvideo_task", {})
    check(len(urls) == WAITS and len(records) == WAITS, f"{len(urls)} return values, {len(records)} records")
    returned = {url.split("/files/")[1].split("/")[0] for value in urls.values() for url in value}
    check(returned == charged_tasks, "the waits' return values are not the output URLs of the charged tasks")
    check(
        all(record["status"] == "succeeded" and record["output_urls"] == urls[i] for i, record in records.items()),
        "a wait's mindvideo_task record does not match its return value",
    )
    log(f"scenario 3: deferred in {deferring:.0f} s, all ended in the triggerers {ended:.0f} s after the release")
    figures.update(
        rolling_waits=WAITS,
        rolling_handover_seconds=restarts,
        rolling_moved=moved,
        rolling_run_seconds=seconds,
        rolling_deferring_seconds=deferring,
        rolling_ending_seconds=ended,
    )

"""Scenario 5: one daily account budget across three DAGs on two workers and two triggerers, with
the spend ledger on the deployment's PostgreSQL; a worker killed mid-submit and the triggerer
holding a batch killed mid-batch. The emulator's own books are the oracle.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from scripts.e2e_distributed.checks import run_state, trigger_dag
from scripts.e2e_distributed.config import BUDGETED_CONN_ID, LEDGER_DATABASE, LEDGER_ITEMS, check, log
from scripts.e2e_distributed.deployment import LEDGER_DAGS, Deployment, start_triggerer, start_worker
from scripts.processes import BIN, process_tree, wait_for

MICROS = 1_000_000
# Creates answered this late (after the work is done, so charged): a worker killed then has sent a
# create whose answer it never reads, and its reservation stays open until the retry replays the key.
CREATE_DELAY = 2.0
REFUSED = re.compile(r"Budget\w*ExceededError")


def scenario_ledger(deployment: Deployment, figures: dict[str, Any]) -> None:
    """5. One daily budget for ~60 % of a mapped Generate's and two batches' items, in three DAGs."""
    from airflow_provider_mindvideo.client.catalog import known_models

    generate_dag, *batch_dags = LEDGER_DAGS
    markers = {dag_id: f"{dag_id}-{secrets.token_hex(3)}" for dag_id in LEDGER_DAGS}
    for marker in markers.values():
        deployment.emulator_control("scripts", {"match": marker, "outcome": "succeeded", "processing_seconds": 3})
    deployment.emulator_control("faults", {"kind": "delay", "route": "create", "seconds": CREATE_DELAY, "times": 30})
    started = time.monotonic()
    runs = {
        dag_id: trigger_dag(deployment, dag_id, {"prompts": [f"A {marker} harbour {i}" for i in range(LEDGER_ITEMS)]})
        for dag_id, marker in markers.items()
    }
    limit = deployment.budget_limit
    log(f"scenario 5: 3 x {LEDGER_ITEMS} items against a day budget of {limit} ({deployment.budget_timezone})")

    killed_worker = kill_worker_mid_submit(deployment, runs[generate_dag], markers[generate_dag])
    batches = {dag_id: (runs[dag_id], markers[dag_id]) for dag_id in batch_dags}
    batch_killed = kill_triggerer_mid_batch(deployment, batches)

    for run_id in runs.values():
        wait_for(lambda run_id=run_id: run_state(deployment, run_id) in ("success", "failed"), f"{run_id} to end", 900)
    seconds = time.monotonic() - started

    # The oracle: what the emulator charged for this scenario's prompts.
    tasks = deployment.emulator_state()["tasks"]
    charged = [t for t in tasks if any(m in (t["prompt"] or "") for m in markers.values())]
    true_total = round(sum(t["cost"] for t in charged), 6)
    models = {t["model"] for t in charged}
    # A model with no price known before its first answer may pass the limit by one create's true price.
    unknown_price_slack = sum(
        max(t["cost"] for t in charged if t["model"] == m) for m in models if m not in known_models()
    )
    check(
        true_total <= limit + unknown_price_slack + 1e-9,
        f"the emulator charged {true_total} against a day budget of {limit} (+ {unknown_price_slack})",
    )
    cheapest = min((t["cost"] for t in charged), default=0.0)
    check(
        true_total + cheapest > limit,
        f"only {true_total} charged of {limit}: room for another create was left while items were refused",
    )
    prompts = [t["prompt"] for t in charged]
    check(len(set(prompts)) == len(prompts), f"{len(prompts) - len(set(prompts))} item(s) charged twice")

    refused_tasks = refused_generations(deployment, runs[generate_dag], markers[generate_dag], charged)
    refused_items = {dag_id: refused_batch_items(deployment, dag_id, runs[dag_id]) for dag_id in batch_dags}
    refused = len(refused_tasks) + sum(refused_items.values())
    check(
        len(charged) + refused == 3 * LEDGER_ITEMS,
        f"{len(charged)} charged + {refused} refused for {3 * LEDGER_ITEMS} items",
    )

    ledger = ledger_books(deployment, charged)
    check(
        ledger["counted"] == round(true_total * MICROS),
        f"the ledger counts {ledger['counted'] / MICROS}, the emulator charged {true_total}",
    )
    by_dag = spend_command(deployment)
    check(
        round(sum(row["counted"] for row in by_dag.values()), 6) == true_total,
        f"mindvideo-spend by dag counts {by_dag}, the emulator charged {true_total}",
    )
    per_dag = {dag_id: sum(1 for t in charged if markers[dag_id] in (t["prompt"] or "")) for dag_id in LEDGER_DAGS}
    log(
        f"scenario 5: {len(charged)} charged ({true_total} of {limit}) per DAG {per_dag}; refused: "
        f"{len(refused_tasks)} generations, {refused_items} batch items; ledger = emulator; {seconds:.0f} s"
    )
    figures.update(
        ledger_items=3 * LEDGER_ITEMS,
        ledger_limit=limit,
        ledger_charged=len(charged),
        ledger_true_total=true_total,
        ledger_counted=ledger["counted"] / MICROS,
        ledger_refused_tasks=len(refused_tasks),
        ledger_refused_items=sum(refused_items.values()),
        ledger_seconds=seconds,
        ledger_killed_worker=killed_worker,
        ledger_killed_triggerer=batch_killed,
    )


def kill_worker_mid_submit(deployment: Deployment, run_id: str, marker: str) -> str:
    """kill -9 a worker running a Generate whose create MindVideo has charged but not yet answered; start it again.

    The task is in its first run (not resumed from its deferral) and its remote task exists: the
    answer is still on its way (delayed), so the reservation is open when the worker dies.
    """

    def submitting() -> tuple[str, list[int]] | None:
        created = {
            int(t["prompt"].rsplit(" ", 1)[1])
            for t in deployment.emulator_state()["tasks"]
            if marker in (t["prompt"] or "")
        }
        rows = deployment.query(
            "select map_index, pid from task_instance where run_id = %s and task_id = 'generate'"
            " and state = 'running' and next_method is null and pid is not null",
            run_id,
        )
        for worker in ("worker-1", "worker-2"):
            mine = process_tree(deployment.processes[worker].pid)
            sent = sorted(int(index) for index, pid in rows if int(pid) in mine and int(index) in created)
            if sent:
                return worker, sent
        return None

    worker, sent = wait_for(submitting, "a worker waiting for a Generate's create answer", timeout=600, every=0.2)
    deployment.kill(worker)
    log(f"scenario 5: kill -9 {worker} while Generate {sent} waited for its create's answer")
    start_worker(deployment, worker)
    return f"{worker} while Generate map index {sent} waited for its create's answer"


def kill_triggerer_mid_batch(deployment: Deployment, batches: dict[str, tuple[str, str]]) -> str:
    """kill -9 the triggerer holding a batch that has created some items and is still running; start it again."""

    def holding() -> tuple[str, str, int, int] | None:
        tasks = deployment.emulator_state()["tasks"]
        for dag_id, (run_id, marker) in batches.items():
            created = sum(1 for t in tasks if marker in (t["prompt"] or ""))
            rows = deployment.query(
                "select t.triggerer_id, t.id from task_instance ti join trigger t on t.id = ti.trigger_id"
                " where ti.run_id = %s and ti.task_id = 'generate' and ti.state = 'deferred'",
                run_id,
            )
            if created >= 3 and rows and rows[0][0] is not None:
                holder = next((n for n, job in deployment.triggerer_jobs.items() if job == rows[0][0]), None)
                if holder is not None:
                    return dag_id, holder, int(rows[0][1]), created
        return None

    dag_id, victim, trigger_id, created = wait_for(holding, "a triggerer holding a batch mid-creates", 600, 0.2)
    survivor_name = next(name for name in deployment.triggerer_jobs if name != victim)
    survivor = deployment.triggerer_jobs[survivor_name]
    killed_at = time.monotonic()
    deployment.kill(victim)
    log(f"scenario 5: kill -9 {victim} holding {dag_id}'s batch with {created} of {LEDGER_ITEMS} created")
    # Adopted by the survivor, or already ended there (its row gone).
    wait_for(
        lambda: (
            not deployment.query(
                "select 1 from trigger where id = %s and triggerer_id is distinct from %s", trigger_id, survivor
            )
        ),
        f"{survivor_name} to adopt the batch",
        timeout=300,
        every=0.2,
    )
    takeover = time.monotonic() - killed_at
    del deployment.triggerer_jobs[victim]
    start_triggerer(deployment, victim)
    return f"{victim} holding {dag_id} with {created} of {LEDGER_ITEMS} created (adopted after {takeover:.0f} s)"


def refused_generations(deployment: Deployment, run_id: str, marker: str, charged: list[dict[str, Any]]) -> list[int]:
    """Map indexes of the Generate tasks the budget refused: each failed, its log naming BudgetExceededError."""
    rows = deployment.query(
        "select map_index, state, try_number from task_instance where run_id = %s and task_id = 'generate'", run_id
    )
    states = {int(m): (str(s), int(t)) for m, s, t in rows}
    check(len(states) == LEDGER_ITEMS, f"{len(states)} Generate task instances for {LEDGER_ITEMS} prompts")
    ran = {int(t["prompt"].rsplit(" ", 1)[1]) for t in charged if marker in (t["prompt"] or "")}
    refused = []
    logs = Path(deployment.env["AIRFLOW_HOME"]) / "logs" / "dag_id=mindvideo_dist_ledger_generate" / f"run_id={run_id}"
    for index, (state, try_number) in sorted(states.items()):
        if state == "success":
            check(index in ran, f"Generate {index} succeeded without a charged remote task")
            continue
        check(state == "failed", f"Generate {index} ended {state}")
        check(index not in ran, f"Generate {index} failed after its remote task was charged")
        log_file = logs / "task_id=generate" / f"map_index={index}" / f"attempt={try_number}.log"
        text = log_file.read_text() if log_file.exists() else ""
        check(bool(REFUSED.search(text)), f"Generate {index} failed, and its log {log_file} does not say the budget")
        refused.append(index)
    return refused


def refused_batch_items(deployment: Deployment, dag_id: str, run_id: str) -> int:
    """Items the budget refused in the batch's manifest (over_budget, the error naming it); the rest succeeded."""
    check(run_state(deployment, run_id) == "success", f"{dag_id}'s batch failed")
    folder = Path(deployment.env["AIRFLOW_HOME"]) / "mindvideo" / "batches" / dag_id / run_id
    (manifest,) = folder.rglob("manifest.jsonl")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    check(len(rows) == LEDGER_ITEMS, f"{dag_id}: {len(rows)} manifest rows for {LEDGER_ITEMS} items")
    statuses = {row["status"] for row in rows}
    check(statuses <= {"succeeded", "over_budget"}, f"{dag_id}: items ended {statuses}")
    over = [row for row in rows if row["status"] == "over_budget"]
    for row in over:
        check("budget" in (row.get("error") or ""), f"{dag_id}: item {row['line']} is over_budget without a reason")
    return len(over)


def ledger_books(deployment: Deployment, charged: list[dict[str, Any]]) -> dict[str, int]:
    """The ledger's rows for the budgeted connection against the emulator's tasks: one row per remote task."""
    rows = deployment.query(
        "select idempotency_key, mindvideo_task_id, state, cost, reserved from mindvideo_spend where account = %s",
        BUDGETED_CONN_ID,
        database=LEDGER_DATABASE,
    )
    open_rows = [key for key, _, state, _, _ in rows if state == "reserved"]
    check(not open_rows, f"{len(open_rows)} ledger row(s) still only reserved after every run ended")
    settled = {task_id: cost for _, task_id, state, cost, _ in rows if state == "settled"}
    true_ids = {t["task_id"] for t in charged}
    check(
        set(settled) == true_ids,
        f"ledger and emulator differ: {len(set(settled) - true_ids)} settled not charged, "
        f"{len(true_ids - set(settled))} charged not in the ledger",
    )
    ((spent, reserved),) = deployment.query(
        "select coalesce(sum(spent), 0), coalesce(sum(reserved), 0) from mindvideo_budget_window"
        " where account = %s and budget = 'account' and period = 'day'",
        BUDGETED_CONN_ID,
        database=LEDGER_DATABASE,
    )
    counted = sum(int(cost) for cost in settled.values())
    check(int(reserved) == 0 and int(spent) == counted, f"the day window holds {spent} + {reserved}, rows {counted}")
    return {"counted": counted}


def spend_command(deployment: Deployment) -> dict[str, dict[str, Any]]:
    """`mindvideo-spend --json by dag` for the budgeted connection, as an operator would alert on it."""
    out = subprocess.run(
        [str(BIN / "mindvideo-spend"), "--json", "--account", BUDGETED_CONN_ID, "by", "dag"],
        env=deployment.env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {row["key"]: row for row in json.loads(out)}

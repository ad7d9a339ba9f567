"""The run's figures, written into docs/deploying.md between its markers."""

from __future__ import annotations

import os
import re
import subprocess
import time
from typing import Any

from scripts.e2e_distributed.config import EMULATOR_RATE_LIMIT, POOL_PROMPTS, POOL_SIZE, WORKER_CONCURRENCY, log
from scripts.e2e_distributed.deployment import Deployment
from scripts.processes import ROOT

DEPLOYING = ROOT / "docs" / "deploying.md"
BEGIN_MARKER = "<!-- e2e-distributed figures: begin (written by make e2e-distributed, not by hand) -->"
END_MARKER = "<!-- e2e-distributed figures: end -->"


def figures_markdown(figures: dict[str, Any]) -> str:
    lines = [
        BEGIN_MARKER,
        "",
        f"Measured by `make e2e-distributed` on {figures['date']} ({figures['machine']}): Airflow"
        f" {figures['airflow']}, PostgreSQL {figures['postgres']}, Redis {figures['redis']}, two Celery workers of"
        f" {WORKER_CONCURRENCY} slots, two triggerers, the emulator limiting the key to {EMULATOR_RATE_LIMIT}"
        " requests a second. The whole run took"
        f" {figures['total_seconds'] / 60:.1f} minutes (15-minute load average at its end:"
        f" {figures.get('load_average', 0):.1f}).",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    if "pipeline_prompts" in figures:
        per_thousand = figures["pipeline_seconds"] / figures["pipeline_prompts"] * 1000
        lines += [
            f"| content pipeline: prompts, remote tasks charged, files stored | {figures['pipeline_prompts']},"
            f" {figures['pipeline_charged']}, {figures['pipeline_files']} |",
            f"| its wall time (one worker and one triggerer killed mid-run) | {figures['pipeline_seconds']:.0f} s,"
            f" about {per_thousand / 60:.0f} min per 1,000 prompts with two workers |",
            f"| API requests per prompt (submit, waits, saves' lookups; 429s included) |"
            f" {figures['pipeline_requests_per_item']:.1f} ({figures['pipeline_rate_limited']} answered 429) |",
            f"| Celery workers killed (`kill -9` of the process group) while running |"
            f" {figures['workers_killed_with']} |",
            f"| tasks retried after the workers' `kill -9` | {figures['pipeline_retried'] or 'none'} |",
            f"| triggerer `kill -9`: orphaned waits, taken over by the other triggerer after |"
            f" {figures['orphaned_triggers']}, {figures['takeover_seconds']:.0f} s |",
        ]
    lines.append(f"| batch | {figures.get('batch', 'not run')} |")
    if "twice" in figures:
        lines.append(
            f"| one batch trigger run by both triggerers at once (its holder frozen, then thawed) |"
            f" {figures['twice']} |"
        )
    if "ledger_items" in figures:
        lines += [
            f"| spend ledger (PostgreSQL): a mapped Generate and two batches in three DAGs, {figures['ledger_items']}"
            f" items, one day budget of {figures['ledger_limit']:g} (about 60 %) | {figures['ledger_charged']} charged"
            f" for {figures['ledger_true_total']:g} by the emulator, ledger {figures['ledger_counted']:g};"
            f" refused: {figures['ledger_refused_tasks']} Generate tasks (BudgetWindowExceededError),"
            f" {figures['ledger_refused_items']} batch items (`over_budget`); none charged twice;"
            f" {figures['ledger_seconds']:.0f} s |",
            f"| the same runs' crashes | worker `kill -9` mid-submit: {figures['ledger_killed_worker']};"
            f" triggerer `kill -9`: {figures['ledger_killed_triggerer']} |",
        ]
    if "mindvideo_dist_pooled_peak_creates" in figures:
        lines += [
            f"| creates in flight at once, {POOL_PROMPTS} generations, connection `max_concurrency={POOL_SIZE}`:"
            f' without a pool / with `pool="mindvideo"` of {POOL_SIZE} |'
            f" {figures['mindvideo_dist_unpooled_peak_creates']} /"
            f" {figures['mindvideo_dist_pooled_peak_creates']} |",
            f"| remote tasks generating at once, the same runs | {figures['mindvideo_dist_unpooled_peak_generating']} /"
            f" {figures['mindvideo_dist_pooled_peak_generating']} |",
        ]
    if "rolling_waits" in figures:
        handover = "; ".join(
            f"{figures['rolling_moved'][name]} waits moved in {seconds:.0f} s"
            for name, seconds in figures["rolling_handover_seconds"].items()
        )
        lines += [
            f"| rolling restart (SIGTERM, then start again) of each triggerer in turn under {figures['rolling_waits']}"
            f" deferred waits | {handover}; none lost, none paid twice, no deadline reset |",
            f"| those waits: all deferred (one worker run each) after, all ended in the triggerers"
            f" (`end_from_trigger`) after their tasks' release | {figures['rolling_deferring_seconds']:.0f} s,"
            f" {figures['rolling_ending_seconds']:.0f} s |",
        ]
    if "key_scan_tables" in figures:
        lines.append(
            f"| API key found in {figures['key_scan_log_files']} log files, {figures['key_scan_tables']}"
            " tables (XCom, rendered fields, ...),"
            f" {figures.get('key_scan_trigger_rows', 0)} trigger rows decrypted while deferred | nowhere |"
        )
    lines += ["", END_MARKER]
    return "\n".join(lines)


def write_figures(figures: dict[str, Any]) -> None:
    page = DEPLOYING.read_text()
    start, end = page.index(BEGIN_MARKER), page.index(END_MARKER) + len(END_MARKER)
    DEPLOYING.write_text(page[:start] + figures_markdown(figures) + page[end:])
    log(f"figures written to {DEPLOYING.relative_to(ROOT)}")


def versions(deployment: Deployment) -> dict[str, str]:
    import airflow

    postgres = deployment.query("show server_version")[0][0].split()[0]
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=([0-9.]+)", redis)
    return {
        "airflow": airflow.__version__,
        "postgres": postgres,
        "redis": match.group(1) if match else "?",
        "machine": f"{os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }

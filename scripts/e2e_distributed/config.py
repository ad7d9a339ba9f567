"""Sizes (from the environment: the issue's figures by default), the deployment's fixed settings, logging."""

from __future__ import annotations

import os
import time


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


PIPELINE_PROMPTS = env_int("MINDVIDEO_DIST_PIPELINE_PROMPTS", 200)
BATCH_ITEMS = env_int("MINDVIDEO_DIST_BATCH_ITEMS", 2000)
POOL_SIZE = env_int("MINDVIDEO_DIST_POOL_SIZE", 2)
POOL_PROMPTS = env_int("MINDVIDEO_DIST_POOL_PROMPTS", 8)
# Issue 16's figure. One task submits them all; each wait is then one task run on a worker (it
# checks once and defers) and ends in the triggerer (the sensor's end_from_trigger).
WAITS = env_int("MINDVIDEO_DIST_WAITS", 1000)
# Scenario 5 (the spend ledger): items in each of its three DAGs (a mapped Generate, two batches),
# and the share of all of them the account's daily budget pays for.
LEDGER_ITEMS = env_int("MINDVIDEO_DIST_LEDGER_ITEMS", 20)
LEDGER_BUDGET_SHARE = 0.6
# The ledger's own database on the deployment's PostgreSQL, and the connections naming it and the budget.
LEDGER_DATABASE = "mindvideo_ledger"
LEDGER_CONN_ID = "mindvideo_ledger"
BUDGETED_CONN_ID = "mindvideo_budgeted"
LEDGER_MODEL = "gpt-image-2"
WORKER_CONCURRENCY = 4
# Per key, per second: a real account has a limit; the provider must live within it (429s and
# Retry-After are retried, never paid twice).
EMULATOR_RATE_LIMIT = 100
# The emulator's image time; the scenarios hold or script their own tasks' durations.
IMAGE_SECONDS = 5
# Creates of scenario 2 are answered this late, so that creates from different workers overlap.
POOL_CREATE_DELAY = 3.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)

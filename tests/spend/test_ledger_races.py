"""Concurrent reservers against one budget sized for 60% of their creates: never past the limit, never twice.

Threads of one process and separate processes race on one SQLite file (and on PostgreSQL when its
binaries are installed, see conftest.py). The budget: 15 a day, creates of 0.25 each, 100 of
them: exactly 60 may be reserved, whatever the interleaving.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.schema import budget_window, spend
from tests.spend.helpers import race, race_groups, race_in_process

WORKERS = 4
PER_WORKER = 25
FITTING = 60


def _check_books(url: str, outcomes: list[tuple[str, bool]]) -> None:
    accepted = {key for key, ok in outcomes if ok}
    refused = {key for key, ok in outcomes if not ok}
    assert len(outcomes) == WORKERS * PER_WORKER
    assert len(accepted) == FITTING, f"{len(accepted)} reserved for a budget that holds {FITTING}"
    with engine_for_url(url).connect() as connection:
        every = connection.execute(select(spend)).all()
        rows = {row.idempotency_key: row for row in every if row.state != "refused"}
        refused_rows = {row.idempotency_key: row for row in every if row.state == "refused"}
        counters = {row.budget: row for row in connection.execute(select(budget_window))}
    # Exactly the accepted creates hold money; a refused one is a refused row holding nothing.
    assert set(rows) == accepted
    assert set(refused_rows) == refused
    assert all(row.cost == 0 and row.budgets == "account" for row in refused_rows.values())
    assert all(row.state == "reserved" and row.reserved == 250_000 for row in rows.values())
    day = counters["account"]
    assert day.spent + day.reserved <= day.limit_amount == 15_000_000
    assert day.reserved == FITTING * 250_000  # replays held nothing more
    assert counters["marketing"].reserved == FITTING * 250_000


def test_threads_racing_on_sqlite_never_pass_the_budget(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    barrier = threading.Barrier(WORKERS)
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(race, url, f"t{n}", PER_WORKER, barrier) for n in range(WORKERS)]
        outcomes = [outcome for future in futures for outcome in future.result()]
    _check_books(url, outcomes)


def _race_processes(url: str) -> list[tuple[str, bool]]:
    # Forked, not spawned: each child would spend seconds importing Airflow again. The parent
    # opens no connection to the ledger before the race, so no child inherits one.
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WORKERS)
    results: multiprocessing.Queue[list[tuple[str, bool]]] = context.Queue()
    processes = [
        context.Process(target=race_in_process, args=(url, f"p{n}", PER_WORKER, barrier, results))
        for n in range(WORKERS)
    ]
    for process in processes:
        process.start()
    outcomes = [outcome for _ in processes for outcome in results.get(timeout=120)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return outcomes


def test_processes_racing_on_one_sqlite_file_never_pass_the_budget(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _check_books(url, _race_processes(url))


def test_processes_racing_on_postgresql_never_pass_the_budget(postgres_url: str) -> None:
    _check_books(postgres_url, _race_processes(postgres_url))


@pytest.mark.parametrize("workers", [WORKERS])
def test_threads_racing_on_postgresql_never_pass_the_budget(postgres_url: str, workers: int) -> None:
    barrier = threading.Barrier(workers)
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(race, postgres_url, f"t{n}", PER_WORKER, barrier) for n in range(workers)]
        outcomes = [outcome for future in futures for outcome in future.result()]
    _check_books(postgres_url, outcomes)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_threads_reserving_groups_never_pass_the_budget(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Groups decided together (spend/grouping.py) race as single reservations do: exactly the ones that fit."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if database == "sqlite" else request.getfixturevalue("postgres_url")
    barrier = threading.Barrier(WORKERS)
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(race_groups, url, f"g{n}", PER_WORKER, barrier) for n in range(WORKERS)]
        outcomes = [outcome for future in futures for outcome in future.result()]
    _check_books(url, outcomes)

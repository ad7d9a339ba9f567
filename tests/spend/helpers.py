"""Shared by the ledger tests, and importable by the racing processes they start."""

from __future__ import annotations

import datetime as dt
import multiprocessing.synchronize
import threading
from zoneinfo import ZoneInfo

from airflow_provider_mindvideo.spend.budgets import budgets_from_extras, to_micros
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.ledger import Ledger
from airflow_provider_mindvideo.spend.pricing import learn_price
from airflow_provider_mindvideo.spend.records import BudgetRefusal, CreateRecord
from airflow_provider_mindvideo.spend.windows import UTC

# Every reservation counts against the account's day and the marketing month: two counter rows
# per transaction, so lock order matters too.
RACE_EXTRAS = {"budgets": {"account": {"day": 15}, "marketing": {"month": 1000}}, "budget_timezone": "Europe/Berlin"}
RACE_AMOUNT = 0.25  # 60 of them fit the day's 15
RACE_NOW = dt.datetime(2026, 3, 29, 12, 0, tzinfo=UTC)


def know_price(ledger: Ledger, model: str = "gpt-image-2", actual: float = 0.0135) -> None:
    """As if a settled create of ``model`` had told a readable ``cost_actual``: its creates no longer go alone."""
    with ledger.engine.begin() as connection:
        learn_price(connection, model, None, to_micros(actual))


def fixed_clock(instant: dt.datetime = RACE_NOW) -> dt.datetime:
    return instant


def race(
    url: str,
    prefix: str,
    count: int,
    barrier: threading.Barrier | multiprocessing.synchronize.Barrier,
) -> list[tuple[str, bool]]:
    """Reserve ``count`` creates once the barrier opens, replaying each accepted key once; (key, accepted)."""
    ledger = Ledger(engine_for_url(url), clock=fixed_clock)
    config = budgets_from_extras(RACE_EXTRAS, "mindvideo_default")
    know_price(ledger)  # a priced model: its creates need not go alone
    outcomes = []
    barrier.wait()
    for n in range(count):
        create = CreateRecord(f"{prefix}-{n}", "gpt-image-2", dag_id="race", task_id=prefix, map_index=n)
        outcome = ledger.try_reserve(create, RACE_AMOUNT, config, "marketing")
        accepted = not isinstance(outcome, BudgetRefusal)
        if accepted:
            # A replay of the same key (a retried submit) must not hold the money twice.
            assert not isinstance(ledger.try_reserve(create, RACE_AMOUNT, config, "marketing"), BudgetRefusal)
        else:
            assert isinstance(outcome, BudgetRefusal)
            assert (outcome.budget, outcome.limit) == ("account", 15.0)
        outcomes.append((create.idempotency_key, accepted))
    return outcomes


def race_groups(
    url: str,
    prefix: str,
    count: int,
    barrier: threading.Barrier | multiprocessing.synchronize.Barrier,
    size: int = 5,
) -> list[tuple[str, bool]]:
    """As :func:`race`, in groups of ``size`` through ``reserve_many`` (a batch's way), each group replayed once."""
    ledger = Ledger(engine_for_url(url), clock=fixed_clock)
    config = budgets_from_extras(RACE_EXTRAS, "mindvideo_default")
    know_price(ledger)
    outcomes = []
    barrier.wait()
    for start in range(0, count, size):
        creates = [
            (
                CreateRecord(f"{prefix}-{n}", "gpt-image-2", dag_id="race", task_id=prefix, map_index=n),
                RACE_AMOUNT,
                "marketing",
            )
            for n in range(start, min(count, start + size))
        ]
        reserved = ledger.reserve_many(creates, config)
        replayed = ledger.reserve_many(creates, config)
        for (create, _, _), outcome, again in zip(creates, reserved, replayed, strict=True):
            accepted = not isinstance(outcome, BudgetRefusal)
            if accepted:
                assert not isinstance(again, BudgetRefusal)
            else:
                assert (outcome.budget, outcome.limit) == ("account", 15.0)
            outcomes.append((create.idempotency_key, accepted))
    return outcomes


def race_in_process(
    url: str, prefix: str, count: int, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue
) -> None:
    results.put(race(url, prefix, count, barrier))


def berlin() -> ZoneInfo:
    return ZoneInfo("Europe/Berlin")

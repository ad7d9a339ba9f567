"""The ledger's connections: kept open per process (not one per transaction), never pinged, a dropped one replaced."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from airflow_provider_mindvideo.spend.budgets import budgets_from_extras
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.ledger import Ledger
from airflow_provider_mindvideo.spend.records import CreateRecord, Settlement
from tests.spend.helpers import fixed_clock, know_price

EXTRAS = {"budgets": {"account": {"day": 100}, "marketing": {"month": 100}}}


def reserve_and_settle(ledger: Ledger, keys: list[str]) -> None:
    config = budgets_from_extras(EXTRAS, "mv")
    for key in keys:
        ledger.reserve(CreateRecord(key, "gpt-image-2"), 0.5, config, "marketing")
        ledger.settle(key, estimated=0.5, mindvideo_task_id=f"task-{key}")


def count_connects(ledger: Ledger) -> list[Any]:
    opened: list[Any] = []
    event.listen(ledger.engine, "connect", lambda connection, _record: opened.append(connection))
    return opened


def test_a_sqlite_ledger_keeps_its_connection_across_transactions(tmp_path: Path) -> None:
    ledger = Ledger(engine_for_url(f"sqlite:///{tmp_path / 'ledger.db'}"), clock=fixed_clock)
    know_price(ledger)
    opened = count_connects(ledger)
    reserve_and_settle(ledger, [f"k{n}" for n in range(20)])
    assert len(opened) <= 1, f"{len(opened)} connections opened for 40 transactions"
    with ledger.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000


def _reserve_in_child(url: str, key: str) -> None:
    reserve_and_settle(Ledger(engine_for_url(url), clock=fixed_clock), [key])


def test_a_forked_process_opens_its_own_connections(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(engine_for_url(url), clock=fixed_clock)
    know_price(ledger)
    reserve_and_settle(ledger, ["parent-before"])  # the parent's pool holds a connection now
    child = multiprocessing.get_context("fork").Process(target=_reserve_in_child, args=(url, "child"))
    child.start()
    child.join()
    assert child.exitcode == 0
    reserve_and_settle(ledger, ["parent-after"])
    assert all(ledger.row(k).state == "settled" for k in ("parent-before", "child", "parent-after"))  # type: ignore[union-attr]


def test_a_postgresql_connection_the_server_dropped_is_replaced_not_pinged(postgres_url: str) -> None:
    import psycopg2

    ledger = Ledger(engine_for_url(postgres_url), clock=fixed_clock)
    know_price(ledger)
    assert not ledger.engine.pool._pre_ping  # a ping per checkout cost more than a reservation
    ledger.engine.dispose()
    reserve_and_settle(ledger, ["before"])  # one connection, kept in the pool
    with ledger.engine.connect() as kept:
        pid = kept.execute(text("SELECT pg_backend_pid()")).scalar()
    # The server ends that session (a restart, an idle timeout, a failover would): the kept connection is dead.
    admin = psycopg2.connect(ledger.engine.url.render_as_string(hide_password=False).replace("+psycopg2", ""))
    admin.autocommit = True
    admin.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()
    opened = count_connects(ledger)
    reserve_and_settle(ledger, ["after"])  # its first transaction fails on the dead connection, and runs again
    assert len(opened) == 1
    assert ledger.row("after").state == "settled"  # type: ignore[union-attr]
    (row,) = ledger.settle_many([Settlement("before", actual=0.5)])
    assert row is not None and row.actual == 0.5


def test_a_postgresql_settle_group_updates_its_rows_in_batches_and_each_one_right(postgres_url: str) -> None:
    from sqlalchemy.dialects.postgresql.psycopg2 import EXECUTEMANY_VALUES_PLUS_BATCH

    ledger = Ledger(engine_for_url(postgres_url), clock=fixed_clock)
    # psycopg2 sends an executemany UPDATE one round trip per row unless batched (execute_batch).
    assert ledger.engine.dialect.executemany_mode == EXECUTEMANY_VALUES_PLUS_BATCH  # type: ignore[attr-defined]
    know_price(ledger)
    config = budgets_from_extras(EXTRAS, "mv")
    keys = [f"batched-{n}" for n in range(250)]  # past one page of execute_batch (100)
    ledger.reserve_many([(CreateRecord(key, "gpt-image-2"), 0.1, None) for key in keys], config)
    rows = ledger.settle_many(
        [Settlement(key, actual=n / 1000, mindvideo_task_id=f"t-{n}") for n, key in enumerate(keys)]
    )
    assert [(r.actual, r.mindvideo_task_id) for r in rows if r is not None] == [
        (n / 1000, f"t-{n}") for n in range(250)
    ]
    assert [(r.state, r.actual) for r in map(ledger.row, keys) if r is not None] == [
        ("settled", n / 1000) for n in range(250)
    ]

"""Engines for the ledger's database: one per URL and process, its connections pooled and kept.

A connection is opened once per process and thread of work, not once per transaction (opening
and closing a SQLite file costs milliseconds: more than a reservation), and is not pinged before
each use. A connection the server dropped fails its transaction; :func:`in_transaction` runs it
again once on a fresh connection. Every ledger write is keyed by its create's idempotency key and
is idempotent (a replayed reservation or settle changes nothing), so running one again is safe
even when the first attempt's COMMIT reached the server.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

T = TypeVar("T")


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection that only reads: on SQLite it does not take the write lock."""
    with engine.connect() as connection:
        yield connection.execution_options(ledger_read=True)


def in_transaction(engine: Engine, work: Callable[[Connection], T], *, read: bool = False) -> T:
    """``work(connection)`` in one transaction (committed unless ``read``); once more if the connection was dropped."""
    for attempt in (1, 2):
        try:
            if read:
                with reading(engine) as connection:
                    return work(connection)
            with engine.begin() as connection:
                return work(connection)
        except DBAPIError as error:
            # Only a dropped connection (server restart, idle timeout, failover) is worth a second try:
            # SQLAlchemy has then invalidated the pool, so the retry gets a fresh connection.
            if attempt == 2 or not error.connection_invalidated:
                raise
    raise AssertionError("unreachable")


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for_url(url: str) -> Engine:
    """One engine per database URL and process (PostgreSQL ``postgresql+psycopg2://...`` or ``sqlite:///path``)."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _new_engine(url)
        return engine


def _forget_parent_connections() -> None:
    # A forked child (Airflow's task runner) must not use its parent's pooled connections: both
    # would talk over one socket or one SQLite handle. Drop them unclosed; the child opens its own.
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_parent_connections)


def _new_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        # No pool_pre_ping: a round trip per checkout cost more than the reservation it guarded;
        # in_transaction retries a transaction whose connection was dropped instead. A settle group
        # updates each of its creates' rows (one executemany): psycopg2 sends those one round trip
        # per row unless batched (no caller reads an executemany UPDATE's rowcount).
        psycopg2 = make_url(url).drivername in ("postgresql", "postgresql+psycopg2")
        batched = {"executemany_mode": "values_plus_batch"} if psycopg2 else {}
        return create_engine(url, pool_size=5, max_overflow=10, **batched)
    # A pool of connections kept open (QueuePool, SQLAlchemy's default for a file): each thread
    # takes one for its transaction and gives it back. Each write transaction takes SQLite's write
    # lock at BEGIN (IMMEDIATE), waiting for it up to the busy timeout (60 s), so a reservation's
    # check and hold see no other writer in between, whichever process or thread it runs in. WAL
    # lets readers (the CLI, the UI) read while a worker writes.
    engine = create_engine(url, pool_size=5, max_overflow=10, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        reader = connection.get_execution_options().get("ledger_read", False)
        connection.exec_driver_sql("BEGIN" if reader else "BEGIN IMMEDIATE")

    return engine

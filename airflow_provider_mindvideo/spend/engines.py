"""Engines for the ledger's database: one per URL and process; SQLite set up for concurrent writers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection that only reads: on SQLite it does not take the write lock."""
    with engine.connect() as connection:
        yield connection.execution_options(ledger_read=True)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for_url(url: str) -> Engine:
    """One engine per database URL and process (PostgreSQL ``postgresql+psycopg2://...`` or ``sqlite:///path``)."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _new_engine(url)
        return engine


def _new_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    # Each write transaction takes SQLite's write lock at BEGIN (IMMEDIATE), waiting for it up to
    # the busy timeout, so a reservation's check and hold see no other writer in between. WAL
    # lets readers (the CLI, the UI) read while a worker writes.
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        reader = connection.get_execution_options().get("ledger_read", False)
        connection.exec_driver_sql("BEGIN" if reader else "BEGIN IMMEDIATE")

    return engine

"""The ledger as the API server reaches it: the database ``[mindvideo] ledger_conn_id`` names, read-only.

The API server is not a task: it reads the connection through Airflow's secrets backends
(``Connection.get_connection_from_secrets``), not the task SDK. A ledger that does not exist yet
(no budget has been configured, so nothing ever opened it) is no ledger: never created by a page.
"""

from __future__ import annotations

import os

from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.location import ledger_url, url_from_connection


def ledger_engine() -> Engine | None:
    """The ledger's engine, or None when there is no ledger to read."""
    url = _url()
    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :]):
        return None
    engine = engine_for_url(url)
    # Asked until the table is there; a ledger's table is never dropped, so once is enough then.
    if url not in _found and not inspect(engine).has_table("mindvideo_spend"):
        return None
    _found.add(url)
    return engine


_found: set[str] = set()


def _url() -> str:
    from airflow.configuration import conf

    conn_id = (conf.get("mindvideo", "ledger_conn_id", fallback="") or "").strip()
    if not conn_id:
        return ledger_url()  # the SQLite file under $AIRFLOW_HOME: no connection read
    from airflow.models.connection import Connection

    conn = Connection.get_connection_from_secrets(conn_id)
    return url_from_connection(
        conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema, conn.extra_dejson
    )

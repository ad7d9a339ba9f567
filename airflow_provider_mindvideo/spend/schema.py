"""The ledger's tables (SQLAlchemy Core), created and versioned by the provider itself.

Four tables and a version row. Amounts are whole micro-units (BIGINT, 1e-6 of the API's cost
unit) so that sums are exact; times are UTC. ``mindvideo-spend schema`` prints the DDL.
"""

from __future__ import annotations

import weakref

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.schema import CreateIndex, CreateTable

from airflow_provider_mindvideo.client.errors import MindVideoError

#: Indexes of earlier versions that a wider one replaced: dropped where found.
RETIRED_INDEXES = ("mindvideo_spend_dag",)

#: The version of the tables this provider writes; a ledger at a newer one is refused.
SCHEMA_VERSION = 3

#: The state of a create a budget refused: ``reserved`` is what it would have held; it counts in no
#: total, and a later reservation of its key (a retry, a wait past the reset) makes it a create again.
REFUSED = "refused"

metadata = MetaData()

schema_version = Table(
    "mindvideo_ledger_version",
    metadata,
    Column("version", Integer, nullable=False),
)

#: One row per create: what it was for, what it held and what it cost.
spend = Table(
    "mindvideo_spend",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # The create's Idempotency-Key: a replay of the key is the same create, never a second row.
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("account", String(250), nullable=False),
    Column("dag_id", String(250)),
    Column("run_id", String(250)),
    Column("task_id", String(250)),
    Column("map_index", Integer),
    Column("try_number", Integer),
    Column("model", String(250), nullable=False),
    Column("mindvideo_task_id", String(250)),
    # Space-separated names of the budgets the create counts against ('' for none).
    Column("budgets", Text, nullable=False, default=""),
    Column("reserved", BigInteger, nullable=False),
    Column("estimated", BigInteger),
    Column("actual", BigInteger),
    # What the create counts for: its reservation until settled, max(estimated, actual) once an
    # actual is told (until then max(reserved, estimated): an estimate may lie low), 0 once released.
    Column("cost", BigInteger, nullable=False),
    # reserved | settled | released | refused (a budget refused it: cost 0, counted nowhere)
    Column("state", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("settled_at", DateTime),
    Index("mindvideo_spend_created", "created_at"),
    # A DAG's creates by time, and what the MindVideo page groups and sums of them (model, state,
    # cost): the page reads this index alone, never the table. ``id`` after the time keeps "newest
    # first" (created_at, id) in the index's order. It replaced ``mindvideo_spend_dag`` (dag_id,
    # created_at): one index to keep up on a write, as before.
    Index("mindvideo_spend_dag_day", "dag_id", "created_at", "id", "model", "state", "cost"),
    # The creates of a model still in flight, found in one probe while its price is unknown.
    Index("mindvideo_spend_model", "account", "model", "state"),
)

#: Per budget and window: what is spent (settled costs) and reserved (creates in flight).
budget_window = Table(
    "mindvideo_budget_window",
    metadata,
    Column("account", String(250), primary_key=True),
    Column("budget", String(100), primary_key=True),
    Column("period", String(8), primary_key=True),
    Column("window_start", DateTime, primary_key=True),
    Column("window_end", DateTime, nullable=False),
    Column("timezone", String(64), nullable=False),
    # The limit in force at the last reservation (a limit raised mid-month applies at once).
    Column("limit_amount", BigInteger, nullable=False),
    Column("spent", BigInteger, nullable=False, default=0),
    Column("reserved", BigInteger, nullable=False, default=0),
)

#: Which windows a create holds money in: the ones of its creation time, whenever it settles.
spend_hold = Table(
    "mindvideo_spend_hold",
    metadata,
    Column("spend_id", Integer, ForeignKey("mindvideo_spend.id"), primary_key=True),
    Column("budget", String(100), primary_key=True),
    Column("period", String(8), primary_key=True),
    Column("window_start", DateTime, nullable=False),
)


#: Per model: the highest cost any settled create of it told, and the highest ``actual`` (its price
#: is known once there is one). One row per model, so a reservation reads its price in one probe.
model_price = Table(
    "mindvideo_model_price",
    metadata,
    Column("model", String(250), primary_key=True),
    Column("highest", BigInteger),
    Column("charged", BigInteger),
    # Why its price is untold for good: its lone create's task ended without a readable cost_actual
    # (version 3). Budgets refuse its creates while ``charged`` is null and this is not.
    Column("untold", Text),
)


class LedgerSchemaError(MindVideoError):
    """The ledger's tables are of a version this provider does not know."""

    retryable = False


_checked: weakref.WeakSet[Engine] = weakref.WeakSet()


def ensure_schema(engine: Engine) -> None:
    """Create the tables if missing; refuse a ledger written by a newer provider. Once per engine and process."""
    if engine in _checked:
        return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Two processes starting at once must not both create the tables.
            connection.execute(text("SELECT pg_advisory_xact_lock(7263542001)"))
        metadata.create_all(connection, checkfirst=True)
        for index in spend.indexes:  # an index added since the table was created
            index.create(connection, checkfirst=True)
        present = {index["name"] for index in inspect(connection).get_indexes(spend.name)}
        for name in present.intersection(RETIRED_INDEXES):  # names of our own: nothing from a request
            connection.execute(text(f"DROP INDEX {name}"))
        found = connection.execute(select(schema_version.c.version)).scalars().all()
        if found and max(found) < 2:
            _upgrade(connection)
        columns = {column["name"] for column in inspect(connection).get_columns(model_price.name)}
        if "untold" not in columns:  # version 2 to 3: a column of our own, so no name from a request
            connection.execute(text(f"ALTER TABLE {model_price.name} ADD COLUMN untold TEXT"))
        if not found or max(found) < SCHEMA_VERSION:
            connection.execute(insert(schema_version).values(version=SCHEMA_VERSION))
            found = [*found, SCHEMA_VERSION]
    version = max(found)
    if version > SCHEMA_VERSION:
        raise LedgerSchemaError(
            f"The MindVideo spend ledger at {engine.url.render_as_string(hide_password=True)} has schema version "
            f"{version}; this provider knows up to {SCHEMA_VERSION}. Upgrade airflow-provider-mindvideo on this "
            "machine (a newer one wrote the ledger)."
        )
    _checked.add(engine)


def _upgrade(connection: Connection) -> None:
    """Version 1 to 2: what the settled creates told of each model's price, into ``mindvideo_model_price``."""
    connection.execute(model_price.delete())
    told = (
        select(
            spend.c.model,
            func.max(func.coalesce(spend.c.estimated, spend.c.actual)),
            func.max(func.coalesce(spend.c.actual, spend.c.estimated)),
            func.max(spend.c.actual),
        )
        .where(spend.c.state == "settled")
        .group_by(spend.c.model)
    )
    for model, estimated, actual, charged in connection.execute(told):
        highest = max((m for m in (estimated, actual) if m is not None), default=None)
        connection.execute(insert(model_price).values(model=model, highest=highest, charged=charged))


def schema_sql(dialect_name: str = "postgresql") -> str:
    """The DDL of the ledger's tables for ``postgresql`` or ``sqlite``, as ``ensure_schema`` creates them."""
    dialects: dict[str, type[Dialect]] = {"postgresql": PGDialect_psycopg2, "sqlite": SQLiteDialect_pysqlite}
    if dialect_name not in dialects:
        raise ValueError(f"dialect = {dialect_name!r}: use postgresql or sqlite")
    dialect = dialects[dialect_name]()
    statements = []
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)).strip() + ";")
        indexes = sorted(table.indexes, key=lambda index: str(index.name))
        statements.extend(str(CreateIndex(index).compile(dialect=dialect)).strip() + ";" for index in indexes)
    return "\n".join(line.rstrip() for line in "\n\n".join(statements).splitlines()) + "\n"

"""A ledger written by a provider at schema version 1 or 2 is upgraded in place to version 3, its books intact.

Version 1 (commit 70f6eb6) had the version, spend, budget window and hold tables as they are now,
without ``mindvideo_model_price`` and the ``mindvideo_spend_model`` index. Version 2 adds both and
fills the price table from what the settled creates told. (A create a budget refused is a row in
state ``refused``: a value of the same column, no schema change.) Version 3 adds
``mindvideo_model_price.untold``: why a model's price is untold for good.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, create_engine, insert, inspect, select

from airflow_provider_mindvideo.spend import reading, schema
from airflow_provider_mindvideo.spend.budgets import budgets_from_extras
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.ledger import Ledger
from airflow_provider_mindvideo.spend.records import BudgetRefusal, CreateRecord
from airflow_provider_mindvideo.spend.schema import budget_window, model_price, schema_version, spend, spend_hold
from tests.spend.helpers import fixed_clock

NOW = dt.datetime(2026, 3, 29, 12, 0)  # naive UTC, as stored; the helpers' fixed clock
DAY = dt.datetime(2026, 3, 29, 0, 0)
EXTRAS = {"budgets": {"account": {"day": 1}}}


def write_version_1(engine: Engine) -> None:
    """A ledger as version 1 left it: two settled creates, one open, one the API refused."""
    with engine.begin() as connection:
        for table in (schema_version, spend, budget_window, spend_hold):
            table.create(connection)
        connection.exec_driver_sql("DROP INDEX mindvideo_spend_model")  # version 2's
        connection.execute(insert(schema_version).values(version=1))
        connection.execute(
            insert(budget_window).values(
                account="mv",
                budget="account",
                period="day",
                window_start=DAY,
                window_end=DAY + dt.timedelta(days=1),
                timezone="UTC",
                limit_amount=1_000_000,
                spent=250_000 + 300_000,
                reserved=200_000,
            )
        )
        rows = [
            ("a", "gpt-image-2", "settled", 200_000, 250_000, 240_000, 250_000),
            ("b", "seedance", "settled", 300_000, 300_000, None, 300_000),
            ("c", "gpt-image-2", "reserved", 200_000, None, None, 200_000),
            ("d", "gpt-image-2", "released", 200_000, None, None, 0),
        ]
        for key, model, state, reserved, estimated, actual, cost in rows:
            n = connection.execute(
                insert(spend)
                .values(
                    idempotency_key=key,
                    account="mv",
                    dag_id="old",
                    model=model,
                    budgets="account",
                    reserved=reserved,
                    estimated=estimated,
                    actual=actual,
                    cost=cost,
                    state=state,
                    created_at=NOW,
                )
                .returning(spend.c.id)
            ).scalar_one()
            connection.execute(insert(spend_hold).values(spend_id=n, budget="account", period="day", window_start=DAY))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return str(request.getfixturevalue("postgres_url"))


def test_a_version_1_ledger_is_upgraded_and_keeps_counting(url: str) -> None:
    write_version_1(create_engine(url))
    ledger = Ledger(engine_for_url(url), clock=fixed_clock)
    with ledger.engine.connect() as connection:
        assert max(connection.execute(select(schema_version.c.version)).scalars()) == schema.SCHEMA_VERSION == 3
        prices = {r.model: (r.highest, r.charged) for r in connection.execute(select(model_price))}
    # What the settled creates told: gpt-image-2's bound 0.25 (its estimate) and price known (an actual);
    # seedance's bound 0.3, its price not known (no actual).
    assert prices == {"gpt-image-2": (250_000, 240_000), "seedance": (300_000, None)}
    assert "mindvideo_spend_model" in {i["name"] for i in inspect(ledger.engine).get_indexes("mindvideo_spend")}
    (window,) = reading.budget_windows(ledger.engine, at=fixed_clock())
    assert (window.spent, window.reserved) == (0.55, 0.2)  # the books as version 1 left them

    config = budgets_from_extras(EXTRAS, "mv")
    # A create of gpt-image-2 is held at its bound (0.25), not the 0.01 asked: 0.55 + 0.2 + 0.25 fits 1.
    held = ledger.reserve(CreateRecord("e", "gpt-image-2"), 0.01, config)
    assert held is not None and held.reserved == 0.25
    refusal = ledger.try_reserve(CreateRecord("f", "gpt-image-2"), 0.01, config)
    assert isinstance(refusal, BudgetRefusal) and refusal.spent == 0.55 and refusal.reserved == 0.45
    # The open version-1 reservation settles, the released one stays released.
    ledger.settle("c", actual=0.1)
    ledger.settle("d")
    (window,) = reading.budget_windows(ledger.engine, at=fixed_clock())
    assert (window.spent, window.reserved) == (0.65, 0.25)
    assert ledger.row("d").state == "released"  # type: ignore[union-attr]
    # Opened again (another process): no second upgrade, no second version row.
    schema._checked.discard(ledger.engine)
    Ledger(ledger.engine)
    with ledger.engine.connect() as connection:
        assert sorted(connection.execute(select(schema_version.c.version)).scalars()) == [1, 3]


def test_a_version_2_ledger_gains_the_untold_column_and_keeps_its_prices(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        schema.metadata.create_all(connection)
        connection.exec_driver_sql("ALTER TABLE mindvideo_model_price DROP COLUMN untold")
        connection.execute(insert(schema_version).values(version=2))
        connection.execute(insert(model_price).values(model="gpt-image-2", highest=250_000, charged=240_000))
    ledger = Ledger(engine_for_url(url), clock=fixed_clock)
    assert "untold" in {c["name"] for c in inspect(ledger.engine).get_columns("mindvideo_model_price")}
    with ledger.engine.connect() as connection:
        assert sorted(connection.execute(select(schema_version.c.version)).scalars()) == [2, 3]
        assert [tuple(r) for r in connection.execute(select(model_price))] == [("gpt-image-2", 250_000, 240_000, None)]
    config = budgets_from_extras(EXTRAS, "mv")
    ledger.reserve(CreateRecord("a", "new-model"), 0.0, config)
    ledger.settle("a", ended=True)  # the new column at work
    assert isinstance(ledger.try_reserve(CreateRecord("b", "new-model"), 0.0, config), BudgetRefusal)


def test_the_page_index_replaces_the_narrower_one_it_grew_from(url: str) -> None:
    # A ledger as providers before the covering index left it: (dag_id, created_at) only.
    engine = create_engine(url)
    with engine.begin() as connection:
        schema.metadata.create_all(connection)
        connection.exec_driver_sql("DROP INDEX mindvideo_spend_dag_day")
        connection.exec_driver_sql("CREATE INDEX mindvideo_spend_dag ON mindvideo_spend (dag_id, created_at)")
    ledger = Ledger(engine_for_url(url), clock=fixed_clock)
    found = {i["name"]: i["column_names"] for i in inspect(ledger.engine).get_indexes("mindvideo_spend")}
    assert "mindvideo_spend_dag" not in found  # one index to keep up on a write, not two
    assert found["mindvideo_spend_dag_day"] == ["dag_id", "created_at", "id", "model", "state", "cost"]

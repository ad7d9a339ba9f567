"""A model whose price nothing has told, created by mapped Generates in two processes against one budget.

The emulator's books are the oracle: what it charged never passes the budget by more than one
create's true price, and the ledger's totals are its. Before the alone rule every create of an
unpriced model was reserved at 0: all eight were sent (2.4 against a limit of 0.7).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from airflow_provider_mindvideo.emulator import EmulatorConfig, MindVideoEmulator
from airflow_provider_mindvideo.spend.budgets import from_micros
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.pricing import UNKNOWN_PRICE_HOLD
from airflow_provider_mindvideo.spend.reading import budget_windows
from airflow_provider_mindvideo.spend.schema import spend

MODEL, PRICE, LIMIT = "house-model-1", 0.3, 0.7


def _mapped_generates(worker: str, connection: str, ledger: str, results: multiprocessing.Queue) -> None:
    os.environ["AIRFLOW_CONN_MINDVIDEO_DEFAULT"] = connection
    os.environ["AIRFLOW_CONN_MINDVIDEO_LEDGER"] = ledger
    os.environ["AIRFLOW__MINDVIDEO__LEDGER_CONN_ID"] = "mindvideo_ledger"
    from airflow_provider_mindvideo.operators import MindVideoGenerateOperator
    from airflow_provider_mindvideo.spend.records import BudgetWindowExceededError
    from tests.spend.test_operators_ledger import Ti

    outcomes: list[str] = []
    for map_index in range(4):
        operator = MindVideoGenerateOperator(
            task_id=f"generate_{worker}",
            model=MODEL,
            input={"prompt": f"{worker} {map_index}"},
            allow_unknown_model=True,
            deferrable=False,
            poll_interval=0.05,
            max_poll_interval=0.1,
            timeout=60,
        )
        try:
            operator.execute({"ti": Ti(task_id=f"generate_{worker}", map_index=map_index)})  # type: ignore[arg-type]
            outcomes.append("generated")
        except BudgetWindowExceededError as refused:
            outcomes.append(str(refused))
    results.put(outcomes)


def test_two_processes_create_an_unpriced_model_one_at_a_time_until_priced(tmp_path: Path) -> None:
    config = EmulatorConfig(extra_models={MODEL: "image"}, prices={MODEL: PRICE}, queued_seconds=0.1)
    ledger_file = tmp_path / "spend.db"
    with MindVideoEmulator(config=config) as emulator:
        connection: dict[str, Any] = json.loads(emulator.connection_uri())
        connection["extra"] = {"budgets": {"account": {"day": LIMIT}}}
        ledger = json.dumps({"conn_type": "sqlite", "host": str(ledger_file)})
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        workers = [
            context.Process(target=_mapped_generates, args=(name, json.dumps(connection), ledger, results))
            for name in ("left", "right")
        ]
        for worker in workers:
            worker.start()
        outcomes = [outcome for _ in workers for outcome in results.get(timeout=300)]
        for worker in workers:
            worker.join()
        assert [worker.exitcode for worker in workers] == [0, 0]
        charged = emulator.state.total_charged
    refusals = [o for o in outcomes if o != "generated"]
    assert all("Budget 'account'" in o and "Nothing was sent" in o for o in refusals)
    assert charged <= LIMIT + PRICE + 1e-9
    assert outcomes.count("generated") == 2  # 0.3 + 0.3 fit 0.7; a third would pass it
    engine = engine_for_url(f"sqlite:///{ledger_file}")
    with engine.connect() as db:
        every = db.execute(select(spend).order_by(spend.c.id)).all()
    rows = [row for row in every if row.state != "refused"]
    # Each refusal is on the books as a refused create: held at the price, counted nowhere.
    refused = [row for row in every if row.state == "refused"]
    assert len(refused) == len(refusals) and all(r.cost == 0 and r.budgets == "account" for r in refused)
    assert all(r.reserved == round(PRICE * 1e6) for r in refused)
    # The first was held at the unknown price's hold; the second waited for its settle and was held at the price.
    assert [row.reserved for row in rows] == [UNKNOWN_PRICE_HOLD, round(PRICE * 1e6)]
    assert all(row.state == "settled" and from_micros(row.actual) == PRICE for row in rows)
    (window,) = budget_windows(engine)
    assert window.spent == pytest.approx(charged) and window.reserved == 0

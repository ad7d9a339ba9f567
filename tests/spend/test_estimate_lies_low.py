"""A create answer whose ``cost_estimate`` lies low must not end its model's "goes alone".

The ledger trusts only a told ``cost_actual`` as a model's price, as ``max_cost`` does: the
estimate may be anything (tests/hostile.py). Here the emulator charges 0.5 for a model whose
answers say it is estimated at 0.0135, under a day budget of 0.03: at most one create of the model
may be charged before its price is known (0.5 past the budget, once), never two. The oracle is the
server's books (``state.total_charged``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from airflow_provider_mindvideo.batch.plan import OVER_BUDGET, SUCCEEDED, load_manifest
from airflow_provider_mindvideo.batch.trigger import DONE
from airflow_provider_mindvideo.emulator.state import EmulatorConfig
from airflow_provider_mindvideo.operators import MindVideoGenerateOperator, MindVideoSubmitOperator
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.records import BudgetWindowExceededError, SpendRow, spend_row
from airflow_provider_mindvideo.spend.schema import spend
from tests.helpers import Ti
from tests.hostile import HostileServer, RoutePlan, hostile_server
from tests.spend.test_operators_ledger import batch_trigger, run_trigger, use_ledger

MODEL = "gpt-image-2"
TRUE_PRICE = 0.5
LIE = 0.0135  # the catalogue's example price: what the ledger would hold the model at
DAY = 0.03


@pytest.fixture
def lying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_ledger(monkeypatch, tmp_path / "spend.db")
    with hostile_server(EmulatorConfig(prices={MODEL: TRUE_PRICE})) as server:
        # Every item's create answers (and its polls while it runs) say 0.0135; an ended task tells its actual.
        low = RoutePlan(persistent={"cost_estimate": ("set", LIE)})
        server.answers.plan = {n: {"create": low} for n in range(10)}
        connection = json.loads(server.connection(budgets={"account": {"day": DAY}}))
        monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps(connection))
        yield server


def spend_rows(tmp_path: Path) -> list[SpendRow]:
    engine = engine_for_url(f"sqlite:///{tmp_path / 'spend.db'}")
    with engine.connect() as connection:
        return [spend_row(found) for found in connection.execute(select(spend)).all()]


def charged_at_most_one_true_price_past_the_budget(server: HostileServer) -> None:
    assert server.state.total_charged <= DAY + TRUE_PRICE + 1e-9, [
        (t.model, t.cost) for t in server.state.tasks.values()
    ]


def test_a_second_submit_waits_for_the_first_ones_actual_and_is_refused(lying: HostileServer, tmp_path: Path) -> None:
    """Submit never sees its task end: the second create looks the first one's task up itself."""
    MindVideoSubmitOperator(task_id="a", model=MODEL, input={"prompt": "#1# a"}).execute(
        {"ti": Ti(task_id="a")}  # type: ignore[arg-type]
    )
    with pytest.raises(BudgetWindowExceededError, match="Budget 'account'"):
        MindVideoSubmitOperator(task_id="b", model=MODEL, input={"prompt": "#2# b"}).execute(
            {"ti": Ti(task_id="b")}  # type: ignore[arg-type]
        )
    charged_at_most_one_true_price_past_the_budget(lying)
    assert lying.state.charged_tasks == 1
    # The ledger learnt the true price from the first task's actual, looked up by the second create.
    (task,) = lying.state.tasks.values()
    (row,) = [r for r in spend_rows(tmp_path) if r.mindvideo_task_id == task.task_id]
    assert row.actual == TRUE_PRICE


def test_a_generate_after_a_submit_is_refused_once_the_submits_task_tells_its_price(lying: HostileServer) -> None:
    MindVideoSubmitOperator(task_id="a", model=MODEL, input={"prompt": "#1# a"}).execute(
        {"ti": Ti(task_id="a")}  # type: ignore[arg-type]
    )
    generate = MindVideoGenerateOperator(
        task_id="g", model=MODEL, input={"prompt": "#2# g"}, deferrable=False, poll_interval=0.05, timeout=30
    )
    with pytest.raises(BudgetWindowExceededError):
        generate.execute({"ti": Ti(task_id="g")})  # type: ignore[arg-type]
    charged_at_most_one_true_price_past_the_budget(lying)


def test_a_batch_creates_one_item_until_its_actual_is_told(lying: HostileServer, tmp_path: Path) -> None:
    event = run_trigger(batch_trigger(tmp_path / "b", [f"#{n}# item" for n in range(4)]))
    assert event["status"] == DONE, event
    rows = load_manifest((tmp_path / "b" / "manifest.jsonl").read_text())
    assert [row.status for row in rows].count(SUCCEEDED) == 1, rows
    assert [row.status for row in rows].count(OVER_BUDGET) == 3, rows
    charged_at_most_one_true_price_past_the_budget(lying)


def test_a_batch_looks_up_a_submits_task_that_holds_its_model(lying: HostileServer, tmp_path: Path) -> None:
    """The lone create in flight is another DAG's Submit: nothing but the batch itself would ever settle it."""
    MindVideoSubmitOperator(task_id="a", model=MODEL, input={"prompt": "#9# a"}).execute(
        {"ti": Ti(task_id="a")}  # type: ignore[arg-type]
    )
    event = run_trigger(batch_trigger(tmp_path / "b", [f"#{n}# item" for n in range(3)]))
    assert event["status"] == DONE, event
    rows = load_manifest((tmp_path / "b" / "manifest.jsonl").read_text())
    assert [row.status for row in rows] == [OVER_BUDGET] * 3, rows
    assert lying.state.charged_tasks == 1

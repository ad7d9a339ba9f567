"""The ledger's rules one by one: budgets read from the extras, reserve / settle / release / replay,
the refusal's words, the schema's version, where the ledger lives, reading it back and the command."""

from __future__ import annotations

import datetime as dt
import json
import pickle
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException
from sqlalchemy import update

from airflow_provider_mindvideo.errors import BudgetExceededError, InputValidationError
from airflow_provider_mindvideo.spend import cli, reading, schema
from airflow_provider_mindvideo.spend.budgets import MOST_MICROS, budgets_from_extras, from_micros
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.ledger import Ledger
from airflow_provider_mindvideo.spend.location import (
    LedgerMisconfiguredError,
    is_distributed,
    spend_books,
    url_from_connection,
)
from airflow_provider_mindvideo.spend.records import (
    BudgetRefusal,
    BudgetWindowExceededError,
    CreateRecord,
    PriceUnknownWait,
)
from airflow_provider_mindvideo.spend.schema import LedgerSchemaError, schema_version
from airflow_provider_mindvideo.spend.windows import UTC
from tests.spend.helpers import know_price

EXTRAS = {"budgets": {"account": {"day": 10}, "marketing": {"month": 4}}, "budget_timezone": "Europe/Berlin"}
NOW = dt.datetime(2026, 5, 31, 12, 0, tzinfo=UTC)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    books = Ledger(engine_for_url(f"sqlite:///{tmp_path / 'ledger.db'}"), clock=lambda: NOW)
    # Priced models: these tests hold several creates of one model in flight (the alone rule is tested apart).
    know_price(books, "gpt-image-2")
    know_price(books, "seedance", 0.1)
    return books


def create(key: str, **fields: object) -> CreateRecord:
    return CreateRecord(key, "gpt-image-2", dag_id="content", run_id="r1", task_id="generate", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("extras", "named"),
    [
        ({"budgets": {"account": {"day": -1}}}, "extra budgets.account.day = -1 must be a number >= 0"),
        ({"budgets": {"account": {"daily": 5}}}, "extra budgets.account.daily: 'daily' is no window"),
        ({"budgets": {"account": {"day": "50"}}}, "extra budgets.account.day = '50' must be a number"),
        ({"budgets": {"account": {"day": True}}}, "extra budgets.account.day = True must be a number"),
        ({"budgets": {"account": 50}}, "extra budgets.account = 50 must be an object"),
        ({"budgets": [50]}, "extra budgets = [50] must be an object"),
        ({"budget_timezone": "Europe/Berln"}, "extra budget_timezone = 'Europe/Berln' must be an IANA timezone"),
    ],
)
def test_a_bad_budget_names_its_field_and_value(extras: dict[str, object], named: str) -> None:
    with pytest.raises(InputValidationError, match="MindVideo connection 'mv'") as raised:
        budgets_from_extras(extras, "mv")
    assert named in str(raised.value)


def test_an_unknown_budget_name_is_refused_before_anything_is_counted() -> None:
    config = budgets_from_extras(EXTRAS, "mv")
    with pytest.raises(InputValidationError, match=r"budget = 'marketin'.*named budgets there: marketing"):
        config.applicable("marketin")
    assert [b.name for b in config.applicable(None)] == ["account"]
    assert sorted(b.name for b in config.applicable("marketing")) == ["account", "marketing"]


def test_a_refusal_names_budget_window_spent_reserved_limit_and_reset(ledger: Ledger) -> None:
    config = budgets_from_extras(EXTRAS, "mv")
    ledger.reserve(create("a"), 1.5, config, "marketing")
    ledger.settle("a", estimated=2.0)
    ledger.reserve(create("b"), 1.0, config, "marketing")
    with pytest.raises(BudgetWindowExceededError) as raised:
        ledger.reserve(create("c"), 1.5, config, "marketing")
    error = raised.value
    assert isinstance(error, BudgetExceededError) and isinstance(error, AirflowFailException)
    message = str(error)
    for words in [
        "'marketing'",
        "month 2026-05-01 (Europe/Berlin)",
        "spent 2",
        "in flight 2",  # b asked for 1, held at 2: the most a create of its model told
        "this create 2",
        "limit 4",
    ]:
        assert words in message
    assert ledger.row("b").reserved == 2.0  # type: ignore[union-attr]
    assert "resets at 2026-06-01 00:00 Europe/Berlin (2026-05-31T22:00Z)" in message
    # The refused create is on the books as refused: what it would have held, by whom, counted nowhere.
    refused = ledger.row("c")
    assert refused is not None and (refused.state, refused.cost, refused.reserved) == ("refused", 0, 2.0)
    assert refused.budgets == ("marketing",)
    assert ledger.settle("c", actual=1.0) is None  # never reserved: no answer settles it
    assert {(w.budget, w.spent, w.reserved) for w in reading.budget_windows(ledger.engine, at=NOW)} == {
        ("account", 2.0, 2.0),
        ("marketing", 2.0, 2.0),
    }
    assert pickle.loads(pickle.dumps(error)).refusal == error.refusal


def test_settle_counts_the_higher_of_estimate_and_actual_and_is_idempotent(ledger: Ledger) -> None:
    config = budgets_from_extras(EXTRAS, "mv")
    ledger.reserve(create("a"), 1.0, config)
    assert ledger.settle("a").cost == 1.0  # nothing known: stays at the reservation
    assert ledger.settle("a", estimated=0.5).cost == 1.0  # an estimate may lie low: never under the reservation
    assert ledger.settle("a", actual=0.8, mindvideo_task_id="t1").cost == 0.8
    again = ledger.settle("a", actual=0.8)
    assert (again.cost, again.estimated, again.actual, again.mindvideo_task_id) == (0.8, 0.5, 0.8, "t1")
    [window] = reading.budget_windows(ledger.engine, at=NOW)
    assert (window.spent, window.reserved) == (0.8, 0.0)
    assert ledger.settle("never-reserved", actual=1.0) is None


def test_a_replay_holds_nothing_twice_and_a_released_key_is_held_again(ledger: Ledger) -> None:
    config = budgets_from_extras(EXTRAS, "mv")
    ledger.reserve(create("a"), 3.0, config)
    ledger.reserve(create("a", try_number=2), 3.0, config)  # the next try replays the key
    ledger.settle("a", estimated=3.0)
    ledger.reserve(create("a", try_number=3), 3.0, config)
    ledger.reserve(CreateRecord("b", "seedance"), 2.0, config)
    assert ledger.release("b").state == "released"
    assert ledger.release("b").state == "released"
    [window] = reading.budget_windows(ledger.engine, at=NOW)
    assert (window.spent, window.reserved) == (3.0, 0.0)
    assert ledger.reserve(CreateRecord("b", "seedance"), 2.0, config).state == "reserved"
    [window] = reading.budget_windows(ledger.engine, at=NOW)
    assert (window.spent, window.reserved, window.left) == (3.0, 2.0, 5.0)


def test_a_model_whose_lone_create_ended_without_a_price_is_refused_not_waited_for(ledger: Ledger) -> None:
    """Under a budget a model nothing priced goes alone; if that create's task *ends* without a readable
    cost_actual, no create of it can be counted (its true price may be anything): refused at once, with
    why, never left waiting for a price that will not come. A late actual, or the documented SQL, lifts it."""
    config = budgets_from_extras(EXTRAS, "mv")
    new = CreateRecord("a", "new-model", dag_id="content", task_id="generate")
    assert ledger.reserve(new, 0.0, config).state == "reserved"
    ledger.settle("a", mindvideo_task_id="t-a")  # the answer told no cost: still its model's lone create
    assert isinstance(ledger.try_reserve(CreateRecord("b", "new-model"), 0.0, config), PriceUnknownWait)
    ledger.settle("a", mindvideo_task_id="t-a", ended=True)  # ended, and still nothing told

    refusal = ledger.try_reserve(CreateRecord("b", "new-model"), 0.0, config, "marketing")
    assert isinstance(refusal, BudgetRefusal) and not refusal.could_ever_fit
    assert refusal.untold == "its task t-a ended without a readable cost_actual"
    message = refusal.message()
    assert "'new-model'" in message and "t-a" in message and "Nothing was sent" in message
    assert "SET charged = <price>, highest = <price> WHERE model = 'new-model'" in message
    with pytest.raises(BudgetWindowExceededError, match="never told what its tasks are charged"):
        ledger.reserve(CreateRecord("c", "new-model"), 0.0, config)
    assert ledger.reserve(new, 0.0, config).state == "settled"  # a replay of the lone create is no new create
    assert [r.idempotency_key for r in reading.refused_creates(ledger.engine)] == ["c", "b"]
    # Another model is not concerned; a priced one never is.
    assert ledger.reserve(CreateRecord("d", "other-new-model"), 0.0, config).state == "reserved"
    ledger.settle("d", actual=0.2, ended=True)
    assert ledger.reserve(CreateRecord("e", "other-new-model"), 0.0, config).reserved == 0.2

    # A late answer telling the lone create's actual makes the price known: creates go again.
    ledger.settle("a", actual=0.3, ended=True)
    assert ledger.reserve(CreateRecord("b", "new-model"), 0.0, config).reserved == 0.3


def test_a_team_that_knows_an_untold_price_tells_it_with_the_documented_sql(ledger: Ledger) -> None:
    config = budgets_from_extras(EXTRAS, "mv")
    ledger.reserve(CreateRecord("a", "new-model"), 0.0, config)
    ledger.settle("a", ended=True)
    assert isinstance(ledger.try_reserve(CreateRecord("b", "new-model"), 0.0, config), BudgetRefusal)
    with ledger.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE mindvideo_model_price SET charged = 400000, highest = 400000 WHERE model = 'new-model'"
        )
    # Its price known now: creates of it go together, each held at that price.
    assert ledger.reserve(CreateRecord("b", "new-model"), 0.0, config).reserved == 0.4
    assert ledger.reserve(CreateRecord("c", "new-model"), 0.0, config).reserved == 0.4


def test_a_cost_past_what_the_books_can_hold_fills_the_window_instead_of_crashing(ledger: Ledger) -> None:
    """1e308 is a finite number a server may send as an estimate: counted as the most one amount can be."""
    config = budgets_from_extras(EXTRAS, "mv")
    ledger.reserve(create("a"), 0.1, config)
    settled = ledger.settle("a", estimated=1e308, mindvideo_task_id="t-a")
    assert settled is not None and settled.cost == from_micros(MOST_MICROS)
    refusal = ledger.try_reserve(create("b"), 0.1, config)
    assert isinstance(refusal, BudgetRefusal) and refusal.spent == from_micros(MOST_MICROS)


def test_a_ledger_written_by_a_newer_provider_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = engine_for_url(url)
    Ledger(engine)
    with engine.begin() as connection:
        connection.execute(update(schema_version).values(version=99))
    schema._checked.discard(engine)  # as a process starting afresh
    with pytest.raises(LedgerSchemaError, match="schema version 99; this provider knows up to 3"):
        Ledger(engine)


def test_no_budgets_cost_nothing_even_with_an_unreachable_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__LEDGER_CONN_ID", "no_such_connection")
    books = spend_books("mv", {"timeout": 5})
    assert not books.counting
    assert books.reserve(create("a"), 1.0) is None
    assert books.settle("a", actual=1.0) is None and books.release("a") is None
    with pytest.raises(InputValidationError, match="budget = 'marketing'"):
        spend_books("mv", {}, budget="marketing")


def test_budgets_with_a_distributed_executor_and_a_local_sqlite_ledger_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__LEDGER_CONN_ID", "")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with pytest.raises(
        LedgerMisconfiguredError, match=r"CeleryExecutor runs tasks on several machines.*ledger_conn_id"
    ):
        spend_books("mv", EXTRAS)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    books = spend_books("mv", EXTRAS, budget="marketing")
    assert books.counting and (tmp_path / "mindvideo_ledger.db").exists()
    with pytest.raises(BudgetWindowExceededError):
        books.reserve(create("big"), 5.0)


@pytest.mark.parametrize(
    ("executor", "distributed"),
    [
        ("LocalExecutor", False),
        ("SequentialExecutor", False),
        ("CeleryExecutor", True),
        ("KubernetesExecutor", True),
        ("LocalExecutor,CeleryExecutor", True),
        ("airflow.providers.edge3.executors.EdgeExecutor", True),
        ("my_executor:airflow.executors.local_executor.LocalExecutor", False),
    ],
)
def test_which_executors_run_tasks_on_other_machines(executor: str, distributed: bool) -> None:
    assert is_distributed(executor) is distributed


def test_connection_fields_become_a_sqlalchemy_url() -> None:
    url = url_from_connection("postgres", "db.internal", "ledger", "p@ss", 5432, "spend", {"sslmode": "require"})
    assert url.endswith("://ledger:p%40ss@db.internal:5432/spend?sslmode=require")
    assert url.startswith("postgresql+psycopg")
    assert url_from_connection("sqlite", "/var/ledger.db", None, None, None, None) == "sqlite:////var/ledger.db"
    with pytest.raises(LedgerMisconfiguredError, match="type 'mysql'"):
        url_from_connection("mysql", "h", None, None, None, None)


def test_reading_and_the_command(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    config = budgets_from_extras(EXTRAS, "mv")
    ledger.reserve(create("a", map_index=0), 1.0, config, "marketing")
    ledger.settle("a", estimated=1.25)
    ledger.reserve(create("b", map_index=1), 2.0, config)
    ledger.reserve(CreateRecord("c", "seedance", dag_id="other"), 0.5, config)
    ledger.release("c")
    totals = {t.key: t for t in reading.spend_totals(ledger.engine, "dag")}
    assert (totals["content"].creates, totals["content"].settled, totals["content"].reserved) == (2, 1.25, 2.0)
    assert totals["other"].counted == 0.0
    assert [t.key for t in reading.spend_totals(ledger.engine, "day")] == ["2026-05-31"]
    assert [r.idempotency_key for r in reading.recent_creates(ledger.engine, limit=2)] == ["c", "b"]

    url = ledger.engine.url.render_as_string(hide_password=False)
    assert cli.main(["--ledger-url", url, "--json", "windows", "--at", "2026-05-31T12:00:00"]) == 0
    windows = {w["budget"]: w for w in json.loads(capsys.readouterr().out)}
    assert windows["account"] | {"start": None, "resets_at": None} == {
        "account": "mv",
        "budget": "account",
        "period": "day",
        "start": None,
        "limit": 10.0,
        "spent": 1.25,
        "reserved": 2.0,
        "left": 6.75,
        "resets_at": None,
    }
    assert windows["marketing"]["resets_at"] == "2026-05-31T22:00:00+00:00"
    assert cli.main(["--ledger-url", url, "by", "model"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["key", "creates", "settled", "reserved", "counted", "refused"]
    assert table[1].split() == ["gpt-image-2", "2", "1.25", "2", "3.25", "0"]
    assert cli.main(["schema", "--dialect", "sqlite"]) == 0
    assert "CREATE TABLE mindvideo_budget_window" in capsys.readouterr().out


def test_refused_creates_are_read_apart_and_counted_in_no_total(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    config = budgets_from_extras(EXTRAS, "mv")
    ledger.reserve(create("a", map_index=0), 3.0, config, "marketing")
    for key in ("r1", "r2"):
        assert isinstance(ledger.try_reserve(create(key), 2.0, config, "marketing"), BudgetRefusal)
    assert isinstance(ledger.try_reserve(CreateRecord("r3", "seedance", dag_id="other"), 11, config), BudgetRefusal)
    totals = {t.key: t for t in reading.spend_totals(ledger.engine, "dag")}
    assert (totals["content"].creates, totals["content"].refused, totals["content"].counted) == (1, 2, 3.0)
    assert (totals["other"].creates, totals["other"].refused, totals["other"].counted) == (0, 1, 0.0)
    assert {t.key: t.refused for t in reading.spend_totals(ledger.engine, "model")} == {"gpt-image-2": 2, "seedance": 1}
    assert [r.idempotency_key for r in reading.recent_creates(ledger.engine)] == ["a"]
    refused = reading.refused_creates(ledger.engine, limit=2)
    assert [r.idempotency_key for r in refused] == ["r3", "r2"]  # newest first
    assert (refused[0].dag_id, refused[0].budgets, refused[0].reserved) == ("other", ("account",), 11.0)
    assert refused[1].budgets == ("marketing",) and refused[1].created_at == NOW
    assert [r.idempotency_key for r in reading.refused_creates(ledger.engine, dag_id="content")] == ["r2", "r1"]
    assert [r.idempotency_key for r in reading.refused_creates(ledger.engine, model="seedance")] == ["r3"]
    # Reserved later (the window has room again): a create, no longer a refusal.
    ledger.release("a")
    ledger.reserve(create("r1"), 2.0, config, "marketing")
    assert [r.idempotency_key for r in reading.refused_creates(ledger.engine)] == ["r3", "r2"]
    assert ledger.row("r1").state == "reserved"  # type: ignore[union-attr]
    url = ledger.engine.url.render_as_string(hide_password=False)
    assert cli.main(["--ledger-url", url, "--json", "refused", "--dag", "content"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert (shown["task_id"], shown["budgets"], shown["reserved"]) == ("generate", "marketing", 2.0)
    assert cli.main(["schema", "--dialect", "sqlite"]) == 0
    assert "CREATE TABLE mindvideo_budget_window" in capsys.readouterr().out

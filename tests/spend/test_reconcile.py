"""Reconcile: reservations left open by a process killed between the reservation and the answer.

The create is sent to the emulator and its answer dropped (as a killed worker would never read it);
the emulator's books say what it cost.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from airflow_provider_mindvideo import spend_command
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.emulator.state import Script
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.spend import reading
from airflow_provider_mindvideo.spend.budgets import budgets_from_extras
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.ledger import Ledger
from airflow_provider_mindvideo.spend.reconcile import open_reservations, reconcile
from airflow_provider_mindvideo.spend.records import CreateRecord
from airflow_provider_mindvideo.spend.windows import UTC
from tests.spend.helpers import know_price

EXTRAS = {"budgets": {"account": {"day": 10}}}


def killed_after_sending(ledger_url: str, key: str, prompt: str, hours_ago: float) -> str:
    """Reserve ``key`` ``hours_ago``, send its create, and lose the answer; the task id the API made."""
    then = dt.datetime.now(UTC) - dt.timedelta(hours=hours_ago)
    ledger = Ledger(engine_for_url(ledger_url), clock=lambda: then)
    know_price(ledger)  # priced: its creates need not go alone
    config = budgets_from_extras(EXTRAS, "mindvideo_default")
    ledger.reserve(CreateRecord(key, "gpt-image-2", dag_id="d", task_id="t"), 0.5, config)
    with MindVideoHook() as hook:
        return hook.create_task("gpt-image-2", {"prompt": prompt}, key).task_id


def test_reconcile_settles_a_known_task_and_leaves_an_unknown_one_counted(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    # Its task has ended when reconcile looks (an estimate alone would not lower the 0.5 held).
    emulator.state.add_script(Script(match="one", outcome="succeeded", processing_seconds=0.0))
    found = killed_after_sending(url, "lost-answer", "one", hours_ago=2)
    killed_after_sending(url, "no-task-id", "two", hours_ago=2)
    killed_after_sending(url, "recent", "three", hours_ago=0)
    ledger = Ledger(engine_for_url(url))
    assert [r.idempotency_key for r in open_reservations(ledger)] == ["lost-answer", "no-task-id"]

    done = {
        r.row.idempotency_key: r for r in reconcile(ledger, spend_command.look_up_task, task_ids={"lost-answer": found})
    }
    assert set(done) == {"lost-answer", "no-task-id"}  # the recent one may still get its answer
    settled = done["lost-answer"].row
    assert done["lost-answer"].outcome == "settled" and settled.mindvideo_task_id == found
    assert settled.cost == pytest.approx(0.0135)  # the emulator's price, not the 0.5 held
    assert done["no-task-id"].outcome == "left reserved" and "--task KEY=TASK_ID" in done["no-task-id"].why
    # Never under-counted: what is still open counts at its reservation.
    windows = reading.budget_windows(ledger.engine, since=dt.datetime(2000, 1, 1, tzinfo=UTC))
    assert sum(w.spent for w in windows) == pytest.approx(0.0135)
    assert sum(w.reserved for w in windows) == pytest.approx(1.0)  # no-task-id and recent, 0.5 each
    assert ledger.row("no-task-id").state == "reserved"  # type: ignore[union-attr]


def test_the_command_settles_with_a_given_task_id_and_fails_while_any_stays_open(
    emulator: MindVideoEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = killed_after_sending(url, "a", "one", hours_ago=1)
    killed_after_sending(url, "b", "two", hours_ago=1)
    assert spend_command.main(["--ledger-url", url, "--json", "reconcile", "--task", f"a={first}"]) == 1
    rows = {r["idempotency_key"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["a"]["outcome"] == "settled" and rows["b"]["outcome"] == "left reserved"
    second = Ledger(engine_for_url(url))
    assert second.row("a").state == "settled"  # type: ignore[union-attr]
    with MindVideoHook() as hook:  # b's task id, as found in the dashboard
        task_b = hook.create_task("gpt-image-2", {"prompt": "two"}, "b").task_id
    assert spend_command.main(["--ledger-url", url, "reconcile", "--older-than", "0", "--task", f"b={task_b}"]) == 0
    assert "settled" in capsys.readouterr().out
    assert emulator.state.charged_tasks == 2  # b's replay was free
    with pytest.raises(SystemExit):
        spend_command.main(["--ledger-url", url, "reconcile", "--task", "no-equals-sign"])

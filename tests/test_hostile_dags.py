"""Real ``dag.test()`` runs against a server that echoes the key and sends megabytes.

What Airflow stores -- XComs, the event a resumed task gets (``next_kwargs``), task logs, the
metadata database as a whole -- holds no form of the key, and no record of one task passes
``STORED_ANSWER_LIMIT``, while every output URL survives.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_mindvideo.client.models import STORED_ANSWER_LIMIT
from tests.dags.mindvideo_hostile_dags import HOSTILE
from tests.hostile_api import HostileApi, forms, hostile_connection, leaks


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileApi]:
    with hostile_connection(monkeypatch, "mindvideo_hostile") as api:
        yield api


def test_nothing_airflow_stores_holds_the_key_or_a_huge_answer(
    airflow_db: str, server: HostileApi, capsys: pytest.CaptureFixture[str]
) -> None:
    dag_run = HOSTILE.test()
    printed = capsys.readouterr()
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states == {
        "echo_failed": "failed",
        "echo_succeeded": "success",
        "huge_succeeded": "success",
        "huge_failed": "failed",
        "submit": "success",
        "wait": "success",
    }
    assert server.charged == 5

    with sqlite3.connect(os.path.join(airflow_db, "airflow.db")) as db:
        xcoms = db.execute(
            "select task_id, key, value from xcom where dag_id = ? and run_id = ?", (dag_run.dag_id, dag_run.run_id)
        ).fetchall()
        resumed = db.execute(
            "select task_id, next_kwargs from task_instance where dag_id = ? and run_id = ?",
            (dag_run.dag_id, dag_run.run_id),
        ).fetchall()
    stored = {(task_id, key): value for task_id, key, value in xcoms}
    # Outputs survive every cut: the server's URLs, the one carrying the key with it cut out.
    base = server.base_url
    assert json.loads(stored["huge_succeeded", "return_value"]) == [f"{base}/files/0.png", f"{base}/files/1.png"]
    assert json.loads(stored["wait", "return_value"]) == [f"{base}/files/0.png", f"{base}/files/1.png"]
    assert json.loads(stored["echo_succeeded", "return_value"]) == [
        f"{base}/files/0.png",
        f"{base}/files/1.png?sig=***",
    ]
    record = json.loads(stored["huge_succeeded", "mindvideo_task"])
    assert "STORED_ANSWER_LIMIT" in record["cut"]
    assert [(name, len(str(value))) for name, value in stored.items() if len(str(value)) > STORED_ANSWER_LIMIT] == []
    assert [task for task, kwargs in resumed if kwargs and len(kwargs) > STORED_ANSWER_LIMIT] == []

    texts = [str(value) for value in stored.values()] + [str(kwargs) for _, kwargs in resumed]
    texts += [printed.out, printed.err]
    assert [leaks(text) for text in texts if leaks(text)] == []
    # Every file Airflow keeps: the metadata database (event rows, XComs), task and trigger logs.
    needles = [form.encode() for form in forms()]
    assert [str(path) for path in Path(airflow_db).rglob("*") if path.is_file() and _holds(path, needles)] == []


def _holds(path: Path, needles: list[bytes]) -> bool:
    data = path.read_bytes()
    return any(needle in data for needle in needles)

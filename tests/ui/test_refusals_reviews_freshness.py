"""The spend page's refused creates, the gallery's review decisions, and answers kept only while nothing changed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from airflow_provider_mindvideo.spend import reading
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.ledger import Ledger
from airflow_provider_mindvideo.spend.schema import spend
from airflow_provider_mindvideo.ui import records
from tests.ui.test_app import NOW, get


def ledger_file(site: dict[str, Any]) -> str:
    return str(site["batches"].parent / "ledger.db")


def insert_refused(site: dict[str, Any], key: str, dag: str, run: str, task: str, reserved: int) -> None:
    """A refused create as the ledger records it (state 'refused', cost 0, reserved: what it would have held)."""
    engine = engine_for_url(f"sqlite:///{ledger_file(site)}")
    row = {
        "idempotency_key": key, "account": "mindvideo_default", "dag_id": dag, "run_id": run, "task_id": task,
        "map_index": None, "try_number": 1, "model": "flux-1", "budgets": "account:day", "reserved": reserved,
        "cost": 0, "state": "refused", "created_at": NOW.replace(tzinfo=None),
    }  # fmt: skip
    with engine.begin() as connection:
        connection.execute(insert(spend), [row])


def summaries(site: dict[str, Any], *found: tuple[str, str, str, int, int]) -> Any:
    """records.batch_summaries answering these (dag, run, task, map_index, over_budget) batches."""

    def read(dag_ids: Any, since: dt.datetime) -> list[records.BatchSummary]:
        answer = []
        for dag, run, task, index, n in found:
            manifest = f"file://{site['batches']}/{dag}/{run}/{task}/manifest.jsonl"
            value = {"counts": {"over_budget": n}, "manifest": manifest}
            if dag in dag_ids:
                answer.append(records.BatchSummary(dag, run, task, index, value, NOW - dt.timedelta(hours=1)))
        return answer

    return read


def test_refused_creates_come_from_the_ledger_and_the_batch_manifests_each_once(
    site: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(records, "batch_summaries", summaries(site, ("images", "run_1", "make", -1, 1)))
    insert_refused(site, "refused-1", "images", "run_3", "make", 2_500_000)
    insert_refused(site, "refused-2", "videos", "run_9", "clip", 9_000_000)
    alice = get(site, "alice", "/api/spend", days=30).json()
    # The refused row is no create: the figures are those before it.
    assert alice["overall"] == {"creates": 3, "settled": 0.78, "held": 0.0, "failed": 1}
    refused = alice["refused"]
    assert refused["count"] == 2
    assert [(r["source"], r["run_id"], r["would_hold"], r["error"]) for r in refused["items"]] == [
        ("ledger", "run_3", 2.5, None),
        ("manifest", "run_1", None, "no"),
    ]
    bob = get(site, "bob", "/api/spend", days=30).json()["refused"]
    assert (bob["count"], [r["run_id"] for r in bob["items"]]) == (1, ["run_9"])
    # Once the ledger records the batch's refusals too, they count from the ledger alone.
    insert_refused(site, "key-1-refused", "images", "run_1", "make", 500_000)
    assert get(site, "alice", "/api/spend", days=30).json()["refused"]["count"] == 2
    # A model filter counts the manifest's rows of that model.
    assert get(site, "alice", "/api/spend", days=30, model="kling-2").json()["refused"]["count"] == 0


def test_the_gallery_shows_each_outputs_review_decision(site: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    record = {"task_id": "mv_3", "status": "succeeded", "output_urls": ["https://cdn.example/v1.png"]}
    round_1 = [
        {"round": 1, "number": 1, "mindvideo_task_id": "mv_3", "decision": "reject", "comment": "too dark",
         "decided_by": "alice", "regenerated_as": "mv_new", "output_urls": ["https://cdn.example/v1.png"]},
    ]  # fmt: skip
    round_2 = [
        *round_1,
        {"round": 2, "number": 1, "mindvideo_task_id": "mv_new", "decision": "approve", "decided_by": "alice",
         "model": "kling-2", "prompt": "a whale\n\ntoo dark", "cost": 0.5,
         "output_urls": ["https://cdn.example/v2.png"]},
    ]  # fmt: skip
    xcoms = {
        ("clip", -1, records.TASK_KEY): record,
        ("review_result", -1, records.REVIEW_KEY): round_1,
        ("review_round_2_result", -1, records.REVIEW_KEY): round_2,
    }
    monkeypatch.setattr(records, "run_records", lambda dag, run: xcoms)
    items = get(site, "bob", "/api/items", dag_id="videos", run_id="run_9").json()["items"]
    shown = [(i["task"], i["mindvideo_task_id"], i["review"] and i["review"]["decision"]) for i in items]
    assert shown == [("clip", "mv_3", "regenerate"), ("clip", None, None), ("review_result", "mv_new", "approve")]
    assert items[0]["review"]["comment"] == "too dark" and items[0]["review"]["regenerated_as"] == "mv_new"
    assert items[2]["media"][0]["url"] == "https://cdn.example/v2.png" and items[2]["prompt"] == "a whale\n\ntoo dark"
    # The review task's own gallery holds the output it made.
    mine = get(site, "bob", "/api/items", dag_id="videos", run_id="run_9", task_id="review_result").json()
    assert [i["mindvideo_task_id"] for i in mine["items"]] == ["mv_new"]


def test_a_kept_answer_is_given_again_only_while_the_ledger_is_unchanged(site: dict[str, Any]) -> None:
    before = get(site, "bob", "/api/spend", days=30).json()["overall"]
    # Asked again with nothing changed: the kept answer, the same.
    assert get(site, "bob", "/api/spend", days=30).json()["overall"] == before
    items = get(site, "bob", "/api/items", dag_id="videos", run_id="run_9").json()["items"]
    assert before == {"creates": 2, "settled": 3.333333, "held": 4.0, "failed": 0}
    assert [i["status"] for i in items] == ["settled", "in_flight"]
    # The create in flight settles for what it held: the row count stays, its state changes.
    ledger = Ledger(engine_for_url(f"sqlite:///{ledger_file(site)}"))
    ledger.settle("key-4", estimated=4.0, actual=4.0, mindvideo_task_id="mv_4")
    after = get(site, "bob", "/api/spend", days=30).json()["overall"]
    assert after == {"creates": 2, "settled": 7.333333, "held": 0.0, "failed": 0}
    items = get(site, "bob", "/api/items", dag_id="videos", run_id="run_9").json()["items"]
    assert [i["status"] for i in items] == ["settled", "settled"]


def test_a_submit_and_the_sensor_that_waited_for_it_are_one_item(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The content pipeline: submit[i] records the task as created, wait[i] the same task with its outputs.
    submitted = {"task_id": "mv_3", "status": "queued", "model": "kling-2", "prompt": "a whale", "output_urls": []}
    finished = {
        "task_id": "mv_3",
        "status": "succeeded",
        "output_urls": ["https://cdn.example/w.png"],
        "cost_actual": 9,
    }
    xcoms = {("clip", -1, records.TASK_KEY): submitted, ("wait", -1, records.TASK_KEY): finished}
    monkeypatch.setattr(records, "run_records", lambda dag, run: xcoms)
    items = get(site, "bob", "/api/items", dag_id="videos", run_id="run_9").json()["items"]
    first = items[0]
    assert (first["task"], first["status"], first["prompt"], first["cost"], first["cost_source"]) == (
        "clip", "succeeded", "a whale", 3.333333, "ledger",
    )  # fmt: skip
    assert [m["url"] for m in first["media"]] == ["https://cdn.example/w.png"]
    assert [(i["task"], i["status"]) for i in items] == [("clip", "succeeded"), ("clip", "in_flight")]


def test_budgets_need_every_dag_not_the_right_to_list_dags(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.ui.helpers import ACCESS, PerDagAuthManager

    # FAB answers is_authorized_dag(GET) without a DAG with "may list DAGs": true for a role reading one.
    def like_fab(self: Any, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        dags = ACCESS.get(user.username, set())
        if details is None or getattr(details, "id", None) is None:
            return dags is None or bool(dags)
        return dags is None or details.id in dags

    monkeypatch.setattr(PerDagAuthManager, "is_authorized_dag", like_fab)
    alice = get(site, "alice", "/api/spend", days=30).json()
    assert (alice["budgets_visible"], alice["windows"]) == (False, [])
    assert alice["overall"]["creates"] == 3  # the create outside any DAG is not hers to see
    assert get(site, "boss", "/api/spend", days=30).json()["budgets_visible"] is True


def test_a_gallery_page_shows_the_ledgers_figures_after_a_change_and_the_manifests_after_a_rewrite(
    site: dict[str, Any],
) -> None:
    def page(number: int) -> Any:
        return get(site, "alice", "/api/items", dag_id="images", run_id="run_1", page=number, per_page=1).json()

    assert (page(1)["items"][0]["cost"], page(1)["cost"]) == (0.37, 0.78)
    # The manifest stays as it was (its items are kept); the ledger changes: a row's cost, a new create.
    engine = engine_for_url(f"sqlite:///{ledger_file(site)}")
    with engine.begin() as connection:
        connection.execute(update(spend).where(spend.c.idempotency_key == "key-0").values(cost=400_000))
    insert_refused(site, "key-late", "images", "run_1", "make", 700_000)
    first, late = page(1), page(3)
    assert (first["items"][0]["cost"], first["items"][0]["cost_source"]) == (0.4, "ledger")
    assert (late["items"][0]["status"], late["items"][0]["cost"], late["total"]) == ("over_budget", 0.0, 3)
    with engine.connect() as connection:
        run_1 = spend.c.run_id == "run_1"
        in_ledger = connection.execute(select(func.sum(spend.c.cost)).where(run_1)).scalar_one()
    assert first["cost"] == late["cost"] == in_ledger / 1_000_000 == 0.81
    assert first["statuses"] == {"succeeded": 1, "over_budget": 2}
    assert [page(n)["items"][0]["number"] for n in (1, 2, 3)] == [0, 1, 2]
    # The manifest rewritten (the batch went on): its items are read again.
    manifest = site["batches"] / "images" / "run_1" / "make" / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace('"over_budget"', '"failed"'))
    assert page(2)["items"][0]["status"] == "failed"
    assert page(2)["statuses"] == {"succeeded": 1, "failed": 1, "over_budget": 1}


def test_recent_creates_of_every_dag_and_none_come_newest_first_as_the_ledger_orders_them(site: dict[str, Any]) -> None:
    # Who reads every DAG sees the create outside any DAG too: two queries (DAGs, no DAG) merged.
    boss = get(site, "boss", "/api/spend", days=30).json()["recent"]
    engine = engine_for_url(f"sqlite:///{ledger_file(site)}")
    in_ledger = reading.recent_creates(engine, limit=20)
    assert [(r["dag_id"], r["run_id"], r["state"]) for r in boss] == [(r.dag_id, r.run_id, r.state) for r in in_ledger]
    assert [r["dag_id"] for r in boss[:2]] == [None, "videos"]  # created at the same instant: the later row first

"""The plugin's app through HTTP, as Airflow's API server mounts it: figures, pages, visibility per user, files."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from airflow_provider_mindvideo.batch.plan import ItemResult, WorkItem, dump_manifest
from airflow_provider_mindvideo.ui import records
from airflow_provider_mindvideo.ui.app import STATIC_FILES
from airflow_provider_mindvideo.ui.app import app as mindvideo_app
from tests.ui.helpers import filled_ledger, installed_auth_manager, token_of

API_KEY = "mv_live_UI_TEST_SECRET_0123456789"
NOW = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: str) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "ui-test-secret-" + "x" * 64)
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__LEDGER_CONN_ID", "ui_ledger")
    ledger_file = tmp_path / "ledger.db"
    monkeypatch.setenv("AIRFLOW_CONN_UI_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(ledger_file)}))
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps({"conn_type": "mindvideo", "password": API_KEY}))
    batches = tmp_path / "batches"
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__BATCH_FOLDER", f"file://{batches}")
    filled_ledger(str(ledger_file), NOW)
    # A batch in run_1 of images: two items (the ledger's key-0 and key-1), one saved to storage.
    folder = batches / "images" / "run_1" / "make"
    folder.mkdir(parents=True)
    stored = tmp_path / "saved" / "cat.png"
    stored.parent.mkdir()
    stored.write_bytes(b"\x89PNG stored copy")
    # As the batch records a saved file: its size and digest (the UI serves nothing else).
    sealed = {"bytes": stored.stat().st_size, "sha256": hashlib.sha256(stored.read_bytes()).hexdigest()}
    rows = [
        ItemResult(
            line=2,
            position=0,
            model="flux-1",
            status="succeeded",
            task_id="mv_0",
            idempotency_key="key-0",
            cost_estimate=0.5,
            cost_actual=0.37,
            output_urls=["http://127.0.0.1:1/out/cat.png"],
            files=[
                {"url": "http://127.0.0.1:1/out/cat.png", "path": f"file://{stored}", "content_type": "image/png"}
                | sealed
            ],
        ),
        ItemResult(line=3, position=1, model="flux-1", status="over_budget", idempotency_key="key-1", error="no"),
    ]
    (folder / "manifest.jsonl").write_text(dump_manifest(rows))
    work = [WorkItem(0, 2, "flux-1", {"prompt": "a cat"}, "k0"), WorkItem(1, 3, "flux-1", {"prompt": "a dog"}, "k1")]
    (folder / "manifest.work.jsonl").write_text("".join(item.to_json() + "\n" for item in work))
    server = FastAPI()
    server.mount("/mindvideo", mindvideo_app)
    with installed_auth_manager():
        yield {"client": TestClient(server), "batches": batches, "stored": stored}


def get(site: dict[str, Any], user: str | None, path: str, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {token_of(user)}"} if user else {}
    return site["client"].get(f"/mindvideo{path}", params=params, headers=headers)


def test_the_figures_are_the_ledgers_to_the_cent_and_only_the_viewers_dags(site: dict[str, Any]) -> None:
    alice = get(site, "alice", "/api/spend", days=30).json()
    assert alice["overall"] == {"creates": 3, "settled": 0.78, "held": 0.0, "failed": 1}
    assert [row["key"] for row in alice["top_dags"]] == ["images"]
    assert alice["choices"] == {"dags": ["images"], "models": ["flux-1"]}
    assert {d["day"] for d in alice["daily"]} == {(NOW - dt.timedelta(days=n)).date().isoformat() for n in (1, 3)}
    assert [r["state"] for r in alice["failed"]] == ["released"]
    assert alice["budgets_visible"] is False and alice["windows"] == []
    assert all(r["dag_id"] == "images" for r in alice["recent"])

    bob = get(site, "bob", "/api/spend", days=30, by="model").json()
    assert bob["overall"] == {"creates": 2, "settled": 3.333333, "held": 4.0, "failed": 0}
    assert [(d["key"], d["counted"]) for d in bob["daily"]] == [("kling-2", 3.333333), ("kling-2", 4.0)]

    boss = get(site, "boss", "/api/spend", days=30).json()
    assert boss["overall"] == {"creates": 6, "settled": 4.363333, "held": 4.0, "failed": 1}
    assert boss["budgets_visible"] is True
    # Budget windows add up every DAG: the day's window holds today's creates.
    day = next(w for w in boss["windows"] if w["period"] == "day")
    assert (day["spent"], day["reserved"], day["limit"]) == (0.25, 4.0, 1000.0)
    assert day["left"] == pytest.approx(995.75)


def test_a_filter_on_a_dag_the_viewer_may_not_read_is_refused(site: dict[str, Any]) -> None:
    assert get(site, "alice", "/api/spend", dag_id="videos").status_code == 404
    assert get(site, "alice", "/api/spend", dag_id="images", model="kling-2").json()["overall"]["creates"] == 0


@pytest.mark.parametrize(
    "path", ["/", "/gallery?dag_id=images", "/static/spend.js", "/api/spend", "/api/items?dag_id=images&run_id=run_1"]
)
def test_every_route_refuses_a_caller_without_a_valid_token(site: dict[str, Any], path: str) -> None:
    assert site["client"].get(f"/mindvideo{path}").status_code == 401
    forged = {"Authorization": "Bearer not.a.token"}
    assert site["client"].get(f"/mindvideo{path}", headers=forged).status_code in (401, 403)


def test_the_gallery_joins_manifest_work_list_and_ledger(site: dict[str, Any]) -> None:
    answer = get(site, "alice", "/api/items", dag_id="images", run_id="run_1").json()
    items = answer["items"]
    assert [(i["position"], i["status"], i["cost"], i["prompt"]) for i in items] == [
        (0, "succeeded", 0.37, "a cat"),
        (1, "over_budget", 0.41, "a dog"),
    ]
    assert answer["statuses"] == {"succeeded": 1, "over_budget": 1} and answer["cost"] == 0.78
    assert items[0]["media"] == [
        {"url": "http://127.0.0.1:1/out/cat.png", "kind": "image", "stored": {"position": 0, "n": 0}}
    ]
    # The same run for bob: as if it did not exist.
    assert get(site, "bob", "/api/items", dag_id="images", run_id="run_1").status_code == 404
    assert get(site, "bob", "/gallery", dag_id="images").status_code == 404


def test_ledger_rows_without_a_manifest_are_items_too(site: dict[str, Any]) -> None:
    items = get(site, "bob", "/api/items", dag_id="videos", run_id="run_9").json()["items"]
    assert [(i["status"], i["cost"], i["model"]) for i in items] == [
        ("settled", 3.333333, "kling-2"),
        ("in_flight", 4.0, "kling-2"),
    ]


def test_a_generate_record_gives_its_outputs_and_the_ledgers_cost(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    record = {
        "task_id": "mv_3",
        "status": "succeeded",
        "output_urls": ["https://cdn.example/v.mp4"],
        "cost_estimate": 9,
    }
    monkeypatch.setattr(records, "run_records", lambda dag, run: {("clip", -1, records.TASK_KEY): record})
    items = get(site, "bob", "/api/items", dag_id="videos", run_id="run_9", task_id="clip").json()["items"]
    assert items[0]["source"] == "task" and items[0]["cost"] == 3.333333
    assert items[0]["media"] == [{"url": "https://cdn.example/v.mp4", "kind": "video", "stored": None}]
    assert [i["status"] for i in items[1:]] == ["in_flight"]


def test_a_ten_thousand_item_run_is_paged_on_the_server(site: dict[str, Any]) -> None:
    folder = site["batches"] / "videos" / "run_big" / "many"
    folder.mkdir(parents=True)
    rows = [
        ItemResult(line=n + 2, position=n, model="kling-2", status="succeeded", cost_estimate=0.01)
        for n in range(10_000)
    ]
    (folder / "manifest.jsonl").write_text(dump_manifest(rows))
    # No ledger row names the task instance; its XCom does (the batch summary's manifest).
    summary = {"manifest": f"file://{folder}/manifest.jsonl"}
    records_of_run = {("many", -1, records.BATCH_KEY): summary}
    import airflow_provider_mindvideo.ui.gallery as gallery

    original = records.run_records
    try:
        gallery.records.run_records = lambda dag, run: records_of_run  # type: ignore[assignment]
        answer = get(site, "bob", "/api/items", dag_id="videos", run_id="run_big", page=3, per_page=100).json()
    finally:
        gallery.records.run_records = original  # type: ignore[assignment]
    assert answer["total"] == 10_000 and answer["pages"] == 100
    assert [i["position"] for i in answer["items"]] == list(range(200, 300))
    assert [i["number"] for i in answer["items"]] == list(range(200, 300))
    assert {(i["cost"], i["cost_source"], i["review"]) for i in answer["items"]} == {(0.01, "manifest", None)}
    assert answer["cost"] == 100.0


def test_a_stored_file_is_served_only_through_the_manifest_naming_it(site: dict[str, Any]) -> None:
    params = {"dag_id": "images", "run_id": "run_1", "task_id": "make", "position": 0}
    assert get(site, "alice", "/api/file", **params).content == site["stored"].read_bytes()
    assert get(site, "bob", "/api/file", **params).status_code == 404
    assert get(site, "alice", "/api/file", **params | {"position": 1}).status_code == 404  # no stored file
    assert get(site, "alice", "/api/file", **params | {"n": 5}).status_code == 404


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("run_id", "../../../../etc"),
        ("run_id", "..%2F..%2F..%2Fetc"),
        ("task_id", "../../../../../../etc/passwd"),
        ("task_id", "%2e%2e/%2e%2e/etc/passwd"),
        ("dag_id", "../images"),
    ],
)
def test_traversal_reaches_no_file(site: dict[str, Any], field: str, value: str) -> None:
    params = {"dag_id": "images", "run_id": "run_1", "task_id": "make", "position": 0} | {field: value}
    response = get(site, "boss", "/api/file", **params)
    assert response.status_code == 404
    assert b"root:" not in response.content


def test_static_files_are_the_listed_ones_only(site: dict[str, Any]) -> None:
    for name in sorted(STATIC_FILES):
        assert get(site, "alice", f"/static/{name}").status_code == 200
    for name in ["../app.py", "..%2Fapp.py", "__init__.py", "%2e%2e%2fapp.py"]:
        assert get(site, "alice", f"/static/{name}").status_code == 404


def test_no_answer_carries_the_api_key_and_nothing_loads_from_the_internet(site: dict[str, Any]) -> None:
    answers = [
        get(site, "boss", "/api/spend"),
        get(site, "boss", "/api/items", dag_id="images", run_id="run_1"),
        get(site, "boss", "/"),
        get(site, "boss", "/gallery", dag_id="images"),
        *(get(site, "boss", f"/static/{name}") for name in sorted(STATIC_FILES)),
    ]
    for answer in answers:
        assert answer.status_code == 200
        assert API_KEY not in answer.text
    for name in sorted(STATIC_FILES):
        text = get(site, "boss", f"/static/{name}").text
        # Links the page builds at run time are fine; nothing it loads names a host.
        assert '<script src="http' not in text and "@import" not in text and 'href="http' not in text


def test_airflow_discovers_the_plugin_with_its_app_and_views(tmp_path: Path) -> None:
    code = (
        "from airflow import plugins_manager as p;"
        "apps, _ = p.get_fastapi_plugins();"
        "views, _ = p._get_ui_plugins();"
        "print('apps:', [a['url_prefix'] for a in apps if a['name'] == 'MindVideo']);"
        "print('views:', sorted(v['destination'] for v in views if v['href'].startswith('/mindvideo')))"
    )
    env = os.environ.copy()
    # Not from the repository's root: its setuptools *.egg-info would be a second copy of the entry point.
    run = {"capture_output": True, "text": True, "env": env, "check": True, "cwd": tmp_path}
    found = subprocess.run([sys.executable, "-c", code], **run)
    assert ours(found.stdout) == ["apps: ['/mindvideo']", "views: ['dag_run', 'nav', 'task_instance']"]
    env["AIRFLOW__MINDVIDEO__UI_ENABLED"] = "False"
    off = subprocess.run([sys.executable, "-c", code], **run)
    assert ours(off.stdout) == ["apps: []", "views: []"]


def ours(stdout: str) -> list[str]:
    """The probe's lines: Airflow 3.2 prints its own on import too (alembic's plugin set-up)."""
    return [line for line in stdout.splitlines() if line.startswith(("apps:", "views:"))]

"""Attacks on the plugin's public surface (issue 28's review): files, markup, visibility, kept answers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo.batch.plan import ItemResult, dump_manifest
from tests.ui.test_app import get

FILE = {"dag_id": "images", "run_id": "run_1", "task_id": "make", "position": 0}


def _manifest_naming(site: dict[str, Any], entry: dict[str, Any]) -> None:
    """Rewrite run_1/make's manifest (a DAG's task writes it) so that item 0's stored file is ``entry``."""
    row = ItemResult(
        line=2, position=0, model="flux-1", status="succeeded", task_id="mv_0", idempotency_key="key-0",
        output_urls=["http://127.0.0.1:1/out/cat.png"], files=[{"url": "http://127.0.0.1:1/out/cat.png", **entry}],
    )  # fmt: skip
    (site["batches"] / "images" / "run_1" / "make" / "manifest.jsonl").write_text(dump_manifest([row]))


def _described(path: Path, content_type: str = "image/png") -> dict[str, Any]:
    data = path.read_bytes()
    return {
        "path": f"file://{path}",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_type": content_type,
    }


def test_a_manifest_cannot_name_any_file_of_the_api_servers_disk(site: dict[str, Any], tmp_path: Path) -> None:
    # The manifest is written by DAG code on a worker; the API server holds secrets (its airflow.cfg,
    # the fernet key). A manifest that names such a file without knowing its content is not served.
    secret = tmp_path / "airflow.cfg"
    secret.write_text("[core]\nfernet_key = SECRET_FERNET\n")
    _manifest_naming(site, {"path": f"file://{secret}", "content_type": "image/png"})
    response = get(site, "alice", "/api/file", **FILE)
    assert response.status_code == 404
    assert b"SECRET_FERNET" not in response.content


def test_a_symlink_in_place_of_a_stored_file_is_not_followed(site: dict[str, Any], tmp_path: Path) -> None:
    # The file the batch stored is swapped for a link to a secret of the same size: the digest tells.
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"S" * len(site["stored"].read_bytes()))
    _manifest_naming(site, _described(site["stored"]))
    site["stored"].unlink()
    site["stored"].symlink_to(secret)
    response = get(site, "alice", "/api/file", **FILE)
    assert response.status_code == 404
    assert b"SSSS" not in response.content


def test_a_stored_html_or_svg_is_not_served_as_a_page_of_airflows_origin(site: dict[str, Any], tmp_path: Path) -> None:
    for name, content_type in [("x.html", "text/html"), ("x.svg", "image/svg+xml"), ("x.xml", "application/xml")]:
        page = tmp_path / name
        page.write_text("<svg xmlns='http://www.w3.org/2000/svg' onload='alert(document.cookie)'/>")
        _manifest_naming(site, _described(page, content_type))
        response = get(site, "alice", "/api/file", **FILE)
        if response.status_code == 200:
            served = response.headers["content-type"]
            assert not served.startswith(("text/html", "image/svg", "application/xml", "text/xml")), served
            assert response.headers.get("x-content-type-options") == "nosniff"
            assert "sandbox" in response.headers.get("content-security-policy", "")


def test_a_stored_image_is_still_served_with_its_type(site: dict[str, Any]) -> None:
    _manifest_naming(site, _described(site["stored"]))
    response = get(site, "alice", "/api/file", **FILE)
    assert response.status_code == 200
    assert response.content == site["stored"].read_bytes()
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_manifest_rows_position_reaches_the_page_as_a_number_only(site: dict[str, Any]) -> None:
    # The pages write `#${position + 1}` into their HTML: a string there is markup on Airflow's origin.
    markup = "<img src=x onerror=alert(document.cookie)>"
    rows = [
        ItemResult(line=2, position=markup, model="flux-1", status="succeeded", task_id="mv_0"),  # type: ignore[arg-type]
        ItemResult(line=3, position=1, model="flux-1", status="over_budget", error="no"),
    ]
    (site["batches"] / "images" / "run_1" / "make" / "manifest.jsonl").write_text(dump_manifest(rows))
    answer = get(site, "alice", "/api/items", dag_id="images", run_id="run_1").json()
    positions = [item["position"] for item in answer["items"]]
    assert markup not in repr(answer)
    assert all(p is None or type(p) is int for p in positions), positions


def test_a_create_refused_again_shows_its_latest_refusal(site: dict[str, Any], tmp_path: Path) -> None:
    # A retry refused again rewrites the row in place: state and cost (0) stay, what it would have
    # held and when move. The kept answer must see it.
    import datetime as dt

    import pytest

    from airflow_provider_mindvideo.client.errors import BudgetExceededError
    from airflow_provider_mindvideo.spend.budgets import budgets_from_extras
    from airflow_provider_mindvideo.spend.engines import engine_for_url
    from airflow_provider_mindvideo.spend.ledger import Ledger
    from airflow_provider_mindvideo.spend.records import CreateRecord
    from tests.ui.helpers import Clock
    from tests.ui.test_app import NOW

    clock = Clock(NOW + dt.timedelta(hours=1))
    ledger = Ledger(engine_for_url(f"sqlite:///{tmp_path / 'ledger.db'}"), clock=clock)
    config = budgets_from_extras({"budgets": {"account": {"day": 1000, "month": 10000}}}, "mindvideo_default")
    create = CreateRecord("again", "flux-1", "images", "run_5", "make", None, 1)
    with pytest.raises(BudgetExceededError):
        ledger.reserve(create, 2000, config)
    first = get(site, "alice", "/api/spend", days=7).json()["refused"]["items"]
    assert [r["would_hold"] for r in first if r["run_id"] == "run_5"] == [2000.0]
    clock.now += dt.timedelta(minutes=5)
    with pytest.raises(BudgetExceededError):
        ledger.reserve(create, 3000, config)
    again = get(site, "alice", "/api/spend", days=7).json()["refused"]
    assert again["count"] == 1
    assert [r["would_hold"] for r in again["items"] if r["run_id"] == "run_5"] == [3000.0]


def test_a_manifest_replaced_within_one_clock_tick_is_read_again(site: dict[str, Any]) -> None:
    # The batch writes its manifest whole under a temporary name and renames it. Two writes within
    # one tick of the file system's clock (ext4: a few ms) with the same length: same (size, mtime).
    import os

    manifest = site["batches"] / "images" / "run_1" / "make" / "manifest.jsonl"

    def write(status: str) -> None:
        row = ItemResult(line=2, position=0, model="flux-1", status=status, task_id="mv_0")
        partial = manifest.with_name(".manifest.partial")
        partial.write_text(dump_manifest([row]))
        os.replace(partial, manifest)

    write("succeeded")
    tick = manifest.stat().st_mtime_ns
    statuses = get(site, "alice", "/api/items", dag_id="images", run_id="run_1").json()["statuses"]
    assert (statuses.get("succeeded"), statuses.get("timed_out")) == (1, None)
    write("timed_out")
    os.utime(manifest, ns=(tick, tick))
    statuses = get(site, "alice", "/api/items", dag_id="images", run_id="run_1").json()["statuses"]
    assert (statuses.get("succeeded"), statuses.get("timed_out")) == (None, 1)


def test_a_manifest_cannot_reach_the_disk_through_another_scheme(site: dict[str, Any], tmp_path: Path) -> None:
    # 'local://' is the local file system to ObjectStoragePath, not a 'file://' path: the same rule holds.
    secret = tmp_path / "airflow.cfg"
    secret.write_text("[core]\nfernet_key = SECRET_FERNET\n")
    _manifest_naming(site, {"path": f"local://{secret}", "content_type": "image/png"})
    response = get(site, "alice", "/api/file", **FILE)
    assert response.status_code == 404
    assert b"SECRET_FERNET" not in response.content


def test_a_stored_copy_in_object_storage_is_served_when_it_is_the_one_saved(site: dict[str, Any]) -> None:
    described = _described(site["stored"])
    _manifest_naming(site, described | {"path": f"local://{site['stored']}"})
    response = get(site, "alice", "/api/file", **FILE)
    assert response.status_code == 200
    assert response.content == site["stored"].read_bytes()
    _manifest_naming(site, described | {"path": f"local://{site['stored']}", "sha256": "0" * 64})
    assert get(site, "alice", "/api/file", **FILE).status_code == 404


def test_a_runs_xcom_cannot_point_its_gallery_at_another_dags_manifest(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Whoever may write DAG images' XComs (its code, or a user with XCom edit rights on it) names
    # the default place of a run of DAG videos: alice, who may not read videos, must not see it.
    from airflow_provider_mindvideo.batch.plan import WorkItem
    from airflow_provider_mindvideo.ui import records

    theirs = site["batches"] / "videos" / "run_9" / "clip"
    theirs.mkdir(parents=True)
    secret = tmp_path / "whale.png"
    secret.write_bytes(b"\x89PNG the videos DAG's output")
    row = ItemResult(line=2, position=0, model="kling-2", status="succeeded", task_id="mv_9",
                     output_urls=["http://127.0.0.1:1/whale.png"],
                     files=[{"url": "http://127.0.0.1:1/whale.png", **_described(secret)}])  # fmt: skip
    (theirs / "manifest.jsonl").write_text(dump_manifest([row]))
    (theirs / "manifest.work.jsonl").write_text(WorkItem(0, 2, "kling-2", {"prompt": "secret whale"}, "k").to_json())
    for named in [
        f"file://{theirs}/manifest.jsonl",
        f"file://{site['batches']}/images/run_x/../../videos/run_9/clip/manifest.jsonl",
    ]:
        xcoms = {("steal", -1, records.BATCH_KEY): {"manifest": named, "counts": {}}}
        monkeypatch.setattr(
            records, "run_records", lambda dag_id, run_id, found=xcoms: found if dag_id == "images" else {}
        )
        answer = get(site, "alice", "/api/items", dag_id="images", run_id="run_x").json()
        assert "secret whale" not in repr(answer) and "mv_9" not in repr(answer), named
        served = get(site, "alice", "/api/file", dag_id="images", run_id="run_x", task_id="steal", position=0)
        assert served.status_code == 404, named


def test_a_damaged_manifest_leaves_the_rest_of_the_run_in_view(site: dict[str, Any]) -> None:
    (site["batches"] / "images" / "run_1" / "make" / "manifest.jsonl").write_text('{"position": 0\n')
    response = get(site, "alice", "/api/items", dag_id="images", run_id="run_1")
    assert response.status_code == 200
    assert response.json()["total"] >= 1  # the run's ledger rows still show


def test_the_file_route_refuses_no_token_a_forged_one_and_an_unsigned_one(site: dict[str, Any]) -> None:
    import base64
    import json

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"sub": "boss", "role": "admin", "aud": "apache-airflow", "exp": 4_000_000_000, "nbf": 0, "iat": 0}
    unsigned = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
    forged = f"{part({'alg': 'HS512', 'typ': 'JWT'})}.{part(claims)}.{part({'x': 1})}"
    url = "/mindvideo/api/file"
    assert site["client"].get(url, params=FILE).status_code == 401
    for token in (unsigned, forged):
        response = site["client"].get(url, params=FILE, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code in (401, 403), token
        assert response.content != site["stored"].read_bytes()


def test_a_content_type_cannot_add_a_header(site: dict[str, Any]) -> None:
    _manifest_naming(site, _described(site["stored"], "video/mp4\r\nSet-Cookie: session=stolen"))
    response = get(site, "alice", "/api/file", **FILE)
    assert "set-cookie" not in response.headers
    assert response.headers["content-type"] == "application/octet-stream"

"""The MindVideo pages on real Airflow processes with FAB's auth manager, seen by two people with different DAG access.

api-server, scheduler, dag-processor and triggerer (as in :mod:`tests.e2e.test_real_airflow`)
with ``FabAuthManager``; the emulator in its own process; a budget on the connection, so that
every create is in the ledger. Three users: ``pipeline`` may read only the content pipeline
(a FAB role with ``can_read`` on ``DAG:mindvideo_content_pipeline``), ``batcher`` only the daily
batch, ``lead`` is an Admin. The content pipeline and the batch run against the emulator; then
each page is opened in headless Chromium (Debian's, driven by Playwright; the test installs it
when missing) after a login through FAB's form, and the plugin's JSON routes are called directly
with each user's token (``POST /auth/token``) and with none.

``MINDVIDEO_WRITE_DOCS=1`` (``make ui-screenshots``) also saves both pages' screenshots, as the
lead sees them, into docs/_static; without it they go to a throwaway folder.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.processes import BIN, ROOT, LocalAirflow, wait_for
from tests.e2e.test_review_in_browser import screenshot

pytestmark = pytest.mark.e2e

PIPELINE = "mindvideo_content_pipeline"
BATCH = "mindvideo_daily_batch"
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "mindvideo-ui-e2e"
#: Who may read what: a FAB role per user with can_read on these DAGs; None: the Admin role.
USERS: dict[str, list[str] | None] = {"pipeline": [PIPELINE], "batcher": [BATCH], "lead": None}
PROMPTS = ["A red fox in the snow, ui e2e", "A blue whale, ui e2e", "A green tea field, ui e2e"]

# Run in the cluster's environment: roles with per-DAG read access, and their users (FAB's own API).
MAKE_USERS = """
import json, sys
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

users, password = json.loads(sys.argv[1]), sys.argv[2]
with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    sm.sync_roles()
    for name, dags in users.items():
        if dags is None:
            role = sm.find_role("Admin")
        else:
            role = sm.add_role(f"{name}_reader")
            for dag_id in dags:
                sm.add_permission_to_role(role, sm.create_permission("can_read", f"DAG:{dag_id}"))
        assert sm.add_user(name, name, "E2e", f"{name}@example.com", role, password=password), name
"""


@pytest.fixture(scope="module")
def browser_path() -> str:
    subprocess.run(["bash", str(ROOT / "scripts" / "install-browser.sh")], check=True)
    return CHROMIUM


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalAirflow, str]]:
    cluster = LocalAirflow(tmp_path_factory.mktemp("airflow-ui-e2e"), dags=ROOT / "example_dags")
    cluster.settings.pop("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS")
    cluster.settings["AIRFLOW__CORE__AUTH_MANAGER"] = (
        "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    )
    cluster.settings["AIRFLOW__API_AUTH__JWT_SECRET"] = "mindvideo-ui-e2e-" + "s" * 48
    try:
        emulator = cluster.start_emulator("emulator", "--image-seconds", "1")
        # A budget far above what the runs cost: every create goes through the ledger.
        cluster.connect("mindvideo_default", emulator, budgets={"account": {"day": 1000}})
        cluster.start_airflow(PIPELINE, BATCH)
        subprocess.run(
            [str(BIN / "python"), "-c", MAKE_USERS, json.dumps(USERS), PASSWORD],
            env=cluster.env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        yield cluster, emulator
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def runs(cluster: tuple[LocalAirflow, str]) -> dict[str, str]:
    """The content pipeline's run and the batch's, both finished."""
    airflow, _ = cluster
    media = airflow.home / "media"
    prompts_csv = airflow.home / "prompts.csv"
    with open(ROOT / "example_dags" / "data" / "mindvideo_daily_prompts.csv", newline="") as source:
        rows = list(csv.reader(source))
    prompts_csv.write_text("".join(",".join(f'"{cell}"' for cell in row) + "\n" for row in rows))
    conf_pipeline = {"prompts": PROMPTS, "size": "1:1", "destination": (media / "pipeline").as_uri()}
    started = {
        PIPELINE: airflow.trigger(PIPELINE, conf_pipeline, f"ui_pipeline__{time.time_ns()}"),
        BATCH: airflow.trigger(
            BATCH, {"prompts_csv": prompts_csv.as_uri(), "destination": (media / "batch").as_uri()},
            f"ui_batch__{time.time_ns()}",
        ),
    }  # fmt: skip
    for dag_id, run_id in started.items():
        wait_for(lambda d=dag_id, r=run_id: run_state(airflow, d, r) in ("success", "failed"), f"{dag_id} to end", 900)
        assert run_state(airflow, dag_id, run_id) == "success", airflow.query(
            "select task_id, map_index, state from task_instance where run_id = ?", run_id
        )
    return started


def run_state(cluster: LocalAirflow, dag_id: str, run_id: str) -> str | None:
    rows = cluster.query("select state from dag_run where dag_id = ? and run_id = ?", dag_id, run_id)
    return str(rows[0][0]) if rows else None


def ledger(cluster: LocalAirflow, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(cluster.home / "mindvideo_ledger.db", timeout=60) as db:
        return db.execute(sql, params).fetchall()


def settled_of(cluster: LocalAirflow, dag_id: str) -> float:
    """What the DAG's creates settled for, from the ledger's own rows (micro-units, summed exactly)."""
    ((micros, creates),) = ledger(
        cluster, "select coalesce(sum(cost), 0), count(*) from mindvideo_spend where dag_id = ? and state = 'settled'",
        dag_id,
    )  # fmt: skip
    assert creates > 0, dag_id
    return int(micros) / 1_000_000


def token(cluster: LocalAirflow, user: str) -> str:
    answer = httpx.post(
        f"http://127.0.0.1:{cluster.api_port}/auth/token", json={"username": user, "password": PASSWORD}, timeout=60
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def plugin(cluster: LocalAirflow, path: str, user_token: str | None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {user_token}"} if user_token else {}
    return httpx.get(
        f"http://127.0.0.1:{cluster.api_port}/mindvideo{path}", params=params, headers=headers, timeout=120
    )


def test_each_user_sees_only_their_dags_figures_and_media(
    cluster: tuple[LocalAirflow, str], runs: dict[str, str], browser_path: str
) -> None:
    from playwright.sync_api import sync_playwright

    airflow, emulator = cluster
    books = httpx.get(f"{emulator}/_emulator/state", timeout=30).json()
    settled = {dag_id: settled_of(airflow, dag_id) for dag_id in (PIPELINE, BATCH)}
    # The ledger's books and the emulator's agree: every charge is a settled create, to the cent.
    assert round(sum(settled.values()), 2) == round(books["total_charged"], 2)
    creates = {
        dag_id: len(ledger(airflow, "select id from mindvideo_spend where dag_id = ?", dag_id)) for dag_id in runs
    }
    assert creates == {PIPELINE: len(PROMPTS), BATCH: 6}
    assert sum(creates.values()) == books["charged_tasks"]

    tokens = {user: token(airflow, user) for user in USERS}
    own = {"pipeline": PIPELINE, "batcher": BATCH}
    # Direct HTTP: each sees their DAG's figures alone, and the other's run is as if it did not exist.
    for user, dag_id in own.items():
        other = BATCH if dag_id == PIPELINE else PIPELINE
        figures = plugin(airflow, "/api/spend", tokens[user], days=7).json()
        assert [row["key"] for row in figures["top_dags"]] == [dag_id], figures
        assert figures["overall"]["settled"] == settled[dag_id] and figures["overall"]["creates"] == creates[dag_id]
        assert figures["budgets_visible"] is False and figures["windows"] == []
        assert {r["dag_id"] for r in figures["recent"]} == {dag_id}
        assert plugin(airflow, "/api/items", tokens[user], dag_id=other, run_id=runs[other]).status_code == 404
        assert plugin(airflow, "/gallery", tokens[user], dag_id=other, run_id=runs[other]).status_code == 404
        assert plugin(airflow, "/api/spend", tokens[user], dag_id=other).status_code == 404
        assert plugin(airflow, "/api/items", tokens[user], dag_id=dag_id, run_id=runs[dag_id]).status_code == 200
    lead = plugin(airflow, "/api/spend", tokens["lead"], days=7).json()
    assert {row["key"] for row in lead["top_dags"]} == set(runs) and lead["budgets_visible"] is True
    (window,) = [w for w in lead["windows"] if w["period"] == "day"]
    assert round(window["spent"], 6) == round(sum(settled.values()), 6) and window["reserved"] == 0
    # No token, a forged one: refused, on every route the pages call.
    for path, params in [
        ("/", {}), ("/api/spend", {}), ("/static/spend.js", {}),
        ("/gallery", {"dag_id": BATCH, "run_id": runs[BATCH]}), ("/api/items", {"dag_id": BATCH, "run_id": runs[BATCH]}),
    ]:  # fmt: skip
        assert plugin(airflow, path, None, **params).status_code == 401, path
        assert plugin(airflow, path, "not.a.token", **params).status_code in (401, 403), path

    expected_prompts = {PIPELINE: PROMPTS, BATCH: batch_prompts(airflow, runs[BATCH])}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            for user, dag_id in own.items():
                page = logged_in(browser, airflow, user)
                spend = open_spend(page, airflow)
                assert spend["dags"] == [dag_id], spend
                assert spend["cards"]["Settled"] == f"{settled[dag_id]:.2f}"
                assert spend["cards"]["Creates"] == str(creates[dag_id])
                gallery = open_gallery(page, airflow, dag_id, runs[dag_id])
                # Every output once, in the run's order (map index, or the batch's line), each image shown.
                assert gallery["prompts"] == expected_prompts[dag_id]
                assert len(gallery["widths"]) == len(expected_prompts[dag_id]) and all(gallery["widths"])
                other = BATCH if dag_id == PIPELINE else PIPELINE
                response = page.goto(gallery_url(airflow, other, runs[other]))
                assert response is not None and response.status == 404
                page.context.close()
            page = logged_in(browser, airflow, "lead")
            spend = open_spend(page, airflow)
            assert sorted(spend["dags"]) == sorted(runs)
            assert spend["cards"]["Settled"] == f"{sum(settled.values()):.2f}"
            # Each recent create's thumbnail, looked up by its MindVideo task in its run's gallery.
            page.wait_for_function(
                "() => [...document.querySelectorAll('.thumbslot')].every(s => s.querySelector('img')?.complete)",
                timeout=60_000,
            )
            assert page.locator(".thumbslot img").count() == sum(creates.values())
            page.screenshot(path=str(screenshot("ui-spend-page.png")), full_page=True)
            open_gallery(page, airflow, BATCH, runs[BATCH])
            page.screenshot(path=str(screenshot("ui-gallery.png")), full_page=True)
        finally:
            browser.close()


def batch_prompts(cluster: LocalAirflow, run_id: str) -> list[str]:
    """The batch's prompts in its manifest's order (the line of each item)."""
    ((value,),) = cluster.query(
        "select value from xcom where run_id = ? and task_id = 'generate' and key = 'mindvideo_batch'", run_id
    )
    manifest = Path(json.loads(value)["manifest"].removeprefix("file://"))
    rows = sorted(
        (json.loads(line) for line in manifest.read_text().splitlines() if line.strip()), key=lambda r: r["line"]
    )
    work = {
        json.loads(line)["position"]: json.loads(line)
        for line in manifest.with_suffix(".work.jsonl").read_text().splitlines()
    }
    return [work[row["position"]]["input"]["prompt"] for row in rows]


def logged_in(browser: Any, cluster: LocalAirflow, user: str) -> Any:
    """A page of a new browser context, logged in through FAB's login form."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{cluster.api_port}/auth/login/")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("input[type=submit], button[type=submit]").first.click()
    wait_for(lambda: any(c["name"] == "_token" for c in context.cookies()), f"{user}'s login", timeout=120)
    return page


def open_spend(page: Any, cluster: LocalAirflow) -> dict[str, Any]:
    page.goto(f"http://127.0.0.1:{cluster.api_port}/mindvideo/")
    page.wait_for_selector("#overall .card", timeout=60_000)
    cards = page.locator("#overall .card").evaluate_all(
        "cards => cards.map(c => [c.querySelector('.muted').textContent, c.querySelector('.v').textContent])"
    )
    dags = page.locator("#dag option").evaluate_all("options => options.map(o => o.value).filter(v => v)")
    return {"cards": dict(cards), "dags": dags}


def gallery_url(cluster: LocalAirflow, dag_id: str, run_id: str) -> str:
    query = httpx.QueryParams({"dag_id": dag_id, "run_id": run_id})
    return f"http://127.0.0.1:{cluster.api_port}/mindvideo/gallery?{query}"


def open_gallery(page: Any, cluster: LocalAirflow, dag_id: str, run_id: str) -> dict[str, Any]:
    page.goto(gallery_url(cluster, dag_id, run_id))
    page.wait_for_selector("#items .item", timeout=60_000)
    page.wait_for_function("() => [...document.querySelectorAll('#items img')].every(i => i.complete)", timeout=60_000)
    prompts = page.locator("#items .item .prompt").evaluate_all("items => items.map(p => p.textContent)")
    widths = page.locator("#items .item img").evaluate_all("images => images.map(i => i.naturalWidth)")
    return {"prompts": prompts, "widths": widths}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-x", "-q"]))

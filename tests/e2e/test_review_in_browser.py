"""The review example on real Airflow processes, decided by a person's clicks in headless Chromium.

api-server, scheduler, dag-processor and triggerer (as in :mod:`tests.e2e.test_real_airflow`),
the emulator in its own process, Debian's chromium driven by Playwright. The test installs the
browser itself when it is missing (``scripts/install-browser.sh``).
``MINDVIDEO_WRITE_DOCS=1`` also saves the review page's screenshot for the docs.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.processes import ROOT, LocalAirflow, wait_for

pytestmark = pytest.mark.e2e

DAG_ID = "mindvideo_review_pipeline"
CHROMIUM = "/usr/bin/chromium"


def screenshot(name: str) -> Path:
    """Where a screenshot goes: the docs' folder with MINDVIDEO_WRITE_DOCS=1, else a throwaway one."""
    if os.environ.get("MINDVIDEO_WRITE_DOCS") == "1":
        return ROOT / "docs" / "_static" / name
    return Path(tempfile.gettempdir()) / f"mindvideo-{name}"


@pytest.fixture(scope="module")
def browser_path() -> str:
    subprocess.run(["bash", str(ROOT / "scripts" / "install-browser.sh")], check=True)
    return CHROMIUM


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalAirflow, str]]:
    cluster = LocalAirflow(tmp_path_factory.mktemp("airflow-review-e2e"), dags=ROOT / "example_dags")
    # No login page: the simple auth manager makes everyone an admin.
    cluster.settings["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
    try:
        emulator = cluster.start_emulator("emulator", "--image-seconds", "1")
        cluster.connect("mindvideo_default", emulator)
        cluster.start_airflow(DAG_ID)
        yield cluster, emulator
    finally:
        cluster.stop_all()


def task_state(cluster: LocalAirflow, run_id: str, task_id: str) -> str | None:
    rows = cluster.query("select state from task_instance where run_id = ? and task_id = ?", run_id, task_id)
    return str(rows[0][0]) if rows and rows[0][0] else None


def charges(emulator: str, prompts: list[str]) -> dict[str, int]:
    tasks = httpx.get(f"{emulator}/_emulator/state").json()["tasks"]
    return {prompt: sum(1 for task in tasks if task["prompt"].startswith(prompt)) for prompt in prompts}


def handed_over(cluster: LocalAirflow, run_id: str, task_id: str) -> bool:
    """The scheduler has processed the exit of the worker that parked the page awaiting input.

    Answering before that loses a race inside Airflow: the answer queues the task again, then the
    late "success" of the parking process meets a queued task and Airflow fails it ("finished
    with state success, but the task instance's state attribute is queued"). A person takes
    longer than that; a test must wait for it.
    """
    line = f"task_id='{task_id}', run_id='{run_id}', try_number=1, map_index=0)"
    log = (cluster.home / "scheduler.log").read_text(errors="replace")
    return any("Received executor event with state success" in row and line in row for row in log.splitlines())


def review_page(cluster: LocalAirflow, run_id: str, task_id: str, page: int = 0) -> str:
    """A page of a round: the pages are a mapped task, one map index per page."""
    tasks = f"http://127.0.0.1:{cluster.api_port}/dags/{DAG_ID}/runs/{run_id}/tasks"
    return f"{tasks}/{task_id}/mapped/{page}/required_actions"


def open_review(page: Any, url: str, round_text: str) -> list[int]:
    """Open a review page; the natural widths of its output images once every one has loaded or failed."""
    page.goto(url)
    page.get_by_text(round_text).wait_for(timeout=60_000)
    images = page.locator("img[alt^='item ']")
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"img[alt^='item ']\")].every(i => i.complete)", timeout=30_000
    )
    return [int(width) for width in images.evaluate_all("images => images.map(i => i.naturalWidth)")]


def choose(page: Any, field: str, value: str) -> None:
    """Pick a value in one of the form's select fields, as a person does: open it, click the option."""
    page.locator(f"#element_{field}").click()
    page.get_by_role("option", name=value, exact=True).click()
    assert page.locator(f"input[type=hidden][name='element_{field}']").get_attribute("value") == value


def test_a_reviewer_approves_two_rejects_one_and_only_the_approved_are_published(
    cluster: tuple[LocalAirflow, str], browser_path: str
) -> None:
    from playwright.sync_api import sync_playwright

    airflow, emulator = cluster
    prompts = ["A red fox in the snow, e2e review", "A blue whale, e2e review", "A green tea field, e2e review"]
    destination = airflow.home / "media"
    conf = {"prompts": prompts, "size": "1:1", "destination": destination.as_uri()}
    run_id = airflow.trigger(DAG_ID, conf, f"review__{time.time_ns()}")

    def states() -> Any:
        return airflow.query("select task_id, map_index, state from task_instance where run_id = ?", run_id)

    wait_for(lambda: task_state(airflow, run_id, "review") == "awaiting_input", "the review to wait for a person")
    generated = {
        prompt: record["task_id"]
        for prompt, record in zip(prompts, _records(airflow, run_id, "generate", "mindvideo_task"), strict=True)
    }
    assert charges(emulator, prompts) == dict.fromkeys(prompts, 1)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            widths = open_review(page, review_page(airflow, run_id, "review"), "Round 1 of 2")
            assert len(widths) == 3 and all(width > 0 for width in widths), widths
            page.screenshot(path=str(screenshot("review-page.png")))
            # Nothing is pre-set (a pre-set "reject" would pay for a new image on Submit alone).
            preset = page.locator("input[type=hidden][name^='element_item_']").evaluate_all("e => e.map(i => i.value)")
            assert not any(preset), preset
            choose(page, "item_1", "approve")
            choose(page, "item_2", "reject")
            choose(page, "item_3", "approve")
            # The comment reaches the regeneration (append_comment, on by default).
            page.locator("#element_item_2_comment").fill("too dark")
            page.mouse.move(0, 0)
            page.screenshot(path=str(screenshot("review-form.png")))
            wait_for(lambda: handed_over(airflow, run_id, "review"), "the scheduler to see the page parked")
            page.get_by_test_id("hitl-option-Submit review").click()

            # The rejected one is generated again (one charge) and shown in round 2, where it is
            # rejected for good.
            wait_for(
                lambda: task_state(airflow, run_id, "review_round_2") == "awaiting_input" or "failed" in str(states()),
                "round 2 to wait for a person",
            )
            assert task_state(airflow, run_id, "review_round_2") == "awaiting_input", states()
            widths = open_review(page, review_page(airflow, run_id, "review_round_2"), "Round 2 of 2")
            assert len(widths) == 1 and widths[0] > 0, widths
            choose(page, "item_2", "reject")
            wait_for(lambda: handed_over(airflow, run_id, "review_round_2"), "the scheduler to see round 2 parked")
            page.get_by_test_id("hitl-option-Submit review").click()
        finally:
            browser.close()

    wait_for(lambda: task_state(airflow, run_id, "publish") in ("success", "failed", "upstream_failed"), "publish")
    assert task_state(airflow, run_id, "publish") == "success", states()
    published = sorted(path.name for path in (destination / "published").iterdir())
    assert published == sorted(f"{generated[prompts[i]]}_0.png" for i in (0, 2))
    # One more charge, for the rejected item only.
    assert charges(emulator, prompts) == {prompts[0]: 1, prompts[1]: 2, prompts[2]: 1}

    (review,) = _records(airflow, run_id, "review_round_2_result", "return_value")
    assert review["approved_task_ids"] == [generated[prompts[0]], generated[prompts[2]]]
    rows = {(row["round"], row["number"]): row for row in review["manifest"]}
    assert rows[(1, 2)]["decision"] == "reject" and rows[(1, 2)]["comment"] == "too dark"
    assert rows[(1, 2)]["regenerated_as"] and rows[(2, 2)]["decision"] == "reject"
    regenerated = [
        task for task in httpx.get(f"{emulator}/_emulator/state").json()["tasks"] if "too dark" in task["prompt"]
    ]
    assert [task["prompt"] for task in regenerated] == [f"{prompts[1]}\n\ntoo dark"]
    assert all(row["decided_by"] and row["decided_at"] and not row["timed_out"] for row in rows.values()), rows


def _records(cluster: LocalAirflow, run_id: str, task_id: str, key: str) -> list[Any]:
    rows = cluster.query(
        "select value from xcom where run_id = ? and task_id = ? and key = ? order by map_index", run_id, task_id, key
    )
    return [json.loads(value) for (value,) in rows]

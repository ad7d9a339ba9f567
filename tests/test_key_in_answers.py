"""A server that quotes the caller's key back, or sends megabytes: what the provider keeps of it.

The key is cut out where answers become models (``protocol``), so the hook (sync and async),
the wait's trigger (through aiohttp), the batch trigger and everything after them see clean
text; what one task leaves in storage is capped at ``STORED_ANSWER_LIMIT``, output URLs kept.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

from airflow_provider_mindvideo.batch.plan import dump_work_list, entries_from_list, load_manifest, work_list
from airflow_provider_mindvideo.batch.trigger import DONE, MindVideoBatchTrigger
from airflow_provider_mindvideo.client.errors import MindVideoError, UnexpectedResponseError
from airflow_provider_mindvideo.client.models import STORED_ANSWER_LIMIT, MindVideoTask
from airflow_provider_mindvideo.client.protocol import RetryPolicy, task_from_response
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger
from tests.conftest import Api
from tests.helpers import Ti
from tests.hostile_api import KEY, HostileApi, hostile_connection, leaks

QUICK = RetryPolicy(max_retries=1, backoff=0.01, max_backoff=0.01)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileApi]:
    with hostile_connection(monkeypatch) as api:
        yield api


@pytest.fixture(autouse=True)
def quick_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = asyncio.sleep

    async def short_sleep(seconds: float) -> None:
        await real_sleep(min(seconds, 0.01))

    monkeypatch.setattr("airflow_provider_mindvideo.triggers.sleep", short_sleep)


def create(prompt: str) -> str:
    with MindVideoHook() as hook:
        return hook.create_task("gpt-image-2", {"prompt": prompt}).task_id


def shown(task: MindVideoTask) -> str:
    """Every way the provider shows or stores a task."""
    return "\n".join(
        [task.model_dump_json(), repr(task), json.dumps(task.summary()), str(task.error_message), str(task.output_urls)]
    )


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("prompt", ["echo failed", "echo succeeded"])
def test_the_hook_gives_tasks_and_events_without_the_key(server: HostileApi, path: str, prompt: str) -> None:
    task_id = create(prompt)
    api = Api(path, MindVideoHook(retry_policy=QUICK))
    polls = [api.get_task(task_id), api.get_task(task_id)]  # the first answers a status quoting the key
    events = api.get_task_events(task_id)
    texts = [shown(task) for task in polls] + [event.model_dump_json() + event.describe() for event in events]
    assert [leaks(text) for text in texts if leaks(text)] == []
    assert polls[0].reported_status == "thinking about ***"
    assert "Bearer ***" in shown(polls[1])  # what the server said stays, less the key
    assert len(events) == 4 and "auth header was Bearer ***" in events[0].describe()


def test_every_string_of_an_answer_is_clean_dict_keys_too(server: HostileApi) -> None:
    task_id = create("echo failed")
    with MindVideoHook() as hook:
        hook.get_task(task_id)
        task = hook.get_task(task_id)

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield str(key)
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)
        elif isinstance(value, str):
            yield value

    found = list(strings({**task.model_dump(), **(task.model_extra or {})}))
    assert "Bearer ***" in found and "debug ***" in found  # an error's and the answer's dict keys
    assert [text for text in found if leaks(text)] == []
    assert task.request_id == "req-***"


def events(trigger: Any) -> list[TriggerEvent]:
    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


def wait_for(task_id: str, end_from_trigger: bool = False) -> TriggerEvent:
    trigger = MindVideoTaskTrigger(
        task_id, poll_interval=0.01, max_poll_interval=0.02, end_from_trigger=end_from_trigger
    )
    (event,) = events(trigger)
    return event


@pytest.mark.parametrize("prompt", ["echo failed", "echo succeeded"])
@pytest.mark.parametrize("end_from_trigger", [False, True])
def test_the_waits_event_and_log_hold_no_key(
    server: HostileApi, caplog: pytest.LogCaptureFixture, prompt: str, end_from_trigger: bool
) -> None:
    event = wait_for(create(prompt), end_from_trigger)
    stored = event.model_dump_json()
    assert [leaks(text) for text in [stored, caplog.text] if leaks(text)] == []
    if isinstance(event, TaskSuccessEvent):
        assert event.xcoms["return_value"][1] == f"{server.base_url}/files/1.png?sig=***"


def test_a_4_mib_extra_field_leaves_small_events_and_xcoms_and_every_url(server: HostileApi) -> None:
    task_id = create("huge succeeded")
    urls = [f"{server.base_url}/files/0.png", f"{server.base_url}/files/1.png"]
    ended = wait_for(task_id, end_from_trigger=True)
    resumed = wait_for(task_id)
    assert isinstance(ended, TaskSuccessEvent)
    assert ended.xcoms["return_value"] == urls and resumed.payload["task"]["output"]["images"][0] == {"url": urls[0]}
    for stored in (ended.model_dump_json(), resumed.model_dump_json(), json.dumps(ended.xcoms["mindvideo_task"])):
        assert len(stored) < STORED_ANSWER_LIMIT
    assert "(STORED_ANSWER_LIMIT)" in ended.xcoms["mindvideo_task"]["cut"]
    assert "(STORED_ANSWER_LIMIT)" in resumed.payload["task"]["cut"]


def test_a_4_mib_error_leaves_a_small_event(server: HostileApi) -> None:
    event = wait_for(create("huge failed"))
    assert event.payload["status"] == "failed"
    assert len(event.model_dump_json()) < STORED_ANSWER_LIMIT
    assert "boom" in event.payload["message"]


def answer(body: dict[str, Any]) -> httpx.Response:
    request = httpx.Request("GET", "https://api.example/api/v1/tasks/t1", headers={"Authorization": f"Bearer {KEY}"})
    return httpx.Response(200, json=body, request=request)


def test_output_urls_that_cannot_fit_are_refused_for_good_naming_the_limit() -> None:
    urls = [f"https://cdn.example/{i:05d}/" + "p" * 1000 for i in range(100)]  # 100 KB of URLs
    with pytest.raises(UnexpectedResponseError, match=r"STORED_ANSWER_LIMIT") as raised:
        task_from_response(answer({"task_id": "t1", "status": "succeeded", "output": {"images": urls}}))
    assert not raised.value.retryable  # the same answer would come back: a retry only waits
    assert "t1" in str(raised.value)


def test_a_small_answer_is_read_as_it_came() -> None:
    body = {
        "task_id": "t1",
        "status": "succeeded",
        "output": {"images": [{"url": "https://cdn.example/0.png", "w": 1}]},
    }
    task = task_from_response(answer({**body, "new_field": {"nested": [1, 2]}}))
    assert task.output == body["output"] and task.model_extra == {"new_field": {"nested": [1, 2]}}
    assert task.cut is None and "cut" not in task.summary()
    # The provider's note is its own: a server cannot write it.
    assert task_from_response(answer({**body, "cut": "fake"})).cut is None


def test_the_batch_keeps_no_key_and_no_huge_row(server: HostileApi, tmp_path: Path) -> None:
    prompts = ["echo failed", "echo succeeded", "huge succeeded", "huge failed"]
    items = work_list(entries_from_list([{"prompt": p} for p in prompts]), "gpt-image-2", Ti())
    (tmp_path / "work.jsonl").write_text(dump_work_list(items))
    trigger = MindVideoBatchTrigger(
        f"file://{tmp_path}/work.jsonl",
        f"file://{tmp_path}/manifest.jsonl",
        try_number=1,
        max_generations=1,
        poll_interval=0.01,
        max_poll_interval=0.02,
        progress_interval=0.05,
    )
    (event,) = events(trigger)
    assert event.payload["status"] == DONE, event.payload
    rows = load_manifest((tmp_path / "manifest.jsonl").read_text())
    assert Counter(row.status for row in rows) == {"succeeded": 2, "failed": 2}
    assert rows[1].output_urls == [f"{server.base_url}/files/0.png", f"{server.base_url}/files/1.png?sig=***"]
    assert rows[2].output_urls == [f"{server.base_url}/files/0.png", f"{server.base_url}/files/1.png"]
    assert max(len(row.to_json()) for row in rows) < STORED_ANSWER_LIMIT
    written = [path.read_text(errors="replace") for path in tmp_path.rglob("*") if path.is_file()]
    assert [leaks(text) for text in [*written, event.model_dump_json()] if leaks(text)] == []


def test_a_redirect_or_a_refusal_quoting_the_key_raises_without_it() -> None:
    request = httpx.Request("GET", "https://api.example/api/v1/tasks/t1", headers={"Authorization": f"Bearer {KEY}"})
    for response in (
        httpx.Response(
            302, headers={"Location": f"https://collector.example/?k={quote(KEY, safe='')}"}, request=request
        ),
        httpx.Response(400, json={"detail": {"echo": f"Bearer {KEY}"}}, request=request),
    ):
        with pytest.raises(MindVideoError) as raised:
            task_from_response(response)
        assert not leaks(str(raised.value))

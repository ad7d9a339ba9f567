"""MindVideoHook against the emulator over real HTTP, each test on the sync and the async path."""

from __future__ import annotations

import email.utils
import logging
import time
from datetime import UTC, datetime, tzinfo

import httpx
import pytest

from airflow_provider_mindvideo.client import protocol
from airflow_provider_mindvideo.client.errors import (
    AuthenticationError,
    IdempotencyConflictError,
    InputValidationError,
    RateLimitedError,
    ServerError,
    TaskNotFoundError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_provider_mindvideo.client.models import TaskStatus
from airflow_provider_mindvideo.client.protocol import RetryPolicy
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from tests.conftest import FAST_RETRIES, Api

PROMPT = {"prompt": "an orange cat on a windowsill", "size": "16:9"}


def wait_until_terminal(api: Api, task_id: str) -> object:
    # Polls the emulator until the task ends; bounded by the pytest timeout, not a guess.
    while True:
        task = api.get_task(task_id)
        if task.is_terminal:
            return task
        time.sleep(0.05)


def test_create_get_and_events(api: Api, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    real_clock = emulator.state.clock
    created_at = real_clock()
    # The emulator's clock stopped for the create: its answer says queued however late it is sent.
    monkeypatch.setattr(emulator.state, "clock", lambda: created_at)
    created = api.create_task("gpt-image-2", PROMPT)
    monkeypatch.setattr(emulator.state, "clock", real_clock)
    assert created.status is TaskStatus.QUEUED
    assert created.cost_estimate == pytest.approx(0.0135)
    assert created.request_id

    done = wait_until_terminal(api, created.task_id)
    assert done.status is TaskStatus.SUCCEEDED
    assert done.cost_actual == pytest.approx(0.0135)
    assert done.output_urls == [f"{emulator.base_url}/files/{created.task_id}/0.png"]

    events = api.get_task_events(created.task_id)
    assert [e.status for e in events] == ["queued", "processing", "succeeded"]
    assert emulator.state.charged_tasks == 1


def test_same_key_same_payload_replays_without_charge(api: Api, emulator: MindVideoEmulator) -> None:
    first = api.create_task("gpt-image-2", PROMPT, idempotency_key="order-42")
    again = api.create_task("gpt-image-2", PROMPT, idempotency_key="order-42")
    assert again.task_id == first.task_id
    assert emulator.state.charged_tasks == 1


def test_same_key_other_payload_is_a_conflict_naming_the_key(api: Api, emulator: MindVideoEmulator) -> None:
    api.create_task("gpt-image-2", PROMPT, idempotency_key="order-43")
    with pytest.raises(IdempotencyConflictError, match=r"'order-43'.*different payload") as info:
        api.create_task("gpt-image-2", {"prompt": "something else"}, idempotency_key="order-43")
    assert info.value.http_status == 409
    assert info.value.retryable is False
    assert emulator.state.charged_tasks == 1
    assert emulator.state.requests["create"] == 2  # a 409 is not retried


def test_bad_key_is_an_authentication_error_without_retries(
    api: Api, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT",
        f'{{"conn_type": "mindvideo", "host": "{emulator.base_url}", "password": "mv_live_wrong"}}',
    )
    with pytest.raises(AuthenticationError, match="refused the API key") as info:
        api.create_task("gpt-image-2", PROMPT)
    assert info.value.http_status == 401
    assert "connection 'mindvideo_default'" in str(info.value)  # which password to fix
    assert "mv_live_wrong" not in str(info.value)
    assert emulator.state.requests["create"] == 1
    assert emulator.state.charged_tasks == 0


def test_unknown_task_is_not_found(api: Api, emulator: MindVideoEmulator) -> None:
    with pytest.raises(TaskNotFoundError) as info:
        api.get_task("task_does_not_exist")
    assert info.value.http_status == 404
    assert emulator.state.requests["get"] == 1


def test_invalid_input_is_refused_before_any_request(api: Api, emulator: MindVideoEmulator) -> None:
    with pytest.raises(InputValidationError, match=r"input\.size = '7:5'"):
        api.create_task("gpt-image-2", {"prompt": "ok", "size": "7:5"})
    assert sum(emulator.state.requests.values()) == 0


def test_server_side_validation_error_is_not_retried(api: Api, emulator: MindVideoEmulator) -> None:
    # Input the client cannot judge (an unknown model the caller allowed) but the server refuses.
    emulator.add_fault("status", route="create", status=422)
    with pytest.raises(InputValidationError) as info:
        api.create_task("brand-new-model", {"prompt": "x"}, allow_unknown_model=True)
    assert info.value.http_status == 422
    assert emulator.state.requests["create"] == 1


class _FrozenDatetime(datetime):
    """``datetime`` as the protocol sees it: now is always the same instant."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _FrozenDatetime:
        return cls(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("retry_after", ["7", "http-date"])
def test_429_waits_for_retry_after(
    api: Api, emulator: MindVideoEmulator, sleeps: list[float], retry_after: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if retry_after == "http-date":
        # A date 5 s after the protocol's (frozen) now: on the real clock a busy machine reading
        # the answer late made the wait shorter than the test allowed.
        monkeypatch.setattr(protocol, "datetime", _FrozenDatetime)
        retry_after = email.utils.formatdate(_FrozenDatetime.now().timestamp() + 5, usegmt=True)
    emulator.add_fault("status", route="create", status=429, retry_after=retry_after, times=2)
    task = api.create_task("gpt-image-2", PROMPT)
    assert task.task_id
    assert len(sleeps) == 2
    expected = 7.0 if retry_after == "7" else 5.0
    assert all(expected - 1.5 <= s <= expected for s in sleeps)
    assert emulator.state.requests["create"] == 3
    assert emulator.state.charged_tasks == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried_with_backoff(api: Api, emulator: MindVideoEmulator, sleeps: list[float], status: int) -> None:
    emulator.add_fault("status", route="get", status=status, times=3)
    created = api.create_task("gpt-image-2", PROMPT)
    assert api.get_task(created.task_id).task_id == created.task_id
    assert len(sleeps) == 3
    assert sleeps == sorted(sleeps) or max(sleeps) <= FAST_RETRIES.max_backoff


def test_persistent_5xx_gives_up_after_max_retries(api: Api, emulator: MindVideoEmulator, sleeps: list[float]) -> None:
    emulator.add_fault("status", route="create", status=503, times=100)
    with pytest.raises(ServerError) as info:
        api.create_task("gpt-image-2", PROMPT)
    assert info.value.http_status == 503
    assert info.value.retryable is True
    assert emulator.state.requests["create"] == FAST_RETRIES.max_retries + 1


def test_rate_limit_past_the_deadline_is_not_waited_for(
    api: Api, emulator: MindVideoEmulator, sleeps: list[float]
) -> None:
    emulator.add_fault("status", route="create", status=429, retry_after="3600")
    with pytest.raises(RateLimitedError, match="Retry-After: 3600"):
        api.create_task("gpt-image-2", PROMPT)
    assert sleeps == []


def test_lost_create_response_is_replayed_and_charged_once(
    api: Api, emulator: MindVideoEmulator, sleeps: list[float]
) -> None:
    emulator.add_fault("drop", route="create")  # the task is created, the answer never arrives
    task = api.create_task("gpt-image-2", PROMPT)
    assert emulator.state.requests["create"] == 2
    assert emulator.state.charged_tasks == 1
    assert [t["task_id"] for t in emulator.state.snapshot()["tasks"]] == [task.task_id]


@pytest.mark.parametrize("kind", ["truncated", "malformed_json", "missing_fields"])
def test_an_unreadable_create_answer_is_replayed_with_the_same_key(
    api: Api, emulator: MindVideoEmulator, sleeps: list[float], kind: str
) -> None:
    # The task was created and charged; only its answer was unreadable. Replaying the key is free.
    emulator.add_fault(kind, route="create")
    task = api.create_task("gpt-image-2", PROMPT, idempotency_key="k-unreadable")
    assert emulator.state.requests["create"] == 2
    assert emulator.state.charged_tasks == 1
    assert [t["task_id"] for t in emulator.state.snapshot()["tasks"]] == [task.task_id]


@pytest.mark.parametrize("kind", ["truncated", "malformed_json", "missing_fields"])
def test_a_create_answer_that_stays_unreadable_fails_after_retries_and_charges_once(
    api: Api, emulator: MindVideoEmulator, sleeps: list[float], kind: str
) -> None:
    emulator.add_fault(kind, route="create", times=100)
    with pytest.raises(UnexpectedResponseError):
        api.create_task("gpt-image-2", PROMPT, idempotency_key="k-unreadable")
    assert emulator.state.requests["create"] == FAST_RETRIES.max_retries + 1
    assert emulator.state.charged_tasks == 1


def test_malformed_json_is_an_unexpected_response(api: Api, emulator: MindVideoEmulator, sleeps: list[float]) -> None:
    created = api.create_task("gpt-image-2", PROMPT)
    emulator.add_fault("malformed_json", route="get", times=100)
    with pytest.raises(UnexpectedResponseError, match="not JSON"):
        api.get_task(created.task_id)


def test_body_without_required_fields_is_an_unexpected_response(
    api: Api, emulator: MindVideoEmulator, sleeps: list[float]
) -> None:
    created = api.create_task("gpt-image-2", PROMPT)
    emulator.add_fault("missing_fields", route="get", times=100)
    with pytest.raises(UnexpectedResponseError, match=r"without a usable task.*task_id"):
        api.get_task(created.task_id)


def test_one_unreadable_poll_is_retried(api: Api, emulator: MindVideoEmulator, sleeps: list[float]) -> None:
    created = api.create_task("gpt-image-2", PROMPT)
    emulator.add_fault("truncated", route="get")
    assert api.get_task(created.task_id).task_id == created.task_id
    assert len(sleeps) == 1


def test_html_error_page_from_a_proxy(api: Api, emulator: MindVideoEmulator, sleeps: list[float]) -> None:
    emulator.add_fault("html", route="get", status=502, times=100)
    with pytest.raises(ServerError, match="text/html body: <html>"):
        api.get_task("task_x")


def test_unknown_status_is_kept_and_not_terminal(api: Api, emulator: MindVideoEmulator) -> None:
    created = api.create_task("gpt-image-2", PROMPT)
    emulator.add_fault("unknown_status", route="get")
    task = api.get_task(created.task_id)
    assert task.status is TaskStatus.UNKNOWN
    assert task.reported_status == "awaiting_moderation"
    assert not task.is_terminal


def test_connection_refused_is_a_transport_error(
    api: Api, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    with MindVideoEmulator() as closed:
        dead_url = closed.base_url  # listening now, closed below: nothing answers there
    monkeypatch.setenv(
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT",
        f'{{"conn_type": "mindvideo", "host": "{dead_url}", "password": "{emulator.api_key}"}}',
    )
    with pytest.raises(
        TransportError, match=r"Could not reach MindVideo at http://127\.0\.0\.1:\d+: .*\(after 5 attempt"
    ):
        api.create_task("gpt-image-2", PROMPT)
    assert len(sleeps) == FAST_RETRIES.max_retries


def test_slow_server_times_out_then_succeeds(
    emulator: MindVideoEmulator, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The delayed answer takes 10x the attempt budget. Waited for, it would have been the one
    # answer; a second request shows the slow one was abandoned (no wall-clock bound, which a
    # busy machine would stretch).
    api.hook = MindVideoHook(timeout=1.0, retry_policy=FAST_RETRIES)
    created = api.create_task("gpt-image-2", PROMPT)
    emulator.add_fault("delay", route="get", seconds=10.0)
    assert api.get_task(created.task_id).task_id == created.task_id
    assert emulator.state.requests["get"] >= 2


def test_key_never_reaches_logs_or_errors(
    api: Api,
    emulator: MindVideoEmulator,
    caplog: pytest.LogCaptureFixture,
    debug_logs: list[dict[str, object]],
    sleeps: list[float],
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log through the standard library
    created = api.create_task("gpt-image-2", PROMPT)
    api.get_task(created.task_id)
    emulator.add_fault("status", route="get", status=503, times=100)
    with pytest.raises(ServerError) as info:
        api.get_task(created.task_id)
    hook_log = "\n".join(str(event) for event in debug_logs)
    assert "POST /api/v1/tasks -> 201" in hook_log
    assert "attempt=2" in hook_log
    texts = (hook_log, caplog.text, str(info.value), repr(info.value), repr(api.hook), repr(api.hook.settings))
    for text in texts:
        assert emulator.api_key not in text


def test_key_echoed_by_a_server_is_cut_from_errors(emulator: MindVideoEmulator) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": f"bad header {request.headers['Authorization']}"}})

    hook = MindVideoHook()
    hook._client = httpx.Client(transport=httpx.MockTransport(echo), **hook.settings.client_options())
    with pytest.raises(InputValidationError) as info:
        hook.get_task("task_1")
    assert emulator.api_key not in str(info.value)
    assert "Bearer ***" in str(info.value)


def test_user_agent_names_provider_and_airflow(emulator: MindVideoEmulator) -> None:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["User-Agent"])
        return httpx.Response(404, json={"error": {"message": "nope"}})

    hook = MindVideoHook()
    hook._client = httpx.Client(transport=httpx.MockTransport(record), **hook.settings.client_options())
    hook.test_connection()
    assert seen[0].startswith("airflow-provider-mindvideo/")
    assert " apache-airflow/3." in seen[0]


def test_one_client_per_hook_reused_and_closed(emulator: MindVideoEmulator) -> None:
    with MindVideoHook() as hook:
        client = hook.get_conn()
        task = hook.create_task("gpt-image-2", PROMPT)
        hook.get_task(task.task_id)
        assert hook.get_conn() is client
    assert client.is_closed
    assert len(emulator.state.connections) == 1  # keep-alive: one TCP connection for both calls


def test_async_path_never_reads_the_connection_synchronously(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("sync get_connection() called from the event loop")

    monkeypatch.setattr(MindVideoHook, "get_connection", classmethod(forbidden))

    async def run() -> str:
        async with MindVideoHook() as hook:
            client = await hook.aget_conn()
            task = await hook.acreate_task("gpt-image-2", PROMPT)
            assert await hook.aget_conn() is client
            return (await hook.aget_task(task.task_id)).task_id

    assert asyncio.run(run())


def test_connection_test_tells_good_key_from_bad(emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = MindVideoHook().test_connection()
    assert ok, message
    monkeypatch.setenv(
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT",
        f'{{"conn_type": "mindvideo", "host": "{emulator.base_url}", "password": "mv_live_bad"}}',
    )
    ok, message = MindVideoHook().test_connection()
    assert not ok
    assert "refused the API key" in message
    assert "mv_live_bad" not in message
    assert emulator.state.charged_tasks == 0


def test_connection_test_reports_an_unreachable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    with MindVideoEmulator() as closed:
        dead_url = closed.base_url
    monkeypatch.setenv(
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT", f'{{"conn_type": "mindvideo", "host": "{dead_url}", "password": "k"}}'
    )
    ok, message = MindVideoHook(retry_policy=RetryPolicy(max_retries=0)).test_connection()
    assert not ok
    assert "Could not reach MindVideo" in message


def test_each_retry_is_logged_as_a_warning_with_its_cause_and_delay(
    api: Api, emulator: MindVideoEmulator, sleeps: list[float], debug_logs: list[dict[str, object]]
) -> None:
    created = api.create_task("gpt-image-2", PROMPT)
    emulator.add_fault("status", route="get", status=503, times=2)
    api.get_task(created.task_id)
    warnings = [str(e["event"]) for e in debug_logs if e["log_level"] == "warning"]
    assert len(warnings) == 2  # once per attempt
    assert all("HTTP 503" in w and "trying again in" in w for w in warnings), warnings
    assert "attempt 1 of 5" in warnings[0]


def test_a_host_without_scheme_says_https_was_assumed(
    api: Api,
    emulator: MindVideoEmulator,
    monkeypatch: pytest.MonkeyPatch,
    sleeps: list[float],
    debug_logs: list[dict[str, object]],
) -> None:
    bare = emulator.base_url.removeprefix("http://")  # the emulator speaks plain http
    monkeypatch.setenv(
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT",
        f'{{"conn_type": "mindvideo", "host": "{bare}", "password": "{emulator.api_key}"}}',
    )
    with pytest.raises(TransportError, match=r"https://127\.0\.0\.1:\d+.*plain-http server"):
        api.get_task("task_x")
    assert any("https://" in str(e["event"]) and "is assumed" in str(e["event"]) for e in debug_logs)


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def debug(self, message: str, *args: object) -> None:
        self.lines.append(message % args)

    info = warning = debug


class _LazyLogger:
    """Airflow's task logger as the hook gets it: a proxy that assembles a new logger at every
    attribute read (``log.debug``) and every ``bind()``."""

    def __init__(self) -> None:
        self.assembled = 0
        self.logger = _Lines()

    def bind(self) -> _Lines:
        self.assembled += 1
        return self.logger

    def __getattr__(self, name: str) -> object:
        return getattr(self.bind(), name)


def test_a_hook_assembles_its_logger_once_not_at_every_request(emulator: MindVideoEmulator) -> None:
    # Each assembly opens a logger on the task's log file (and, in Airflow 3.3, advises the
    # kernel about the file): once per request, it was a twentieth of a poll's CPU in the triggerer.
    with MindVideoHook() as hook:
        lazy = hook._log = _LazyLogger()
        task = hook.create_task("gpt-image-2", {"prompt": "a green frog"})
        for _ in range(3):
            hook.get_task(task.task_id)
    assert lazy.assembled == 1
    assert sum(" -> " in line for line in lazy.logger.lines) == 4  # every attempt is still logged

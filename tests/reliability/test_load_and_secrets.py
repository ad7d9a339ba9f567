"""Load under a rate limit, per-connection limits, and the rules that keep the key where it belongs."""

from __future__ import annotations

import asyncio
import bisect
import json
import threading
import time
from collections.abc import Iterator

import pytest
import respx

from airflow_provider_mindvideo.client.errors import (
    InputValidationError,
    InsecureConnectionError,
    TaskNotFoundError,
    UnexpectedResponseError,
)
from airflow_provider_mindvideo.emulator import EmulatorConfig, MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from tests.conftest import FAST_RETRIES
from tests.dags.mindvideo_reliability_dags import LOAD, load_dag

KEY_A, KEY_B = "mv_test_tenant_a", "mv_test_tenant_b"


@pytest.fixture(scope="module")
def limited() -> Iterator[MindVideoEmulator]:
    """An emulator that answers 429 beyond 20 requests a second per key, with two tenants."""
    config = EmulatorConfig(
        api_keys=(KEY_A, KEY_B), queued_seconds=0.05, processing_seconds={"image": 0.2}, rate_limit=20
    )
    with MindVideoEmulator(config=config) as server:
        yield server


@pytest.fixture
def emulator_b(limited: MindVideoEmulator) -> MindVideoEmulator:
    limited.state.reset()
    return limited


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch, emulator_b: MindVideoEmulator) -> list[float]:
    """When each API request reached the server: the rate as the server sees it, which is the limiter's promise.

    Stamped by the emulator as it handles the request (this process's clock): after the hook took
    its turn, before the hook has its answer -- however late a busy machine runs either.
    """
    times: list[float] = []
    record = emulator_b.state.record_request

    def stamped(route: str, client: tuple[str, int] | None) -> None:
        times.append(time.monotonic())
        record(route, client)

    monkeypatch.setattr(emulator_b.state, "record_request", stamped)
    return times


def most_in_one_second(times: list[float]) -> int:
    """The most times in one half-open second [t, t + 1)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, base_url: str, key: str = KEY_A, **extra: object) -> None:
    value = {"conn_type": "mindvideo", "host": base_url, "password": key, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))


def test_a_hundred_mapped_generations_under_a_rate_limit_pay_once_each(
    emulator_b: MindVideoEmulator, airflow_db: str, monkeypatch: pytest.MonkeyPatch, sends: list[float]
) -> None:
    connection(monkeypatch, "mindvideo_load", emulator_b.base_url, max_requests_per_second=15, max_concurrency=4)
    dag_run = load_dag.test()
    assert str(dag_run.state) == "success"
    tis = dag_run.get_task_instances()
    assert len(tis) == LOAD
    assert all(str(ti.state) == "success" and ti.try_number == 1 for ti in tis)
    state = emulator_b.state.snapshot()
    assert state["charged_tasks"] == LOAD
    assert len({task["prompt"] for task in state["tasks"]}) == LOAD
    # The hook kept under its own limit, so the account's limit (20/s) was never hit.
    assert len(sends) >= 2 * LOAD
    assert most_in_one_second(sends) <= 15
    assert state["peak_requests_per_second"] <= 15
    assert state["rate_limited"] == 0
    assert state["max_in_flight"] <= 4


def burst(hooks: list[MindVideoHook], task_id: str) -> None:
    async def go() -> None:
        for hook in hooks:  # clients first: building one blocks the loop for milliseconds
            await hook.aget_conn()
        try:
            await asyncio.gather(*(hook.aget_task(task_id) for hook in hooks))
        finally:
            for hook in hooks:
                await hook.aclose()

    asyncio.run(go())


@pytest.mark.parametrize("limit", [None, 10])
def test_request_rate_per_connection(
    emulator_b: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, sends: list[float], limit: int | None
) -> None:
    extra = {"max_requests_per_second": limit} if limit else {}
    connection(monkeypatch, "mv_rate", emulator_b.base_url, **extra)
    with MindVideoHook("mv_rate", retry_policy=FAST_RETRIES) as hook:
        task_id = hook.create_task("gpt-image-2", {"prompt": "rate"}).task_id
    sends.clear()
    burst([MindVideoHook("mv_rate", retry_policy=FAST_RETRIES) for _ in range(18)], task_id)
    assert len(sends) == 18
    if limit:
        assert most_in_one_second(sends) <= limit
    else:
        assert most_in_one_second(sends) > 10  # without the limit the same burst exceeds it


@pytest.mark.parametrize("mode", ["async", "threads"])
def test_requests_in_flight_per_connection(
    emulator_b: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    connection(monkeypatch, "mv_concurrency", emulator_b.base_url, max_concurrency=3)
    with MindVideoHook("mv_concurrency", retry_policy=FAST_RETRIES) as hook:
        task_id = hook.create_task("gpt-image-2", {"prompt": "concurrency"}).task_id
    emulator_b.state.reset_counters()
    emulator_b.add_fault("delay", route="get", seconds=0.2, times=12)  # slow answers overlap
    hooks = [MindVideoHook("mv_concurrency", retry_policy=FAST_RETRIES) for _ in range(12)]
    if mode == "async":
        burst(hooks, task_id)
    else:
        threads = [threading.Thread(target=hook.get_task, args=(task_id,)) for hook in hooks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for hook in hooks:
            hook.close()
    assert emulator_b.state.requests["get"] == 12
    assert 2 <= emulator_b.state.max_in_flight <= 3


def test_another_tenants_task_is_not_found(emulator_b: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    connection(monkeypatch, "tenant_a", emulator_b.base_url, KEY_A)
    connection(monkeypatch, "tenant_b", emulator_b.base_url, KEY_B)
    with MindVideoHook("tenant_a") as a:
        task = a.create_task("gpt-image-2", {"prompt": "private"})
    with MindVideoHook("tenant_b") as b, pytest.raises(TaskNotFoundError) as raised:
        b.get_task(task.task_id)
    assert str(raised.value).startswith(f"MindVideo task not found at /api/v1/tasks/{task.task_id}")
    assert KEY_A not in str(raised.value) and KEY_B not in str(raised.value)


@pytest.mark.parametrize("host", ["http://api.mindvideo.example", "http://10.0.0.7:8080", "http://[2001:db8::1]"])
def test_plain_http_to_another_host_is_refused_before_sending(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    connection(monkeypatch, "mv_plain", host, "mv_live_plain_secret")
    with respx.mock(assert_all_called=False) as mock, pytest.raises(InsecureConnectionError) as raised:
        MindVideoHook("mv_plain").get_task("task_1")
    assert not mock.calls
    assert "Refusing to send the MindVideo API key over plain http://" in str(raised.value)
    assert "mv_live_plain_secret" not in str(raised.value)


def test_plain_http_is_allowed_when_the_connection_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    connection(monkeypatch, "mv_plain", "http://api.mindvideo.example", allow_insecure_http=True)
    with respx.mock() as mock:
        mock.get("http://api.mindvideo.example/api/v1/tasks/task_1").respond(
            json={"request_id": "r", "task_id": "task_1", "status": "queued"}
        )
        assert MindVideoHook("mv_plain").get_task("task_1").task_id == "task_1"


def test_redirects_are_not_followed_with_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    connection(monkeypatch, "mv_redirect", "https://api.mindvideo.example", "mv_live_redirect_secret")
    with respx.mock(assert_all_called=False) as mock:
        mock.get("https://api.mindvideo.example/api/v1/tasks/task_1").respond(
            302, headers={"Location": "https://collector.example/steal"}
        )
        elsewhere = mock.get("https://collector.example/steal").respond(200, json={})
        with pytest.raises(UnexpectedResponseError, match=r"redirected to 'https://collector\.example/steal'"):
            MindVideoHook("mv_redirect", retry_policy=FAST_RETRIES).get_task("task_1")
    assert not elsewhere.called
    assert all(call.request.url.host == "api.mindvideo.example" for call in mock.calls)


def test_the_key_is_never_in_a_reprs_or_an_echoing_servers_error(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "mv_live_echo_secret_123"
    connection(monkeypatch, "mv_echo", "https://api.mindvideo.example", secret)
    with respx.mock() as mock:
        # A misbehaving proxy that quotes the request headers back in its error.
        mock.get("https://api.mindvideo.example/api/v1/tasks/task_1").respond(
            400, json={"error": {"message": f"bad request, headers: Authorization: Bearer {secret}"}}
        )
        hook = MindVideoHook("mv_echo", retry_policy=FAST_RETRIES)
        with pytest.raises(InputValidationError) as raised:
            hook.get_task("task_1")
    shown = [str(raised.value), repr(raised.value), repr(hook), repr(hook.settings), repr(hook.get_conn().headers)]
    assert not [text for text in shown if secret in text]
    assert hook.get_conn().headers["Authorization"] == f"Bearer {secret}"
    hook.close()


def test_settings_refuse_bad_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    connection(monkeypatch, "mv_bad_limits", "https://api.mindvideo.example", max_concurrency=0)
    with pytest.raises(InputValidationError, match="extra max_concurrency = 0 must be a whole number >= 1"):
        _ = MindVideoHook("mv_bad_limits").settings
    connection(monkeypatch, "mv_bad_limits", "https://api.mindvideo.example", max_requests_per_second="fast")
    with pytest.raises(InputValidationError, match='extra max_requests_per_second = "fast" must be a number > 0'):
        _ = MindVideoHook("mv_bad_limits").settings


def test_limits_do_not_slow_an_unlimited_connection(emulator_b: MindVideoEmulator) -> None:
    # httpx keeps its own pool, so an unlimited connection gets no semaphore or pacing at all.
    from airflow_provider_mindvideo.client.limits import limits_for
    from airflow_provider_mindvideo.client.protocol import ClientSettings

    unlimited = limits_for(ClientSettings(base_url="https://a.example", api_key="k"))
    assert unlimited.pacer is None and unlimited.max_concurrency is None
    assert unlimited.delay() == 0.0

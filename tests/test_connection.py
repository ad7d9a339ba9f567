"""The hook's connection: read and checked before any request, tested honestly, usable from any event loop."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_mindvideo import transports
from airflow_provider_mindvideo.client.errors import AuthenticationError, ConnectionNotFoundError
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from tests.conftest import FAST_RETRIES, Api

PROMPT = {"prompt": "a lighthouse at dawn"}


def use_connection(monkeypatch: pytest.MonkeyPatch, host: str, password: str, **extra: Any) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT",
        json.dumps({"conn_type": "mindvideo", "host": host, "password": password, "extra": extra}),
    )


# -- the key's characters (issue 11, item 5) ---------------------------------------------------


@pytest.mark.parametrize(
    ("pasted", "problem"),
    [
        ("mv_live_SECRETHALF\r\nOTHERSECRETHALF", "a line break (CR) at character 19"),
        ("mv_live_SECRETHALF\nOTHERSECRETHALF", "a line break (LF) at character 19"),
        ("mv_live_SECRETHALF\x00OTHERSECRETHALF", "a NUL character at character 19"),
        ("mv_live_SECRETHALF\u200bOTHERSECRETHALF", "U+200B ZERO WIDTH SPACE) at character 19"),
    ],
)
def test_a_key_pasted_with_a_stray_character_fails_at_once_without_quoting_it(
    api: Api,
    emulator: MindVideoEmulator,
    monkeypatch: pytest.MonkeyPatch,
    sleeps: list[float],
    pasted: str,
    problem: str,
) -> None:
    use_connection(monkeypatch, emulator.base_url, pasted)
    with pytest.raises(AuthenticationError) as info:
        api.create_task("gpt-image-2", PROMPT)
    message = f"{info.value!s} {info.value!r}"
    assert problem in message
    assert "SECRETHALF" not in message
    assert isinstance(info.value, AirflowFailException)
    assert sum(emulator.state.requests.values()) == 0
    assert sleeps == []


# -- an unknown connection id (issue 12) -------------------------------------------------------


def test_an_unknown_connection_id_is_a_permanent_error_naming_it(emulator: MindVideoEmulator) -> None:
    hook = MindVideoHook("mindvideo_typo", retry_policy=FAST_RETRIES)
    with pytest.raises(ConnectionNotFoundError, match="mindvideo_conn_id 'mindvideo_typo'") as info:
        hook.get_task("task_1")
    assert info.value.retryable is False
    assert isinstance(info.value, AirflowFailException)

    async def go() -> None:
        async with MindVideoHook("mindvideo_typo", shared_client=True) as hook:
            await hook.aget_task("task_1")

    with pytest.raises(ConnectionNotFoundError, match="mindvideo_typo"):
        asyncio.run(go())


def test_a_task_with_an_unknown_connection_fails_without_spending_its_retries(
    airflow_db: str, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dags.mindvideo_test_dags import DAGS

    monkeypatch.delenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT")
    dag_run = DAGS["mv_generate_retry"].test(run_conf={"prompt": "a red fox"})  # retries=2
    (ti,) = dag_run.get_task_instances()
    assert str(ti.state) == "failed"
    assert ti.try_number == 1
    assert sum(emulator.state.requests.values()) == 0


# -- test_connection (issue 11, item 12) -------------------------------------------------------


def test_connection_test_accepts_the_mindvideo_api_and_creates_nothing(emulator: MindVideoEmulator) -> None:
    ok, message = MindVideoHook().test_connection()
    assert ok, message
    assert "accepted the API key" in message
    assert emulator.state.requests["get"] == 2  # with the key, then with a wrong one
    assert emulator.state.requests.get("create", 0) == 0
    assert emulator.state.charged_tasks == 0


@contextmanager
def server_answering(raw: bytes) -> Iterator[str]:
    """A server on 127.0.0.1 that answers every request with ``raw`` and closes; yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with client:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = client.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                client.sendall(raw)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def answer(status: str, content_type: str, body: str, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join([*head, "Connection: close", "", ""]) + body).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # An API that never looks at the key: 404 in JSON to anything.
        (answer("404 Not Found", "application/json", '{"detail": "Not Found"}'), "does not check keys"),
        (answer("404 Not Found", "text/html", "<html><h1>Not Found</h1></html>"), "404 with a text/html body"),
        (answer("200 OK", "text/html", "<html>Welcome</html>"), "answered HTTP 200 for a task that cannot exist"),
        (answer("302 Found", "text/html", "", "Location: https://login.example.com/"), "redirected to"),
    ],
)
def test_connection_test_fails_for_a_server_that_is_not_the_mindvideo_api(
    monkeypatch: pytest.MonkeyPatch, raw: bytes, reason: str
) -> None:
    with server_answering(raw) as base_url:
        use_connection(monkeypatch, base_url, "mv_live_some_key")
        ok, message = MindVideoHook().test_connection()
    assert not ok
    assert reason in message
    assert "wrong base URL?" in message
    assert "mv_live_some_key" not in message


def test_connection_test_reports_a_broken_connection_instead_of_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, "https://api.mindvideo.ai", "mv_live_x", max_retries="many")
    ok, message = MindVideoHook().test_connection()
    assert not ok
    assert "max_retries" in message
    ok, message = MindVideoHook("mindvideo_missing").test_connection()
    assert not ok
    assert "mindvideo_missing" in message


# -- one hook, several event loops (issue 11, item 17) -----------------------------------------


@pytest.mark.parametrize("shared_client", [False, True])
def test_an_async_hook_works_from_one_event_loop_after_another(
    emulator: MindVideoEmulator, shared_client: bool, caplog: pytest.LogCaptureFixture
) -> None:
    hook = MindVideoHook(retry_policy=FAST_RETRIES, shared_client=shared_client)
    task = asyncio.run(hook.acreate_task("gpt-image-2", PROMPT))
    # The first loop is closed now, with the hook's client still open on it.
    assert asyncio.run(hook.aget_task(task.task_id)).task_id == task.task_id
    assert asyncio.run(hook.aget_task(task.task_id)).task_id == task.task_id

    async def last_use_then_close() -> None:
        await hook.aget_task(task.task_id)
        await hook.aclose()

    asyncio.run(last_use_then_close())
    asyncio.run(hook.aclose())  # nothing left to close: no error either
    assert emulator.state.charged_tasks == 1
    # The closed loops' shared clients were let go of, not kept (with their loops) for ever...
    assert not [loop for loop, clients in transports._shared.items() if loop.is_closed() and clients]
    # ...nor reported as leaked when collected.
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in warned if "Unclosed" in str(w.message)]
    assert "Unclosed" not in caplog.text


def test_closing_from_another_loop_leaves_that_loops_client_alone(emulator: MindVideoEmulator) -> None:
    hook = MindVideoHook(retry_policy=FAST_RETRIES)
    asyncio.run(hook.aget_conn())
    asyncio.run(hook.aclose())  # the client's loop is gone; closing it from here would fail
    assert hook._async_client is None

"""The aiohttp-backed transport and the pooled client that triggers share, against the emulator."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from typing import Any

import httpx
import pytest

from airflow_provider_mindvideo import transports
from airflow_provider_mindvideo.client.errors import TransportError, UnexpectedResponseError
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.transports import AiohttpTransport, PollingClient
from tests.conftest import FAST_RETRIES
from tests.servers import scripted_server


def send(request: httpx.Request, **client_options: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=AiohttpTransport(), **client_options) as client:
            return await client.send(request)

    return asyncio.run(go())


def test_requests_and_answers_pass_through_unchanged(emulator: MindVideoEmulator) -> None:
    request = httpx.Request(
        "POST",
        f"{emulator.base_url}/api/v1/tasks",
        json={"model": "gpt-image-2", "input": {"prompt": "一只橘猫 🐈 مرحبا"}},
        headers={"Authorization": f"Bearer {emulator.api_key}", "Idempotency-Key": "k-1"},
    )
    response = send(request)
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert response.json()["request_id"] == response.headers["x-request-id"]
    [task] = emulator.state.tasks.values()
    assert task.input["prompt"] == "一只橘猫 🐈 مرحبا"
    assert send(request).status_code == 200  # the same key: a replay, not a second task
    assert emulator.state.charged_tasks == 1


def answer_once(raw: bytes, url_path: str, **request: Any) -> httpx.Response:
    """GET ``url_path`` through the transport from a server that answers ``raw`` bytes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()
        writer.close()

    async def go() -> httpx.Response:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient(transport=AiohttpTransport()) as client:
            return await client.get(f"http://127.0.0.1:{port}{url_path}", **request)

    return asyncio.run(go())


def test_compressed_bodies_are_decoded_by_httpx_once() -> None:
    packed = gzip.compress(json.dumps({"task_id": "t", "status": "queued"}).encode())
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(packed)}\r\n\r\n"
    )
    response = answer_once(head.encode() + packed, "/api/v1/tasks/t")
    assert response.json() == {"task_id": "t", "status": "queued"}


def test_redirects_are_not_followed() -> None:
    raw = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2/steal\r\nContent-Length: 0\r\n\r\n"
    response = answer_once(raw, "/x", headers={"Authorization": "Bearer secret"})
    assert (response.status_code, response.headers["location"]) == (302, "http://127.0.0.2/steal")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("refused", httpx.ConnectError),
        ("drop", httpx.RemoteProtocolError),
        ("delay", httpx.ReadTimeout),
    ],
)
def test_network_failures_become_httpx_errors(emulator: MindVideoEmulator, fault: str, error: type) -> None:
    base_url = f"http://127.0.0.1:{free_port()}" if fault == "refused" else emulator.base_url
    with MindVideoHook() as hook:
        task_id = hook.create_task("gpt-image-2", {"prompt": "faulty"}).task_id
    if fault != "refused":
        emulator.add_fault(fault, route="get", seconds=2)
    request = httpx.Request(
        "GET", f"{base_url}/api/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {emulator.api_key}"}
    )
    request.extensions["timeout"] = httpx.Timeout(0.5).as_dict()
    with pytest.raises(error):
        send(request)


def shared_hook(**options: Any) -> MindVideoHook:
    return MindVideoHook(shared_client=True, retry_policy=FAST_RETRIES, **options)


def test_hooks_on_one_loop_share_one_client_until_the_last_gives_it_back(emulator: MindVideoEmulator) -> None:
    async def go() -> None:
        creator = shared_hook()
        task = await creator.acreate_task("gpt-image-2", {"prompt": "shared"})
        await creator.aclose()
        hooks = [shared_hook() for _ in range(20)]
        for _ in range(3):
            await asyncio.gather(*(hook.aget_task(task.task_id) for hook in hooks))
        clients = {id(await hook.aget_conn()) for hook in hooks}
        assert len(clients) == 1
        client = await hooks[0].aget_conn()
        assert isinstance(client, PollingClient)
        assert isinstance(client._transport, AiohttpTransport)
        for hook in hooks[:-1]:
            await hook.aclose()
        assert not client.is_closed
        await hooks[-1].aclose()
        assert client.is_closed

    asyncio.run(go())
    # Three rounds of 20 concurrent polls reuse the first round's connections.
    assert emulator.state.requests["get"] == 60
    assert len(emulator.state.connections) <= 21  # plus the creator's own


def test_each_event_loop_gets_its_own_client(emulator: MindVideoEmulator) -> None:
    async def client_of_this_loop() -> httpx.AsyncClient:
        hook = shared_hook()
        client = await hook.aget_conn()
        assert client is transports._shared[asyncio.get_running_loop()][hook._settings].client  # type: ignore[index]
        await hook.aclose()
        assert hook._settings not in transports._shared[asyncio.get_running_loop()]
        return client

    first, second = asyncio.run(client_of_this_loop()), asyncio.run(client_of_this_loop())
    assert first is not second
    assert first.is_closed and second.is_closed


def test_without_aiohttp_the_shared_client_uses_httpx_own_pool(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transports, "has_aiohttp", lambda: False)

    async def go() -> str:
        hook = shared_hook()
        task = await hook.acreate_task("gpt-image-2", {"prompt": "no aiohttp"})
        transport = type((await hook.aget_conn())._transport).__name__
        assert (await hook.aget_task(task.task_id)).task_id == task.task_id
        await hook.aclose()
        return transport

    assert asyncio.run(go()) == "AsyncHTTPTransport"


def test_errors_through_the_shared_client_are_the_providers_own(emulator: MindVideoEmulator) -> None:
    emulator.add_fault("malformed_json", route="get", times=100)

    async def go() -> None:
        hook = shared_hook()
        task = await hook.acreate_task("gpt-image-2", {"prompt": "errors"})
        try:
            with pytest.raises(UnexpectedResponseError):
                await hook.aget_task(task.task_id)
        finally:
            await hook.aclose()
        unreachable = MindVideoHook(shared_client=True, retry_policy=FAST_RETRIES)
        unreachable._settings = (await unreachable.asettings()).__class__(
            base_url=f"http://127.0.0.1:{free_port()}", api_key="k"
        )
        with pytest.raises(TransportError, match="Could not reach MindVideo"):
            await unreachable.aget_task("t")
        await unreachable.aclose()

    asyncio.run(go())


def test_a_hook_builds_each_get_once(emulator: MindVideoEmulator) -> None:
    with MindVideoHook(retry_policy=FAST_RETRIES) as hook:
        task = hook.create_task("gpt-image-2", {"prompt": "reuse"})
        hook.get_task(task.task_id)
        hook.get_task(task.task_id)
        assert len(hook._requests) == 1
        hook.create_task("gpt-image-2", {"prompt": "another"})
        assert len(hook._requests) == 1  # POSTs carry a body and a key: never reused
    assert emulator.state.requests["get"] == 2


def test_the_hooks_keep_no_cookies(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cookie set by the API, a proxy or a redirect is never sent back (and not looked for)."""

    def answer(task_id: str) -> tuple[int, dict[str, str], bytes]:
        task = {"task_id": task_id, "model": "gpt-image-2", "status": "processing"}
        headers = {"Content-Type": "application/json", "Set-Cookie": f"{task_id}=abc; Path=/"}
        return 200, headers, json.dumps(task).encode()

    ids = ["task_a", "task_b", "task_c", "task_d", "task_e", "task_f"]
    with scripted_server({f"/api/v1/tasks/{task_id}": answer(task_id) for task_id in ids}) as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_MINDVIDEO_DEFAULT",
            # By name: aiohttp's jar would refuse a cookie from an IP address anyway.
            json.dumps({"conn_type": "mindvideo", "host": f"http://localhost:{server.port}", "password": "mv_k"}),
        )
        hook = MindVideoHook(retry_policy=FAST_RETRIES)

        async def twice_async() -> None:
            await hook.aget_task("task_c")
            await hook.aget_task("task_d")
            await hook.aclose()
            shared = MindVideoHook(retry_policy=FAST_RETRIES, shared_client=True)  # the triggers' aiohttp pool
            await shared.aget_task("task_e")
            await shared.aget_task("task_f")
            await shared.aclose()

        try:
            hook.get_task("task_a")
            hook.get_task("task_b")  # a new request, built after the first answer set a cookie
            asyncio.run(twice_async())
        finally:
            hook.close()
    assert len(server.headers) == len(ids)
    assert [headers.get("cookie") for headers in server.headers] == [None] * len(ids)


def test_a_cookie_written_into_a_clients_jar_is_not_kept() -> None:
    """Every hook client shares one empty jar: nothing written there reaches another client's calls."""
    from airflow_provider_mindvideo.transports import CallingClient

    with CallingClient() as first, CallingClient() as second:
        first.cookies["session"] = "abc"
        first.cookies.set("other", "x", domain="api.example")
        first.cookies.update({"merged": "y"})  # httpx writes these into the jar directly
        assert dict(second.cookies) == {}
        assert "cookie" not in second.build_request("GET", "https://api.example/x").headers

"""Proxies and private CAs, on the worker's path and the triggerer's alike (issue 11, item 7).

A tiny forwarding proxy on 127.0.0.1 (an http:// URL through an HTTP proxy is a plain GET of
the absolute URI, no CONNECT) and an HTTPS server whose certificate a CA made in the test signed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_mindvideo.client.errors import TlsVerificationError, TransportError
from airflow_provider_mindvideo.client.models import MindVideoTask
from airflow_provider_mindvideo.client.protocol import RetryPolicy
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from tests.tls import https_task_server

# The worker's client, a deferred wait's own client, and the triggers' shared (aiohttp) client.
PATHS = ["sync", "async", "async-shared"]
NO_RETRIES = RetryPolicy(max_retries=0)


def get_task(path: str, task_id: str, policy: RetryPolicy | None = None) -> MindVideoTask:
    hook = MindVideoHook(retry_policy=policy or NO_RETRIES, shared_client=path == "async-shared")
    if path == "sync":
        with hook:
            return hook.get_task(task_id)

    async def go() -> MindVideoTask:
        async with hook:
            return await hook.aget_task(task_id)

    return asyncio.run(go())


def use_connection(monkeypatch: pytest.MonkeyPatch, host: str, password: str, **extra: Any) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT",
        json.dumps({"conn_type": "mindvideo", "host": host, "password": password, "extra": extra}),
    )


# -- proxies ----------------------------------------------------------------------------------


@dataclass
class Proxy:
    url: str
    seen: list[str] = field(default_factory=list)  # the absolute URIs it forwarded
    credentials: list[str | None] = field(default_factory=list)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    yield from _proxy(required_auth=None)


@pytest.fixture
def proxy_with_password() -> Iterator[Proxy]:
    yield from _proxy(required_auth=("me", "s3cret proxy:pass"))


def _proxy(required_auth: tuple[str, str] | None) -> Iterator[Proxy]:
    """Forward each absolute-URI request to its origin (one request per connection), recording it."""
    listener = socket.create_server(("127.0.0.1", 0))
    record = Proxy(f"http://127.0.0.1:{listener.getsockname()[1]}")
    expected = "Basic " + base64.b64encode(":".join(required_auth).encode()).decode() if required_auth else None

    def handle(client: socket.socket) -> None:
        with client:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            headers = dict(line.split(": ", 1) for line in header_lines)
            lowered = {name.lower(): value for name, value in headers.items()}
            length = int(lowered.get("content-length", 0))
            while len(body) < length:
                body += client.recv(65536)
            record.seen.append(f"{method} {target}")
            record.credentials.append(lowered.get("proxy-authorization"))
            if expected and lowered.get("proxy-authorization") != expected:
                client.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            origin = urlsplit(target)
            kept = [f"{n}: {v}" for n, v in headers.items() if not n.lower().startswith(("proxy-", "connection"))]
            path = origin.path + (f"?{origin.query}" if origin.query else "")
            forwarded = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""]).encode()
            with socket.create_connection((origin.hostname, origin.port or 80)) as upstream:
                upstream.sendall(forwarded + body)
                while chunk := upstream.recv(65536):
                    client.sendall(chunk)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(client,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield record
    finally:
        listener.close()


def dead_proxy_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def task_id(emulator: MindVideoEmulator) -> str:
    with MindVideoHook() as hook:
        return hook.create_task("gpt-image-2", {"prompt": "through a proxy"}).task_id


@pytest.mark.parametrize("path", PATHS)
def test_the_environments_proxy_is_used_on_every_path(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, proxy: Proxy, task_id: str, path: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert get_task(path, task_id).task_id == task_id
    assert proxy.seen == [f"GET {emulator.base_url}/api/v1/tasks/{task_id}"]


@pytest.mark.parametrize("path", PATHS)
def test_no_proxy_is_honoured_on_every_path(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, proxy: Proxy, task_id: str, path: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    assert get_task(path, task_id).task_id == task_id
    assert proxy.seen == []


@pytest.mark.parametrize("path", PATHS)
def test_the_connections_proxy_wins_and_gets_its_credentials(
    emulator: MindVideoEmulator,
    monkeypatch: pytest.MonkeyPatch,
    proxy_with_password: Proxy,
    task_id: str,
    path: str,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", dead_proxy_url())  # the extra wins over the environment...
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # ...and its NO_PROXY
    with_password = proxy_with_password.url.replace("http://", "http://me:s3cret%20proxy%3Apass@")
    use_connection(monkeypatch, emulator.base_url, emulator.api_key, proxy=with_password)
    assert get_task(path, task_id).task_id == task_id
    assert proxy_with_password.seen == [f"GET {emulator.base_url}/api/v1/tasks/{task_id}"]


@pytest.mark.parametrize("path", PATHS)
def test_a_dead_proxy_is_a_transport_error(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, task_id: str, path: str
) -> None:
    use_connection(monkeypatch, emulator.base_url, emulator.api_key, proxy=dead_proxy_url())
    with pytest.raises(TransportError, match="Could not reach MindVideo"):
        get_task(path, task_id)
    assert emulator.state.requests["get"] == 0


# -- TLS with a private CA ---------------------------------------------------------------------


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[Any]:
    with https_task_server(tmp_path) as server:
        yield server


@pytest.mark.parametrize("path", PATHS)
def test_a_ca_bundle_lets_every_path_trust_a_private_ca(
    monkeypatch: pytest.MonkeyPatch, https_server: Any, path: str
) -> None:
    use_connection(monkeypatch, https_server.base_url, "mv_live_tls", ca_bundle=https_server.ca_bundle)
    assert get_task(path, "task_tls").status.value == "queued"
    assert https_server.requests == [("GET", "/api/v1/tasks/task_tls")]


@pytest.mark.parametrize("path", PATHS)
def test_without_the_ca_every_path_refuses_the_certificate(
    monkeypatch: pytest.MonkeyPatch, https_server: Any, path: str
) -> None:
    use_connection(monkeypatch, https_server.base_url, "mv_live_tls")
    # Permanent (no retries burnt on it), and says what to do about it.
    with pytest.raises(TlsVerificationError, match=r"(?i)certificate verify failed.*ca_bundle") as refused:
        get_task(path, "task_tls")
    assert not refused.value.retryable
    assert "after" not in str(refused.value)  # refused on the first attempt, not after retries
    assert https_server.requests == []


@pytest.mark.parametrize("path", PATHS)
def test_ssl_cert_file_from_the_environment_is_honoured_on_every_path(
    monkeypatch: pytest.MonkeyPatch, https_server: Any, path: str
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", https_server.ca_bundle)
    use_connection(monkeypatch, https_server.base_url, "mv_live_tls")
    assert get_task(path, "task_tls").task_id == "task_tls"


@pytest.mark.parametrize("path", PATHS)
def test_a_netrc_entry_for_the_host_changes_nothing(
    emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, task_id: str, path: str
) -> None:
    # Reading the environment for proxies must not mean reading ~/.netrc too: aiohttp would then
    # refuse to send our Authorization header beside the password it found.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password other-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert get_task(path, task_id).task_id == task_id

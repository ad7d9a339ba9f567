"""The network guard: which addresses are refused, and that the refusal happens where the socket connects."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator

import httpcore
import httpx
import pytest

from airflow_provider_mindvideo.client.errors import PrivateAddressError
from airflow_provider_mindvideo.outputs.network import (
    AsyncGuardedNetworkBackend,
    GuardedNetworkBackend,
    address_class,
    guard_client,
    name_class,
)
from tests.servers import FakeInternet, ScriptedServer, scripted_server

PUBLIC = "93.184.215.14"
PNG = {"Content-Type": "image/png"}


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("::ffff:192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.170.2", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_non_public_addresses_are_named_by_class(address: str, kind: str) -> None:
    assert address_class(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass(address: str) -> None:
    assert address_class(ipaddress.ip_address(address)) is None


def test_cloud_metadata_names_are_refused_before_any_lookup() -> None:
    assert name_class("metadata.google.internal") == "cloud metadata"
    assert name_class("METADATA.google.internal.") == "cloud metadata"
    assert name_class("metadata") == "cloud metadata"
    assert name_class("cdn.example") is None


def guarded(dns: dict[str, list[str]], internet: FakeInternet) -> httpx.Client:
    """A client whose connections go through the guard, then the fake internet."""
    client = httpx.Client(timeout=5)
    client._transport._pool._network_backend = GuardedNetworkBackend(  # type: ignore[attr-defined]
        internet, resolve=lambda host, port: dns[host]
    )
    return client


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server({"/a.png": (200, PNG, b"png")}) as server:
        yield server


def test_a_loopback_server_is_refused_before_it_sees_a_connection(server: ScriptedServer) -> None:
    with guard_client(httpx.Client(timeout=5)) as client, pytest.raises(PrivateAddressError) as refused:
        client.get(server.url("/a.png"))
    assert "127.0.0.1 is a loopback address" in str(refused.value)
    assert not refused.value.retryable
    assert server.connections == 0


def test_names_are_checked_as_resolved(server: ScriptedServer) -> None:
    with guard_client(httpx.Client(timeout=5)) as client, pytest.raises(PrivateAddressError, match="localhost"):
        client.get(f"http://localhost:{server.port}/a.png")
    assert server.connections == 0


def test_the_checked_address_is_the_one_connected_to(server: ScriptedServer) -> None:
    internet = FakeInternet({PUBLIC: server.port})
    with guarded({"cdn.example": [PUBLIC]}, internet) as client:
        response = client.get("http://cdn.example/a.png")
    assert (response.status_code, response.content) == (200, b"png")
    assert internet.connected == [PUBLIC]  # the address, not the name: no second lookup to rebind


def test_every_new_connection_is_checked_again_dns_rebinding(server: ScriptedServer) -> None:
    answers = iter([[PUBLIC], ["127.0.0.1"]])
    internet = FakeInternet({PUBLIC: server.port})
    client = httpx.Client(timeout=5)
    client._transport._pool._network_backend = GuardedNetworkBackend(  # type: ignore[attr-defined]
        internet, resolve=lambda host, port: next(answers)
    )
    with client:
        assert client.get("http://cdn.example/a.png").status_code == 200
        with pytest.raises(PrivateAddressError, match=r"cdn\.example resolves to 127\.0\.0\.1, a loopback address"):
            client.get("http://cdn.example/a.png")  # the server closed the first connection
    assert internet.connected == [PUBLIC]


def test_one_private_address_among_public_ones_refuses_the_name(server: ScriptedServer) -> None:
    internet = FakeInternet({PUBLIC: server.port})
    with (
        guarded({"cdn.example": [PUBLIC, "10.0.0.7"]}, internet) as client,
        pytest.raises(PrivateAddressError, match=r"cdn\.example resolves to 10\.0\.0\.7, a private address"),
    ):
        client.get("http://cdn.example/a.png")
    assert internet.connected == []


def test_redirects_are_checked_on_every_hop() -> None:
    with scripted_server() as server:
        server.routes["/out/0.png"] = (302, {"Location": server.url("/internal/secret")}, b"")
        server.routes["/internal/secret"] = (200, PNG, b"secret")
        internet = FakeInternet({PUBLIC: server.port})
        with (
            guarded({"cdn.example": [PUBLIC], "127.0.0.1": ["127.0.0.1"]}, internet) as client,
            pytest.raises(PrivateAddressError, match=r"127\.0\.0\.1 is a loopback address"),
        ):
            client.get("http://cdn.example/out/0.png", follow_redirects=True)
        assert server.requests == ["/out/0.png"]


def test_metadata_names_never_reach_the_resolver() -> None:
    asked: list[str] = []
    client = httpx.Client(timeout=5)
    client._transport._pool._network_backend = GuardedNetworkBackend(  # type: ignore[attr-defined]
        FakeInternet({}), resolve=lambda host, port: asked.append(host) or [PUBLIC]
    )
    with client, pytest.raises(PrivateAddressError, match=r"metadata\.google\.internal is a cloud metadata name"):
        client.get("http://metadata.google.internal/computeMetadata/v1/")
    assert asked == []


def test_a_name_that_does_not_resolve_is_an_ordinary_connect_error() -> None:
    def no_such_name(host: str, port: int) -> list[str]:
        raise OSError(f"no address for {host}")

    client = httpx.Client(timeout=5)
    client._transport._pool._network_backend = GuardedNetworkBackend(  # type: ignore[attr-defined]
        FakeInternet({}), resolve=no_such_name
    )
    with client, pytest.raises(httpx.ConnectError, match=r"no address for nowhere\.example"):
        client.get("http://nowhere.example/a.png")


def test_guard_client_wraps_the_pools_network_backend() -> None:
    # httpx keeps its connection pool's network backend here; the guard depends on it.
    client = httpx.Client()
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool, httpcore.ConnectionPool)
    original = pool._network_backend
    assert isinstance(original, httpcore.NetworkBackend)
    guard_client(client)
    assert isinstance(pool._network_backend, GuardedNetworkBackend)
    assert pool._network_backend._backend is original
    with pytest.raises(TypeError, match="cannot guard"):
        guard_client(httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200))))


def test_through_a_proxy_the_destination_is_checked_and_the_proxy_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with scripted_server() as proxy:
        proxy.routes[f"http://{PUBLIC}/a.png"] = (200, PNG, b"via proxy")
        monkeypatch.setenv("HTTP_PROXY", proxy.url(""))
        for name in ("http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        with guard_client(httpx.Client(timeout=5)) as client:
            # The proxy is the deployment's own choice (here on loopback): it is not refused...
            assert client.get(f"http://{PUBLIC}/a.png").content == b"via proxy"
            # ...but what it is asked to fetch is.
            with pytest.raises(PrivateAddressError, match=r"127\.0\.0\.2 is a loopback address"):
                client.get("http://127.0.0.2:8080/internal/secret")
        assert proxy.requests == [f"http://{PUBLIC}/a.png"]


def test_the_async_backend_refuses_the_same_way(server: ScriptedServer) -> None:
    async def fetch() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            pool = client._transport._pool  # type: ignore[attr-defined]
            pool._network_backend = AsyncGuardedNetworkBackend(pool._network_backend)
            await client.get(server.url("/a.png"))

    with pytest.raises(PrivateAddressError, match=r"127\.0\.0\.1 is a loopback address"):
        asyncio.run(fetch())
    assert server.connections == 0


def test_the_async_backend_connects_to_public_addresses(server: ScriptedServer) -> None:
    class AsyncFakeInternet(httpcore.AsyncNetworkBackend):
        def __init__(self) -> None:
            self.real = httpcore.AnyIOBackend()
            self.connected: list[str] = []

        async def connect_tcp(self, host: str, port: int, **kwargs: object) -> httpcore.AsyncNetworkStream:
            self.connected.append(host)
            return await self.real.connect_tcp("127.0.0.1", server.port, **kwargs)  # type: ignore[arg-type]

    internet = AsyncFakeInternet()

    async def resolve(host: str, port: int) -> list[str]:
        return [PUBLIC]

    async def fetch() -> bytes:
        async with httpx.AsyncClient(timeout=5) as client:
            client._transport._pool._network_backend = AsyncGuardedNetworkBackend(internet, resolve=resolve)  # type: ignore[attr-defined]
            return (await client.get("http://cdn.example/a.png")).content

    assert asyncio.run(fetch()) == b"png"
    assert internet.connected == [PUBLIC]

"""Connections that a URL from outside cannot turn against this machine or its network (SSRF).

An output link -- or wherever it redirects -- could point at the worker itself (127.0.0.1),
the private network, or the cloud metadata service that hands out credentials
(169.254.169.254). Checking the URL's name beforehand is not enough: DNS may answer
differently when the socket is opened (rebinding), and every redirect is a new host. So the
check sits where httpcore opens a TCP connection: the name is resolved there, every address
is checked, and the socket connects to an address that passed. Redirects and reconnects go
through it by construction.

The decisions are pure (:func:`address_class`, :func:`name_class`, :func:`public_addresses`);
two thin network backends, sync and async, apply them; :func:`guard_client` installs the sync
one in an ``httpx.Client``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any

import httpcore
import httpx

from airflow_provider_mindvideo.client.errors import PrivateAddressError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host, port -> the host's addresses, in the order to try them
Resolver = Callable[[str, int], Sequence[str]]
AsyncResolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Instance metadata services give credentials to anything that reaches them. Most are also
# link-local or private; naming them makes the refusal say what was at stake.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task credentials
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
# Carrier-grade NAT space: Python counts it neither private nor global, and clouds put
# internal services there.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
# IPv6 prefixes that carry an IPv4 address a gateway will connect to.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_class(address: IPAddress) -> str | None:
    """What kind of non-public address this is (``"loopback"``, ``"private"``, ...); None when public."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return address_class(embedded)
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address in _SHARED_ADDRESS_SPACE:
        return "shared (carrier-grade NAT)"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "special-purpose"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def name_class(host: str) -> str | None:
    """``"cloud metadata"`` for the metadata services' well-known names, else None."""
    return "cloud metadata" if host.rstrip(".").lower() in METADATA_NAMES else None


def check_name(host: str) -> None:
    """Refuse a metadata service's name before it is even looked up."""
    kind = name_class(host)
    if kind is not None:
        raise PrivateAddressError(f"{host} is a {kind} name")


def public_addresses(host: str, addresses: Iterable[str]) -> list[str]:
    """The host's addresses, in order, if every one is public; refuses the host otherwise.

    One private address among public ones refuses the name: a legitimate public host never
    has one, and which address the socket ends up on must not be the attacker's lottery.
    """
    checked: list[str] = []
    for text in addresses:
        kind = address_class(ipaddress.ip_address(text))
        if kind is not None:
            where = f"{host} is" if text == host else f"{host} resolves to {text},"
            raise PrivateAddressError(f"{where} a {kind} address")
        if text not in checked:
            checked.append(text)
    return checked


def resolve(host: str, port: int) -> list[str]:
    """The host's addresses as the system resolver gives them."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


async def aresolve(host: str, port: int) -> list[str]:
    import anyio  # only where an async client is guarded; DAG parsing does not need it

    return [str(info[4][0]) for info in await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _lookup_failed(host: str, error: OSError) -> httpcore.ConnectError:
    # The same outcome as an unresolvable name without the guard: a connect error, retryable.
    return httpcore.ConnectError(f"{host}: {error}")


class GuardedNetworkBackend(httpcore.NetworkBackend):
    """Opens TCP connections only to public addresses, resolving the name itself.

    Wraps the backend an httpcore pool uses (``pool._network_backend``); the wrapped backend
    is handed the checked IP address, so it never resolves the name a second time.
    """

    def __init__(self, backend: httpcore.NetworkBackend, resolve: Resolver = resolve) -> None:
        self._backend = backend
        self._resolve = resolve

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        check_name(host)
        try:
            found = self._resolve(host, port)
        except OSError as exc:
            raise _lookup_failed(host, exc) from exc
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in public_addresses(host, found):
            try:
                return self._backend.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc  # like socket.create_connection: try the next address
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        # Only reachable through a client configured with uds=..., never through a URL.
        return self._backend.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class AsyncGuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """:class:`GuardedNetworkBackend` for ``httpx.AsyncClient`` pools."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend, resolve: AsyncResolver = aresolve) -> None:
        self._backend = backend
        self._resolve = resolve

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        check_name(host)
        try:
            found = await self._resolve(host, port)
        except OSError as exc:
            raise _lookup_failed(host, exc) from exc
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in public_addresses(host, found):
            try:
                return await self._backend.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return await self._backend.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def guard_client(client: httpx.Client, resolve: Resolver = resolve) -> httpx.Client:
    """Make every connection ``client`` opens refuse non-public addresses; returns the client.

    Direct connections are checked where the socket opens. Through a proxy (``HTTP_PROXY``
    and friends), the proxy connects, not us: the proxy itself is the deployment's choice and
    is not checked, while each request's destination is checked as this machine resolves it
    (a name only the proxy can resolve passes, literal addresses never do).
    """
    pool = getattr(client._transport, "_pool", None)
    if not isinstance(pool, httpcore.ConnectionPool) or not isinstance(
        getattr(pool, "_network_backend", None), httpcore.NetworkBackend
    ):
        raise TypeError(
            f"cannot guard a client whose transport is {type(client._transport).__name__}: "
            "expected httpx.HTTPTransport over an httpcore.ConnectionPool"
        )
    pool._network_backend = GuardedNetworkBackend(pool._network_backend, resolve)
    if any(transport is not None for transport in client._mounts.values()):
        client.event_hooks["request"].append(partial(_check_proxied_destination, client, resolve))
    return client


def _check_proxied_destination(client: httpx.Client, resolve: Resolver, request: httpx.Request) -> None:
    if client._transport_for_url(request.url) is client._transport:
        return  # a direct connection: the backend checks it
    host = request.url.host
    check_name(host)
    try:
        found = resolve(host, request.url.port or (443 if request.url.scheme == "https" else 80))
    except OSError:
        return  # split DNS: only the proxy knows this name, and it decides
    public_addresses(host, found)

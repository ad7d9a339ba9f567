"""An absolute deadline for a whole synchronous HTTP attempt, at the socket.

httpx's timeouts apply to each socket operation: a server that trickles one byte every half
second never trips a 30 s read timeout and can hold a worker for as long as it likes. The
async shell bounds an attempt with ``asyncio.timeout``; the sync shell has nothing like it, so
the network streams of its client are wrapped: every connect, read and write gets at most what
is left of the deadline set by :func:`deadline_after` in the calling thread, and fails once it
has passed.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx


class Deadline:
    """An end in ``time.monotonic()`` seconds, which its owner may bring forward to now (:meth:`cancel`)."""

    __slots__ = ("end",)

    def __init__(self, end: float) -> None:
        self.end = end

    def cancel(self) -> None:
        """End every socket operation under this deadline at its next turn (a blocked one within its timeout)."""
        self.end = 0.0


_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("mindvideo_deadline", default=None)


@contextlib.contextmanager
def within(deadline: Deadline) -> Iterator[Deadline]:
    """Every socket operation of wrapped clients in this context ends by ``deadline`` (shared, cancellable)."""
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


def deadline_after(seconds: float) -> contextlib.AbstractContextManager[Deadline]:
    """Every socket operation of wrapped clients in this context ends within ``seconds`` from now."""
    return within(Deadline(time.monotonic() + seconds))


def _left(timeout: float | None) -> float | None:
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline.end - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the attempt's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, _left(timeout), local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, _left(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def enforce_deadlines(client: httpx.Client) -> httpx.Client:
    """Wrap the network streams of every transport of ``client`` (proxies included); returns it.

    httpx offers no public way to hand its connection pools a network backend, so this reaches
    into ``transport._pool._network_backend``; ``tests/test_deadlines.py`` fails if that moves.
    """
    for transport in (client._transport, *client._mounts.values()):
        # Only httpx's own transports have sockets to bound (a test's MockTransport has none).
        if isinstance(transport, httpx.HTTPTransport):
            pool = transport._pool
            if not isinstance(pool._network_backend, _DeadlineBackend):
                pool._network_backend = _DeadlineBackend(pool._network_backend)
    return client

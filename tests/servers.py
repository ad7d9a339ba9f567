"""Small hostile HTTP servers on 127.0.0.1, and a fake internet that leads public addresses to them.

``trickling_server`` answers a byte at a time, headers included: what a per-read timeout never catches.

A server answers each path exactly as the test scripted it (a redirect into this machine, a
gzip body, an empty 200 ``image/png``) and records what it was asked, so a test can prove a
request was never made.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpcore

#: status, headers, body
Answer = tuple[int, Mapping[str, str], bytes]

Server = TypeVar("Server", bound=socketserver.BaseServer)


@contextmanager
def serving(server: Server) -> Iterator[Server]:
    """Serves ``server`` on a daemon thread for the ``with`` block, then stops and closes it."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def send_answer(handler: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Writes one answer as given, with a Content-Length unless ``headers`` frame the body themselves."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    if not any(name.lower() in ("content-length", "transfer-encoding") for name in headers):
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: Mapping[str, Answer]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = dict(routes)
        #: Request targets in arrival order (a proxy sees absolute URLs here).
        self.requests: list[str] = []
        #: Each request's headers, in the same order.
        self.headers: list[dict[str, str]] = []
        self.connections = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get_request(self) -> Any:
        self.connections += 1
        return super().get_request()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        self.server.headers.append({name.lower(): value for name, value in self.headers.items()})
        status, headers, body = self.server.routes.get(self.path, (404, {}, b"not here"))
        send_answer(self, status, {**headers, "Connection": "close"}, body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def scripted_server(routes: Mapping[str, Answer] | None = None) -> Iterator[ScriptedServer]:
    with serving(ScriptedServer(routes or {})) as server:
        yield server


class FakeInternet(httpcore.NetworkBackend):
    """A network where some public addresses lead to servers on this machine.

    It sits *under* the guard, where the real network would be: the guard resolves and checks
    names as usual, and a connection it allows to ``93.184.215.14`` reaches a local server.
    """

    def __init__(self, routes: Mapping[str, int]) -> None:
        self.routes = dict(routes)
        #: The host argument of every connection asked for, in order.
        self.connected: list[str] = []
        self._real = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Sequence[Any] | None = None,
    ) -> httpcore.NetworkStream:
        self.connected.append(host)
        if host in self.routes:
            host, port = "127.0.0.1", self.routes[host]
        return self._real.connect_tcp(host, port, timeout, local_address, socket_options)


@contextmanager
def trickling_server(
    body: bytes, *, status: str = "200 OK", byte_every: float = 0.1, content_type: str = "application/json"
) -> Iterator[str]:
    """A server that answers every request with ``body``, one byte every ``byte_every`` seconds.

    The status line and headers trickle too: a client whose only timeout is per read never
    notices. Each connection stops by itself once its answer is out or the client hangs up.
    """
    answer = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                for i in range(len(answer)):
                    if stop.is_set():
                        return
                    conn.sendall(answer[i : i + 1])
                    time.sleep(byte_every)
            except OSError:
                return  # the client gave up: that is the point

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()

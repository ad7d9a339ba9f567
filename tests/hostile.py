"""Small hostile HTTP servers on 127.0.0.1, in a background thread: what the emulator is too polite to do."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def trickling_server(body: bytes, *, status: str = "200 OK", byte_every: float = 0.1) -> Iterator[str]:
    """A server that answers every request with ``body``, one byte every ``byte_every`` seconds.

    The status line and headers trickle too: a client whose only timeout is per read never
    notices. Each connection stops by itself once its answer is out or the client hangs up.
    """
    answer = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
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

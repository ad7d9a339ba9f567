"""A MindVideo API on 127.0.0.1 whose answers quote the caller's key back, or carry megabytes.

The task a create makes is decided by its prompt (see :data:`ANSWERS`); every answer is built
from the ``Authorization`` header the request came with, in the ways a broken server or a
debugging proxy quotes it: in the error (text, object, list), in output fields, in event
messages, as a dict key, JSON-``\\u``-escaped, URL-quoted, HTML-escaped, cut short, as the
request id and as the status text.
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest

from tests.servers import send_answer, serving

#: A key whose JSON, HTML, repr and URL forms all differ from it (``"``, ``<``, ``/``, ``+``, ``=``).
KEY = 'mv_live_Zq7X/k9+Pw=Lm3"Rt5Yv8<Bn2Hs6Qe'
#: 4 MiB: the extra field the issue found in ``output.images[0]``.
HUGE = 4 * 1024 * 1024
_UNICODE_ESCAPED = "@@key-u-escaped@@"


def forms(key: str = KEY) -> list[str]:
    """Parts of ``key`` that must appear in nothing stored, in each form a server may echo it."""
    middle = key[8:20]  # past the public "mv_live_" prefix: any echo of the secret part, whole or cut
    return [middle, json.dumps(middle)[1:-1], html.escape(middle), quote(middle, safe=""), repr(middle)[1:-1]]


def leaks(text: str, key: str = KEY) -> list[str]:
    return [form for form in forms(key) if form in text]


def u_escaped(text: str) -> str:
    return "".join(f"\\u{ord(char):04x}" for char in text)


def failed_echo(key: str, base: str) -> dict[str, Any]:
    """A failed task whose every field quotes the key in another way."""
    return {
        "request_id": f"req-{key}",
        "status": "failed",
        "cost_estimate": 0.01,
        "cost_actual": 0.0,
        "error": {
            "code": "upstream_error",
            "message": f"upstream refused: Authorization: Bearer {key}",
            "request": {"headers": {"authorization": [f"Bearer {key}"]}, "url": f"{base}/?k={quote(key, safe='')}"},
            f"Bearer {key}": "a key as a dict key",
            "html": f"<p>{html.escape(key)}</p>",
            "escaped": _UNICODE_ESCAPED,
            "cut": "sent " + key[:14],
        },
        f"debug {key}": {"echo": key},
    }


def succeeded_echo(key: str, base: str) -> dict[str, Any]:
    """A succeeded task whose output items and extra fields quote the key."""
    return {
        "request_id": "req-ok",
        "status": "succeeded",
        "cost_estimate": 0.01,
        "cost_actual": 0.01,
        "output": {
            "images": [
                {"url": f"{base}/files/0.png", "debug": f"Bearer {key}", key: "key as a key"},
                {"url": f"{base}/files/1.png?sig={quote(key, safe='')}"},
            ],
            "meta": {"trace": [_UNICODE_ESCAPED, {"repr": repr(key)}]},
        },
        "echo": {"headers": {"Authorization": f"Bearer {key}"}},
    }


def succeeded_huge(key: str, base: str) -> dict[str, Any]:
    """A succeeded task with a 4 MiB extra field on its first image (and one at the top)."""
    return {
        "request_id": "req-huge",
        "status": "succeeded",
        "cost_estimate": 0.01,
        "cost_actual": 0.01,
        "output": {"images": [{"url": f"{base}/files/0.png", "blob": "x" * HUGE}, f"{base}/files/1.png"]},
        "trace": "y" * HUGE,
    }


def failed_huge(key: str, base: str) -> dict[str, Any]:
    """A failed task whose error is 4 MiB of structure."""
    return {"request_id": "req-huge", "status": "failed", "error": {"message": "boom", "detail": ["z" * 1024] * 4096}}


def unknown_status_then(final: Callable[[str, str], dict[str, Any]]) -> Callable[[str, str, int], dict[str, Any]]:
    """The first poll answers a status the provider does not know (it is logged), quoting the key."""

    def answer(key: str, base: str, poll: int) -> dict[str, Any]:
        return {"status": f"thinking about {key}", "request_id": "r"} if poll == 1 else final(key, base)

    return answer


#: What a task answers when polled, by the prompt it was created with.
ANSWERS: dict[str, Callable[[str, str, int], dict[str, Any]]] = {
    "echo failed": unknown_status_then(failed_echo),
    "echo succeeded": unknown_status_then(succeeded_echo),
    "huge succeeded": lambda key, base, poll: succeeded_huge(key, base),
    "huge failed": lambda key, base, poll: failed_huge(key, base),
}


def events_echo(key: str) -> list[Any]:
    return [
        {"type": "error", "message": f"auth header was Bearer {key}", "created_at": "2026-01-01T00:00:00Z"},
        {"type": key, "extra": {key: key}},
        f"plain text event {key}",
        {"message": _UNICODE_ESCAPED},
    ]


class HostileApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tasks: dict[str, str] = {}  # task id -> prompt
        self.keys: dict[str, str] = {}  # idempotency key -> task id: a replay is free
        self.polls: dict[str, int] = {}
        self.charged = 0
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def create(self, idempotency_key: str, prompt: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            replay = idempotency_key in self.keys
            if not replay:
                task_id = f"task_{len(self.tasks) + 1}"
                self.keys[idempotency_key], self.tasks[task_id] = task_id, prompt
                self.charged += 1
            task_id = self.keys[idempotency_key]
        answer = {"request_id": "req-create", "task_id": task_id, "status": "queued", "cost_estimate": 0.01}
        return (200 if replay else 201), answer

    def poll(self, task_id: str, key: str) -> dict[str, Any] | None:
        with self.lock:
            prompt = self.tasks.get(task_id)
            self.polls[task_id] = poll = self.polls.get(task_id, 0) + 1
        if prompt is None:
            return None
        return {"task_id": task_id, **ANSWERS[prompt](key, self.base_url, poll)}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileApi

    def _key(self) -> str:
        return self.headers.get("Authorization", "").partition(" ")[2]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        status, answer = self.server.create(self.headers.get("Idempotency-Key", ""), str(body["input"]["prompt"]))
        self._answer(status, answer)

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path.startswith("/files/"):
            return self._send(200, b"\x89PNG\r\n\x1a\n", "image/png")
        task_id = path.removeprefix("/api/v1/tasks/")
        if task_id.endswith("/events"):
            return self._answer(200, {"events": events_echo(self._key())})
        answer = self.server.poll(task_id, self._key())
        if answer is None:
            return self._answer(404, {"error": {"message": f"no task {task_id} for key {self._key()}"}})
        return self._answer(200, answer)

    def _answer(self, status: int, answer: Any) -> None:
        # The \u-escaped key is put in after encoding: json.dumps would escape its backslashes.
        body = json.dumps(answer).replace(_UNICODE_ESCAPED, u_escaped(self._key()))
        self._send(status, body.encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        send_answer(self, status, {"Content-Type": content_type}, body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def hostile_api() -> Iterator[HostileApi]:
    with serving(HostileApi()) as server:
        yield server


@contextmanager
def hostile_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str = "mindvideo_default") -> Iterator[HostileApi]:
    """The hostile API, served for the ``with`` block as Airflow connection ``conn_id`` with :data:`KEY`."""
    with hostile_api() as api:
        connection = {"conn_type": "mindvideo", "host": api.base_url, "password": KEY}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        yield api

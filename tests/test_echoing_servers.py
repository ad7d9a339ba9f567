"""A server (or proxy) that echoes the request: the API key must not come back out, whole or cut.

Found by an adversarial review: the key echoed in ``X-Request-Id``, in a 503's body (logged by
the retry warning before any scrubbing), cut in half by the 200-character preview, and
JSON-escaped. Each answer here quotes the Authorization header in another way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_mindvideo.client.errors import MindVideoError
from airflow_provider_mindvideo.client.protocol import RetryPolicy
from airflow_provider_mindvideo.hooks import MindVideoHook
from tests.conftest import Api
from tests.servers import send_answer, serving

KEY = 'mv_live_Zq7Xk9PwLm3Rt5Yv8Bn2Hs6Qe"x'  # a quote: its JSON-escaped form differs


def answer_for(mode: str, authorization: str) -> tuple[int, dict[str, str], bytes]:
    if mode == "request_id":
        return 401, {"X-Request-Id": authorization}, b'{"error": "no"}'
    if mode == "body":
        return 503, {}, json.dumps({"error": {"message": f"you sent {authorization}"}}).encode()
    if mode == "cut":
        # The key straddles the 200-character preview of a non-JSON body.
        return 502, {"Content-Type": "text/plain"}, (("x" * 190) + authorization).encode()
    if mode == "json_escaped":
        return 400, {}, json.dumps({"detail": json.dumps({"sent": authorization})}).encode()
    raise AssertionError(mode)


@pytest.fixture
def echoing_server() -> Iterator[tuple[str, list[str]]]:
    mode: list[str] = ["request_id"]

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = answer_for(mode[0], self.headers.get("Authorization", ""))
            send_answer(self, status, headers, body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Echo)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}", mode


@pytest.mark.parametrize("mode", ["request_id", "body", "cut", "json_escaped"])
@pytest.mark.parametrize("path", ["sync", "async"])
def test_an_echoed_key_appears_in_no_error_and_no_log_line(
    echoing_server: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    debug_logs: list[dict[str, Any]],
    sleeps: list[float],
    mode: str,
    path: str,
) -> None:
    url, current = echoing_server
    current[0] = mode
    monkeypatch.setenv(
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT", json.dumps({"conn_type": "mindvideo", "host": url, "password": KEY})
    )
    api = Api(path, MindVideoHook(retry_policy=RetryPolicy(max_retries=1, backoff=0.01)))
    with pytest.raises(MindVideoError) as raised:
        api.get_task("task_echo")
    shown = [str(raised.value), repr(raised.value), str(raised.value.request_id)]
    shown += [json.dumps(event, default=str) for event in debug_logs]
    secret_part = KEY[8:18]  # past the public "mv_live_" prefix
    assert not [text for text in shown if secret_part in text or json.dumps(KEY)[1:-1][8:18] in text]

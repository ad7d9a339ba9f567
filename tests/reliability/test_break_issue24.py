"""Attacks on the promises of issue 24, through the public API only (operators, triggers, the hook).

Each test is one attack a reviewer tried: the server (a hostile one on 127.0.0.1, or the
emulator) is the adversary, and its own books are the oracle.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_mindvideo.client.errors import InputValidationError, MindVideoError
from airflow_provider_mindvideo.client.protocol import RetryPolicy
from airflow_provider_mindvideo.emulator import EmulatorConfig, MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator
from tests.helpers import Ti
from tests.hostile import HostileAnswers, hostile_server
from tests.servers import send_answer, serving

KEY = "mv_live_Qx7Hs2Lk9Pw4Zr6Tn8Vb"
FAST = RetryPolicy(max_retries=2, deadline=5.0, backoff=0.01, max_backoff=0.02)


def run_batch(operator: MindVideoBatchGenerateOperator, ti: Ti) -> dict[str, Any]:
    """execute -> the trigger in an event loop -> execute_complete, as the worker and triggerer would."""
    context: Any = {"ti": ti}
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    trigger: Any = deferred.value.trigger
    trigger.poll_interval, trigger.max_poll_interval = 0.02, 0.05

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    payloads = asyncio.run(events())
    assert len(payloads) == 1, payloads
    result: dict[str, Any] = operator.execute_complete(context, payloads[0])
    return result


# -- CSV / JSONL inputs -----------------------------------------------------------------------------


def _batch(tmp_path: Path, **options: Any) -> MindVideoBatchGenerateOperator:
    options.setdefault("model", "gpt-image-2")
    return MindVideoBatchGenerateOperator(
        task_id="generate", result_path=f"file://{tmp_path}/out/manifest.jsonl", **options
    )


@pytest.mark.parametrize("text", ["prompt\n", "\ufeffprompt,size\r\n", "", "\n\n"])
def test_a_csv_with_no_rows_is_a_batch_of_zero_items_that_succeeds(
    emulator: MindVideoEmulator, tmp_path: Path, text: str
) -> None:
    (tmp_path / "in.csv").write_text(text, encoding="utf-8")
    summary = run_batch(_batch(tmp_path, inputs_path=f"file://{tmp_path}/in.csv"), Ti())
    assert summary["items"] == 0
    assert emulator.state.requests["create"] == 0


def test_an_inputs_encoding_that_is_no_text_encoding_is_refused_when_the_dag_is_parsed(tmp_path: Path) -> None:
    # codecs.lookup knows 'hex' and 'rot13', but bytes.decode refuses them with a raw LookupError
    with pytest.raises(ValueError, match="inputs_encoding = 'hex'"):
        _batch(tmp_path, inputs_path=f"file://{tmp_path}/in.csv", inputs_encoding="hex")


def test_a_lone_surrogate_in_a_jsonl_prompt_is_refused_naming_its_line(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    # Valid JSON (an escaped lone surrogate) that no UTF-8 writer can write back, nor send.
    (tmp_path / "in.jsonl").write_text('{"prompt": "a fox in snow"}\n{"prompt": "a fox \\ud800"}\n', encoding="utf-8")
    with pytest.raises(InputValidationError, match=r"line 2: .*lone surrogate \(U\+D800\)"):
        run_batch(_batch(tmp_path, inputs_path=f"file://{tmp_path}/in.jsonl"), Ti())
    assert emulator.state.requests["create"] == 0


def test_a_lone_surrogate_in_an_inputs_list_is_refused_before_anything_is_sent(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    with pytest.raises(InputValidationError, match=r"lone surrogate \(U\+DC80\)"):
        run_batch(_batch(tmp_path, inputs=[{"prompt": "a fox \udc80 in snow"}]), Ti())
    assert emulator.state.requests["create"] == 0


# -- hostile HTTP: the key in headers, error bodies, redirects ----------------------------------------


class _KeyEcho(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Any) -> None:
        super().__init__(("127.0.0.1", 0), _KeyEchoHandler)
        self.answer = answer  # (key) -> (status, headers, body)
        self.requests = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _KeyEchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _KeyEcho

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length", 0) or 0)
        if length:
            self.rfile.read(length)
        self.server.requests += 1
        key = self.headers.get("Authorization", "").partition(" ")[2]
        status, headers, body = self.server.answer(key)
        send_answer(self, status, headers, body)

    do_GET = do_POST = _reply

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def key_echo(answer: Any) -> Iterator[_KeyEcho]:
    with serving(_KeyEcho(answer)) as server:
        yield server


#: A key with characters whose escaped forms differ (as the repository's hostile tests use).
ODD_KEY = "mv_live_Qx7H/s2+Lk9=Pw4&Zr6<Tn8>"
SECRET_PART = ODD_KEY[8:]


def _html_numeric(text: str) -> str:
    # OWASP-style encoders write every non-alphanumeric character as a hex entity
    return "".join(c if c.isalnum() else f"&#x{ord(c):x};" for c in text)


def _lower_percent(text: str) -> str:
    from urllib.parse import quote

    return (
        quote(text, safe="")
        .replace("%2F", "%2f")
        .replace("%2B", "%2b")
        .replace("%3D", "%3d")
        .replace("%3C", "%3c")
        .replace("%3E", "%3e")
    )


def _leaks(text: str) -> list[str]:
    # The secret part of the key, or its alphanumeric run after the first escaped character.
    pieces = [SECRET_PART, "Lk9", "Pw4", "Zr6", "Tn8"]
    return [piece for piece in pieces if piece in text]


ECHOES: dict[str, Any] = {
    "redirect Location": lambda key: (302, {"Location": f"http://127.0.0.1:1/login?token={key}"}, b""),
    "401 WWW-Authenticate": lambda key: (
        401,
        {"WWW-Authenticate": f'Bearer error="invalid_token" token="{key}"', "Content-Type": "text/plain"},
        f"bad token {key}".encode(),
    ),
    "503 html numeric entities": lambda key: (
        503,
        {"Content-Type": "text/html"},
        f"<html><body>Authorization: Bearer {_html_numeric(key)}</body></html>".encode(),
    ),
    "500 lowercase percent": lambda key: (
        500,
        {"Content-Type": "application/json"},
        json.dumps({"error": {"message": f"GET /?k={_lower_percent(key)}"}}).encode(),
    ),
    "502 php json_encode (escaped slashes) in html": lambda key: (
        502,
        {"Content-Type": "text/html"},
        ("<pre>" + json.dumps({"auth": key}).replace("/", "\\/") + "</pre>").encode(),
    ),
    "400 request id header": lambda key: (
        400,
        {"Content-Type": "application/json", "X-Request-Id": f"req {key}"},
        json.dumps({"error": {"message": "bad"}}).encode(),
    ),
    "422 json list": lambda key: (
        422,
        {"Content-Type": "application/json"},
        json.dumps({"detail": [{"loc": ["header", "authorization"], "input": f"Bearer {key}"}]}).encode(),
    ),
}


@pytest.mark.parametrize("echo", list(ECHOES))
def test_the_key_echoed_in_an_error_answer_is_in_no_exception_or_log(
    echo: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    with key_echo(ECHOES[echo]) as server:
        conn = {"conn_type": "mindvideo", "host": server.base_url, "password": ODD_KEY, "extra": {"timeout": 2}}
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AIRFLOW_CONN_MV_ECHO", json.dumps(conn))
            hook = MindVideoHook("mv_echo", retry_policy=FAST)
            with pytest.raises(MindVideoError) as raised:
                hook.create_task("gpt-image-2", {"prompt": "a fox"}, idempotency_key="k" * 20)
            hook.close()
    error = raised.value
    seen = f"{error} {error!r} {error.args!r} {vars(error)!r} " + " ".join(
        f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records if not r.name.startswith(("httpcore", "httpx"))
    )
    assert not _leaks(seen), (echo, _leaks(seen), seen[:2000])


# -- cost fields the server sends -------------------------------------------------------------------


class _BigCost(HostileAnswers):
    """Every get answer's cost_actual is an integer of 5,000 digits: valid JSON past Python's int limit."""

    def _rewritten(self, route: str, raw: bytes) -> bytes:
        body = super()._rewritten(route, raw)
        if route != "get":
            return body
        return re.sub(rb'"cost_actual":\s*[^,}]+', b'"cost_actual": 1' + b"0" * 5000, body)


def test_a_cost_actual_of_5000_digits_is_an_unknown_cost_not_an_unreadable_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_mindvideo.operators import MindVideoGenerateOperator

    config = EmulatorConfig(queued_seconds=0.01, processing_seconds={"image": 0.02, "video": 0.02})
    with hostile_server(config) as server:
        server.answers.__class__ = _BigCost
        monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", server.connection(timeout=2, max_retries=2))
        operator = MindVideoGenerateOperator(
            task_id="generate", model="gpt-image-2", input={"prompt": "a fox"}, poll_interval=0.02, timeout=20
        )
        operator.__dict__["hook"] = MindVideoHook(retry_policy=FAST)
        urls = operator.execute({"ti": Ti()})  # type: ignore[arg-type]
        operator.hook.close()
    assert urls, "a succeeded task was not delivered"
    assert server.state.charged_tasks == 1


def test_a_manifest_corrupt_in_its_middle_fails_the_next_try_naming_file_and_line(
    emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    emulator.script("doomed", "failed", error="GPU fell over", times=1)
    inputs = [{"prompt": "a fox"}, {"prompt": "doomed whale"}, {"prompt": "an owl"}]
    with pytest.raises(MindVideoError):
        run_batch(_batch(tmp_path, inputs=inputs), Ti(try_number=1))
    manifest = tmp_path / "out" / "manifest.jsonl"
    rows = manifest.read_text(encoding="utf-8").split("\n")
    rows[1] = rows[1][: len(rows[1]) // 2]  # torn in the middle of the file: no crash tore it there
    manifest.write_text("\n".join(rows), encoding="utf-8")
    charged = emulator.state.charged_tasks
    with pytest.raises(MindVideoError) as refused:
        run_batch(_batch(tmp_path, inputs=inputs), Ti(try_number=2))
    message = str(refused.value)
    assert "manifest.jsonl" in message and "line 2" in message, message
    assert emulator.state.charged_tasks == charged  # nothing paid while the record of what was paid is unread

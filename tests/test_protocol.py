"""The pure protocol layer: settings, retry decisions, response mapping. No server needed."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from airflow.sdk import Connection

from airflow_provider_mindvideo.client.errors import (
    AuthenticationError,
    InputValidationError,
    InsecureConnectionError,
    MindVideoError,
    TlsVerificationError,
    UnexpectedResponseError,
)
from airflow_provider_mindvideo.client.protocol import (
    RetryPolicy,
    Send,
    error_from_response,
    events_from_response,
    exchange,
    get_task_call,
    is_loopback,
    retry_after_seconds,
    settings_from_connection,
    task_from_response,
)

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
RNG = random.Random(7)


def conn(**fields: Any) -> Connection:
    fields.setdefault("password", "mv_live_secret")
    return Connection(conn_id="mindvideo_default", conn_type="mindvideo", **fields)


def response(
    status: int, body: Any = None, headers: dict[str, str] | None = None, text: str | None = None
) -> httpx.Response:
    request = httpx.Request("POST", "https://api.mindvideo.ai/api/v1/tasks", headers={"Idempotency-Key": "k-1"})
    content = text.encode() if text is not None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers, request=request)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("Tue, 24 Nov 2026 12:00:30 GMT", 30.0),
        ("Tue, 24 Nov 2026 11:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds


def test_retry_delay_rules() -> None:
    policy = RetryPolicy(max_retries=3, deadline=60, backoff=1, max_backoff=4)
    assert policy.retry_delay(1, error_from_response(response(503)), 0, RNG) is not None
    assert policy.retry_delay(1, error_from_response(response(429, headers={"Retry-After": "9"})), 0, RNG) == 9.0
    assert policy.retry_delay(4, error_from_response(response(503)), 0, RNG) is None  # out of retries
    too_long = error_from_response(response(429, headers={"Retry-After": "61"}))
    assert policy.retry_delay(1, too_long, 0, RNG) is None  # past the deadline


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(max_retries=10, deadline=1e9, backoff=1, max_backoff=8)
    problem = error_from_response(response(503))
    delays = [[policy.retry_delay(a, problem, 0, random.Random(s)) for a in range(1, 7)] for s in range(20)]
    for series in delays:
        assert all(d is not None for d in series)
        ceilings = [1, 2, 4, 8, 8, 8]
        assert all(c / 2 <= d <= c for c, d in zip(ceilings, series, strict=True))  # type: ignore[operator]
    assert len({series[0] for series in delays}) > 1  # jittered: calls failing together spread out


def drive(steps: Any, outcomes: list[Any]) -> list[Any]:
    """Feed ``outcomes`` to an exchange one per request; returns what it yielded, then its result."""
    yielded, outcome = [], None
    try:
        while True:
            step = steps.send(outcome)
            yielded.append(step)
            outcome = outcomes.pop(0) if isinstance(step, Send) else None
    except StopIteration as done:
        return [*yielded, done.value]


def task_parse(answer: httpx.Response) -> Any:
    return task_from_response(answer)


def test_exchange_yields_requests_and_sleeps_then_returns_the_parsed_answer() -> None:
    request = httpx.Request("GET", "https://api.mindvideo.ai/api/v1/tasks/t")
    steps = exchange(request, task_parse, RetryPolicy(max_retries=2, backoff=1, max_backoff=1), _NullLog(), 30, RNG)
    first, pause, second, task = drive(steps, [response(503), response(200, {"task_id": "t", "status": "queued"})])
    assert first == second == Send(request, 30)
    assert 0.5 <= pause <= 1.0
    assert task.task_id == "t"


@pytest.mark.parametrize(
    ("outcome", "retried"),
    [
        (response(503), True),
        (response(429), True),
        (response(200, text="{cut"), True),  # the answer was mangled on the way: ask again
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.DecodingError("bad gzip"), False),
        (response(400, {"detail": "bad"}), False),
        (response(401), False),
        (response(404), False),
        (response(409), False),
        (response(418), False),
    ],
)
def test_what_is_tried_again_within_a_call(outcome: Any, retried: bool) -> None:
    request = httpx.Request("POST", "https://api.mindvideo.ai/api/v1/tasks", headers={"Idempotency-Key": "k"})
    steps = exchange(request, task_parse, RetryPolicy(max_retries=1, backoff=0.01), _NullLog(), 30, RNG)
    steps.send(None)
    if retried:
        assert isinstance(steps.send(outcome), float)
    else:
        with pytest.raises(MindVideoError):
            steps.send(outcome)


def test_a_refused_certificate_is_not_retried_and_names_the_ca_option() -> None:
    request = httpx.Request("GET", "https://api.mindvideo.ai/api/v1/tasks/t")
    refused = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    steps = exchange(request, task_parse, RetryPolicy(max_retries=5), _NullLog(), 30, RNG)
    steps.send(None)
    with pytest.raises(TlsVerificationError, match=r"https://api\.mindvideo\.ai.*ca_bundle"):
        steps.send(refused)


def test_an_attempt_gets_what_is_left_of_the_calls_deadline() -> None:
    request = httpx.Request("GET", "https://api.mindvideo.ai/api/v1/tasks/t")
    steps = exchange(request, task_parse, RetryPolicy(max_retries=3, deadline=5, backoff=0.01), _NullLog(), 30, RNG)
    first = steps.send(None)
    assert first.seconds <= 5  # the call's deadline, not the 30 s request timeout


def test_settings_defaults_and_extras() -> None:
    settings = settings_from_connection(conn(extra=json.dumps({"timeout": 5, "max_retries": 2})))
    assert settings.base_url == "https://api.mindvideo.ai"
    assert (settings.timeout, settings.max_retries) == (5.0, 2)
    assert "mv_live_secret" not in repr(settings)
    assert settings_from_connection(conn(host="api-test.mindvideo.ai")).base_url == "https://api-test.mindvideo.ai"
    assert settings_from_connection(conn(host="proxy.internal", port=8443)).base_url == "https://proxy.internal:8443"
    assert settings_from_connection(conn(host="http://127.0.0.1:8765/")).base_url == "http://127.0.0.1:8765"
    assert settings_from_connection(conn(), timeout=1, max_retries=0).max_retries == 0


def test_plain_http_to_a_remote_host_is_refused_unless_allowed() -> None:
    with pytest.raises(InsecureConnectionError, match=r"plain http:// to api\.example\.com"):
        settings_from_connection(conn(host="http://api.example.com"))
    allowed = conn(host="http://api.example.com", extra=json.dumps({"allow_insecure_http": "true"}))
    assert settings_from_connection(allowed).base_url == "http://api.example.com"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.2", True), ("[::1]", True), ("10.0.0.1", False), ("example.com", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_connection_without_key_or_with_a_bad_url() -> None:
    with pytest.raises(AuthenticationError, match="no API key"):
        settings_from_connection(conn(password=None))
    with pytest.raises(InputValidationError, match="must be an http"):
        settings_from_connection(conn(host="ftp://files.example.com"))


def test_task_ids_are_checked_and_quoted() -> None:
    # A "/" is refused before quoting (tests/test_adversarial_findings.py).
    assert get_task_call("a?b c#d").path == "/api/v1/tasks/a%3Fb%20c%23d"
    with pytest.raises(InputValidationError, match="mindvideo_task_id = None"):
        get_task_call(None)  # type: ignore[arg-type]


def test_error_mapping_keeps_server_message_and_request_id() -> None:
    error = error_from_response(response(422, {"error": {"message": "prompt too long"}, "request_id": "req_1"}))
    assert isinstance(error, InputValidationError)
    assert (error.http_status, error.request_id) == (422, "req_1")
    assert "prompt too long" in str(error)
    assert "req_1" in str(error)


def test_redirects_are_not_followed_with_the_key() -> None:
    error = error_from_response(response(302, {}, headers={"Location": "https://elsewhere.example/x"}))
    assert isinstance(error, UnexpectedResponseError)
    assert "not following" in str(error)


def test_events_shapes() -> None:
    assert [e.type for e in events_from_response(response(200, [{"type": "a"}]))] == ["a"]
    assert [e.message for e in events_from_response(response(200, {"data": ["plain"]}))] == ["plain"]
    with pytest.raises(UnexpectedResponseError, match="without a list"):
        events_from_response(response(200, {"events": "nope"}))


def test_a_json_error_without_message_and_an_empty_body() -> None:
    assert "[1, 2]" in str(error_from_response(response(500, [1, 2])))
    assert "(empty body)" in str(error_from_response(response(500, text="")))
    with pytest.raises(UnexpectedResponseError, match="not JSON"):
        task_from_response(response(200, text="x" * 1000))


class _NullLog:
    def debug(self, *args: object) -> None:
        pass

    def warning(self, *args: object) -> None:
        pass


def test_http_date_in_the_past_without_timezone() -> None:
    past = (NOW - timedelta(seconds=10)).strftime("%a, %d %b %Y %H:%M:%S")
    assert retry_after_seconds(past, now=NOW) == 0.0


def test_deeply_nested_json_is_an_unexpected_response_not_a_recursion_error() -> None:
    deep = "[" * 200_000 + "]" * 200_000
    with pytest.raises(UnexpectedResponseError):
        task_from_response(response(200, text=deep))
    assert "HTTP 500" in str(error_from_response(response(500, text=deep)))
    nested_output = '{"task_id": "t", "status": "succeeded", "output": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001
    with pytest.raises(UnexpectedResponseError):
        task_from_response(response(200, text=nested_output))


def test_server_text_is_capped_in_errors() -> None:
    huge = "x" * 2_000_000
    for answer in (
        response(500, {"error": {"message": huge}}),
        response(400, {"detail": huge}),
        response(502, text=huge),
        response(200, text=huge),
    ):
        try:
            raised = error_from_response(answer) if answer.status_code >= 400 else task_from_response(answer)
        except UnexpectedResponseError as exc:
            raised = exc
        assert len(str(raised)) < 3_000, answer.status_code


def test_a_huge_remote_error_is_capped_in_the_task() -> None:
    task = task_from_response(
        response(200, {"task_id": "t", "status": "failed", "error": {"message": "y" * 2_000_000}})
    )
    assert task.error_message is not None
    assert len(task.error_message) < 3_000
    assert len(json.dumps(task.summary())) < 5_000


def test_redact_cuts_the_key_whole_escaped_or_cut_short_and_url_credentials() -> None:
    from airflow_provider_mindvideo.client.protocol import redact

    key = 'mv_live_Zq7Xk9PwLm3Rt5Yv8Bn2"Hs'
    text = (
        f"sent {key}; as JSON {json.dumps(key)}; cut at a cap {key[:14]}...; "
        "proxy url='http://user:Pr0xyS3cret@127.0.0.1:3128'"
    )
    clean = redact(text, key)
    assert "Zq7Xk9" not in clean
    assert "Pr0xyS3cret" not in clean
    assert "http://***@127.0.0.1:3128" in clean


def test_redact_cuts_a_key_echoed_percent_encoded_whole_or_cut_short() -> None:
    from urllib.parse import quote, quote_plus

    from airflow_provider_mindvideo.client.protocol import redact

    key = 'mv_live_Ab"c\\d<e>&f%g/h+i=j~k'
    for encoded in (quote(key, safe=""), quote(key), quote_plus(key)):
        for text in (f"Bearer%20{encoded} refused", f"header Bearer%20{encoded[:24]}"):
            clean = redact(text, key)
            assert "c%5Cd" not in clean and "%22c" not in clean, (encoded, clean)

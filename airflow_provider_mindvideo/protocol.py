"""The MindVideo HTTP protocol without I/O: requests, responses, retry decisions.

The sync and async hooks are thin shells around :func:`exchange`, a generator that says what
to do next (send this request, sleep this long) and is told what happened. Retry rules, error
mapping and logging therefore live here once, for the worker and the triggerer alike.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import logging
import random
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from airflow_provider_mindvideo.errors import (
    AuthenticationError,
    IdempotencyConflictError,
    InputValidationError,
    MindVideoError,
    RateLimitedError,
    ServerError,
    TaskNotFoundError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_provider_mindvideo.models import MindVideoTask, TaskEvent

# A connection's settings live in their own module; these names stay importable from here.
from airflow_provider_mindvideo.settings import ClientSettings as ClientSettings
from airflow_provider_mindvideo.settings import invisible_character
from airflow_provider_mindvideo.settings import is_loopback as is_loopback
from airflow_provider_mindvideo.settings import settings_from_connection as settings_from_connection
from airflow_provider_mindvideo.settings import user_agent as user_agent

TASKS_PATH = "/api/v1/tasks"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_BODY_PREVIEW_CHARS = 200

# Jitter needs no reproducible seed; one generator serves every call (seeding one costs more than a poll's parsing).
_JITTER = random.Random()

Step = httpx.Request | float
Outcome = httpx.Response | httpx.RequestError | None
Exchange = Generator[Step, Outcome, httpx.Response]
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How one API call retries 429, 5xx and network errors.

    :param max_retries: retries after the first attempt.
    :param deadline: seconds one call may take, waits included; a wait that would pass it is
        not started.
    :param backoff: the first wait; each retry doubles it, up to ``max_backoff``, jittered so
        that calls failing together do not retry together.
    """

    max_retries: int = 5
    deadline: float = 120.0
    backoff: float = 0.5
    max_backoff: float = 30.0

    def retry_delay(self, attempt: int, outcome: Outcome, elapsed: float, rng: random.Random) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to stop with ``outcome``."""
        if attempt > self.max_retries:
            return None
        if isinstance(outcome, httpx.Response):
            if outcome.status_code not in RETRYABLE_STATUS:
                return None
            delay = retry_after_seconds(outcome.headers.get("Retry-After"))
        elif isinstance(outcome, httpx.TransportError):
            delay = None
        else:
            return None
        if delay is None:
            ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
        return delay if elapsed + delay <= self.deadline else None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiCall:
    """One API call, before a client turns it into an ``httpx.Request``."""

    method: str
    path: str
    json: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return client.build_request(self.method, self.path, json=self.json, headers=dict(self.headers))


def create_task_call(model: str, input: Mapping[str, Any], idempotency_key: str) -> ApiCall:
    check_idempotency_key(idempotency_key)
    return ApiCall(
        "POST",
        TASKS_PATH,
        json={"model": model, "input": dict(input)},
        headers={"Idempotency-Key": idempotency_key},
    )


def get_task_call(task_id: str) -> ApiCall:
    return ApiCall("GET", _task_path(task_id))


def get_task_events_call(task_id: str) -> ApiCall:
    return ApiCall("GET", _task_path(task_id) + "/events")


def _task_path(task_id: str) -> str:
    if not isinstance(task_id, str) or not task_id.strip():
        raise InputValidationError(f"mindvideo_task_id = {task_id!r}: must be a non-empty task id")
    if task_id.strip() in (".", ".."):
        # Quoting leaves dots alone, and URL normalisation would turn ".." into the parent
        # path: a request, with the key, to another endpoint than a task's.
        raise InputValidationError(f"mindvideo_task_id = {task_id!r}: not a task id (a path segment)")
    return f"{TASKS_PATH}/{quote(task_id.strip(), safe='')}"


def check_idempotency_key(key: Any) -> None:
    """Refuse a key that cannot be sent as an ``Idempotency-Key`` header: 1-255 visible ASCII characters.

    Sent as it is, such a key fails inside the HTTP library (a raw ``TypeError``, or a
    protocol error that would be retried as if the service were unreachable).
    """
    expected = f"must be text of 1-{MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters"
    if not isinstance(key, str):
        raise InputValidationError(f"idempotency_key = {key!r} ({type(key).__name__}): {expected}")
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InputValidationError(f"idempotency_key of {len(key)} characters: {expected}")
    found = invisible_character(key)
    if found is not None:
        raise InputValidationError(f"idempotency_key {key!r} contains {found[1]} at character {found[0]}: {expected}")


# -- one call, with retries -------------------------------------------------------------------


def exchange(
    request: httpx.Request,
    policy: RetryPolicy,
    log: logging.Logger | Any,
    rng: random.Random | None = None,
) -> Exchange:
    """Drive one API call: yields the request to send or seconds to sleep; returns the final response.

    The driver sends back the ``httpx.Response`` or the ``httpx.RequestError`` an attempt ended
    with (None after a sleep). A POST is replayed with the same Idempotency-Key, which the API
    answers with the original task, so a lost response never creates a second charged task.
    """
    rng = rng or _JITTER
    started = time.monotonic()
    outcome: Outcome = None
    for attempt in itertools.count(1):
        outcome = yield request
        _log_attempt(log, request, outcome, attempt)
        delay = policy.retry_delay(attempt, outcome, time.monotonic() - started, rng)
        if delay is None:
            break
        log.debug("MindVideo %s %s: retrying in %.2f s", request.method, request.url.path, delay)
        yield delay
    if isinstance(outcome, httpx.TransportError):
        raise TransportError(
            f"Could not reach MindVideo at {request.url.host} after {attempt} attempt(s): "
            f"{type(outcome).__name__}: {outcome or 'no details'}"
        ) from outcome
    if isinstance(outcome, httpx.RequestError):
        raise UnexpectedResponseError(f"Unreadable response from MindVideo: {outcome}") from outcome
    assert isinstance(outcome, httpx.Response)
    return outcome


def _log_attempt(log: Any, request: httpx.Request, outcome: Outcome, attempt: int) -> None:
    if isinstance(outcome, httpx.Response):
        log.debug(
            "MindVideo %s %s -> %s request_id=%s attempt=%d",
            request.method,
            request.url.path,
            outcome.status_code,
            _LazyRequestId(outcome),
            attempt,
        )
    else:
        log.debug(
            "MindVideo %s %s -> %s attempt=%d",
            request.method,
            request.url.path,
            type(outcome).__name__,
            attempt,
        )


class _LazyRequestId:
    # Finding the request id may mean parsing the body; do it only if the debug line is rendered,
    # not on every poll of every wait in the triggerer's shared event loop.
    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    def __str__(self) -> str:
        return str(_request_id(self.response))


# -- responses ---------------------------------------------------------------------------------


def task_from_response(response: httpx.Response) -> MindVideoTask:
    """The task in a create or get answer, or the error it stands for."""
    data = _json_body(response)
    try:
        return MindVideoTask.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = ", ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise UnexpectedResponseError(
            f"MindVideo answered {response.request.method} {response.request.url.path} "
            f"without a usable task ({problems})",
            http_status=response.status_code,
            request_id=_request_id(response),
        ) from None


def events_from_response(response: httpx.Response) -> list[TaskEvent]:
    """The events in an events answer: a list, or an object holding one under ``events``/``data``."""
    data = _json_body(response)
    if isinstance(data, dict):
        data = data.get("events", data.get("data"))
    if not isinstance(data, list):
        raise UnexpectedResponseError(
            "MindVideo answered the events request without a list of events",
            http_status=response.status_code,
            request_id=_request_id(response),
        )
    return [TaskEvent.model_validate(e if isinstance(e, dict) else {"message": str(e)}) for e in data]


def _json_body(response: httpx.Response) -> Any:
    if not response.is_success:
        raise error_from_response(response)
    try:
        return json.loads(response.content)
    except ValueError:
        raise UnexpectedResponseError(
            f"MindVideo sent a body that is not JSON ({_content_type(response)}): {_preview(response)}",
            http_status=response.status_code,
            request_id=_request_id(response),
        ) from None


_ERRORS_BY_STATUS: dict[int, type[MindVideoError]] = {
    400: InputValidationError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: TaskNotFoundError,
    409: IdempotencyConflictError,
    422: InputValidationError,
    429: RateLimitedError,
}


def error_from_response(response: httpx.Response) -> MindVideoError:
    """The :class:`MindVideoError` a non-success answer stands for, with the server's message."""
    status = response.status_code
    cls = _ERRORS_BY_STATUS.get(status) or (ServerError if status >= 500 else UnexpectedResponseError)
    request = response.request
    server_says = _server_message(response)
    if cls is IdempotencyConflictError:
        message = (
            f"Idempotency-Key {request.headers.get('Idempotency-Key')!r} was already used with a "
            f"different payload; MindVideo refused to create a task for this one ({server_says})"
        )
    elif cls is TaskNotFoundError:
        message = f"MindVideo task not found at {request.url.path} (or not visible to this API key)"
    elif cls is AuthenticationError:
        message = f"MindVideo refused the API key: {server_says}"
    elif 300 <= status < 400:
        message = f"MindVideo redirected to {response.headers.get('Location')!r}; not following with the key"
    else:
        message = f"MindVideo {request.method} {request.url.path} failed: {server_says}"
    if cls is RateLimitedError and response.headers.get("Retry-After"):
        message += f" (Retry-After: {response.headers['Retry-After']})"
    error = cls(message, http_status=status, request_id=_request_id(response))
    if isinstance(error, RateLimitedError):
        error.retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    return error


def _server_message(response: httpx.Response) -> str:
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"{_content_type(response)} body: {_preview(response)}"
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or json.dumps(value)
            if value:
                return value if isinstance(value, str) else json.dumps(value)
    return _preview(response)


def _request_id(response: httpx.Response) -> str | None:
    header = response.headers.get("X-Request-Id")
    if header:
        return str(header)
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    value = body.get("request_id") if isinstance(body, dict) else None
    return str(value) if value else None


def _content_type(response: httpx.Response) -> str:
    return str(response.headers.get("Content-Type", "no content type")).split(";")[0]


def _preview(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    if not text:
        return "(empty body)"
    return text if len(text) <= _BODY_PREVIEW_CHARS else text[:_BODY_PREVIEW_CHARS] + "..."

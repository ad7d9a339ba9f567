"""The MindVideo HTTP protocol without I/O: requests, responses, retry decisions.

The sync and async hooks are thin shells around :func:`exchange`, a generator that says what
to do next (send this request, sleep this long) and is told what happened. Retry rules, error
mapping and logging therefore live here once, for the worker and the triggerer alike.
"""

from __future__ import annotations

import email.utils
import functools
import itertools
import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from airflow_provider_mindvideo.client.errors import (
    AuthenticationError,
    IdempotencyConflictError,
    InputValidationError,
    MindVideoError,
    OversizedAnswerError,
    RateLimitedError,
    ServerError,
    TaskNotFoundError,
    TlsVerificationError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_provider_mindvideo.client.models import AnswerTooLargeError, MindVideoTask, TaskEvent, clip

# Redaction has its own home; ``redact`` stays importable from here.
from airflow_provider_mindvideo.client.redaction import may_hold, without_secret_in
from airflow_provider_mindvideo.client.redaction import redact as redact

# A connection's settings live in their own module; these names stay importable from here.
from airflow_provider_mindvideo.client.settings import ClientSettings as ClientSettings
from airflow_provider_mindvideo.client.settings import invisible_character
from airflow_provider_mindvideo.client.settings import is_loopback as is_loopback
from airflow_provider_mindvideo.client.settings import settings_from_connection as settings_from_connection
from airflow_provider_mindvideo.client.settings import user_agent as user_agent

TASKS_PATH = "/api/v1/tasks"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_BODY_PREVIEW_CHARS = 200
# The attempt an httpx.Request is on, kept in its extensions (httpx hands transports the ones they know).
_ATTEMPT = "mindvideo_attempt"
# The API key a request carries, as the answer's parser looks for it (read from its header once).
_KEY = "mindvideo_key"

# Jitter needs no reproducible seed; one generator serves every call (seeding one costs more than a poll's parsing).
_JITTER = random.Random()

Outcome = httpx.Response | httpx.RequestError | None
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

    def retry_delay(self, attempt: int, problem: MindVideoError, elapsed: float, rng: random.Random) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` after ``problem``, or None to give up."""
        if attempt > self.max_retries:
            return None
        delay = problem.retry_after
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
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


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
    if "/" in task_id or any(not char.isprintable() for char in task_id):
        raise InputValidationError(f"mindvideo_task_id = {task_id!r}: a task id has no '/' or control characters")
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


@dataclass(frozen=True)
class Send:
    """Send ``request``; the whole attempt (connect, send, every byte of the answer) gets ``seconds``.

    Per-read timeouts alone let a server that trickles a byte at a time hold a call for ever;
    the shells enforce this budget for the attempt as a whole.
    """

    request: httpx.Request
    seconds: float


Step = Send | float
Exchange = Generator[Step, Outcome, T]


def exchange(
    request: httpx.Request,
    parse: Callable[[httpx.Response], T],
    policy: RetryPolicy,
    log: logging.Logger | Any,
    attempt_timeout: float,
    rng: random.Random | None = None,
) -> Exchange[T]:
    """Drive one API call: yields what to send (or seconds to sleep); returns the parsed answer.

    The driver sends back the ``httpx.Response`` or the ``httpx.RequestError`` an attempt ended
    with (None after a sleep). Network errors, 429/5xx and 2xx answers that cannot be read are
    tried again within the policy's deadline. A POST is replayed with the same Idempotency-Key,
    which the API answers with the original task, so neither a lost nor an unreadable answer
    ever creates a second charged task.
    """
    rng = rng or _JITTER
    started = time.monotonic()
    for attempt in itertools.count(1):
        budget = min(attempt_timeout, policy.deadline - (time.monotonic() - started))
        # Parsers may need to know an answer is not the first attempt's (see created_task_from_response).
        request.extensions[_ATTEMPT] = attempt
        outcome = yield Send(request, max(0.0, budget))
        _log_attempt(log, request, outcome, attempt)
        try:
            return _result(request, outcome, parse, budget)
        except MindVideoError as error:
            # Before it is logged or raised: a server (or proxy) may echo the request, key included.
            problem = without_secrets(error, request)
        elapsed = time.monotonic() - started
        if not _retry_in_call(outcome, problem):
            raise problem
        delay = policy.retry_delay(attempt, problem, elapsed, rng)
        if delay is None:
            stopped_by = (
                "retries" if attempt > policy.max_retries else f"the call's deadline of {policy.deadline:.0f} s"
            )
            raise _final(problem, attempt, elapsed, stopped_by) from problem.__cause__
        # Once per attempt, not per poll: a task log that stays silent while a host hangs hides the cause.
        log.warning("%s; attempt %d of %d, trying again in %.1f s", problem, attempt, policy.max_retries + 1, delay)
        yield delay
    raise AssertionError("unreachable")  # pragma: no cover


def _result(request: httpx.Request, outcome: Outcome, parse: Callable[[httpx.Response], T], budget: float) -> T:
    """What one attempt's outcome means: the parsed answer, or the error it stands for."""
    if isinstance(outcome, httpx.Response):
        return parse(outcome)  # a parser raises the error a non-success answer stands for
    where = f"{request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}"
    if isinstance(outcome, httpx.PoolTimeout):  # this side's own limits, not the server
        raise TransportError(f"MindVideo at {where} was not asked: {outcome}") from outcome
    if isinstance(outcome, httpx.TimeoutException) and budget > 0:
        raise TransportError(f"MindVideo at {where} sent no complete answer within {budget:.0f} s") from outcome
    if isinstance(outcome, httpx.ConnectError) and _is_certificate_problem(outcome):
        raise TlsVerificationError(
            f"The TLS certificate of {where} could not be verified ({outcome}). If the host is right, "
            "give the CA that signed it in the connection's ca_bundle extra (or the system's CA store)"
        ) from outcome
    if isinstance(outcome, httpx.TransportError):
        hint = " (is it a plain-http server? the URL says https)" if _caused_by(outcome, ssl.SSLError) else ""
        raise TransportError(
            f"Could not reach MindVideo at {where}: {type(outcome).__name__}: {outcome}{hint}"
        ) from outcome
    if isinstance(outcome, httpx.RequestError):
        raise UnexpectedResponseError(f"Unreadable response from MindVideo at {where}: {outcome}") from outcome
    raise TransportError(f"MindVideo at {where} was not asked: the call's deadline had passed")


def without_secrets(error: MindVideoError, request: httpx.Request) -> MindVideoError:
    """``error``, or a copy of it with the request's API key and any URL credentials cut out."""
    secret = _api_key_of(request)
    message, request_id = _redacted(error.message, secret), _redacted(error.request_id, secret)
    if (message, request_id) == (error.message, error.request_id):
        return error
    clean = type(error)(message, http_status=error.http_status, request_id=request_id)
    clean.retry_after = error.retry_after
    clean.__cause__ = error.__cause__
    return clean


def _api_key_of(request: httpx.Request) -> str | None:
    # Read once per request: a hook reuses its GETs, and reading a header costs a poll more than the
    # check it serves.
    key = request.extensions.get(_KEY)
    if key is None:
        _scheme, _, key = str(request.headers.get("Authorization", "")).partition(" ")
        request.extensions[_KEY] = key
    return key or None


def _redacted(text: str | None, secret: str | None) -> Any:
    return text if text is None else redact(text, secret)


def _retry_in_call(outcome: Outcome, problem: MindVideoError) -> bool:
    # Inside one call only what may pass by itself: the network, 429/5xx, an answer mangled on
    # the way. Everything else (4xx, a refused certificate, an answer too large to keep) would
    # fail the same way again.
    if not problem.retryable:
        return False
    if isinstance(outcome, httpx.Response):
        return outcome.status_code in RETRYABLE_STATUS or outcome.is_success
    return isinstance(outcome, httpx.TransportError)


def _final(problem: MindVideoError, attempts: int, elapsed: float, stopped_by: str) -> MindVideoError:
    """The error a call ends with: the last problem, saying how long and how often it was tried."""
    error = type(problem)(
        f"{problem.message} (after {attempts} attempt(s) in {elapsed:.1f} s; stopped by {stopped_by})",
        http_status=problem.http_status,
        request_id=problem.request_id,
    )
    error.retry_after = problem.retry_after
    return error


def _is_certificate_problem(error: httpx.ConnectError) -> bool:
    return _caused_by(error, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(error)


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, kind):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _log_attempt(log: Any, request: httpx.Request, outcome: Outcome, attempt: int) -> None:
    answer = outcome.status_code if isinstance(outcome, httpx.Response) else type(outcome).__name__
    request_id = _LazyRequestId(outcome) if isinstance(outcome, httpx.Response) else None
    path = request.url.path
    log.debug("MindVideo %s %s -> %s request_id=%s attempt=%d", request.method, path, answer, request_id, attempt)


class _LazyRequestId:
    # Finding the request id may mean parsing the body; do it only if the debug line is rendered,
    # not on every poll of every wait in the triggerer's shared event loop.
    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    def __str__(self) -> str:
        return redact(str(_request_id(self.response, None)), _api_key_of(self.response.request))


# -- responses ---------------------------------------------------------------------------------


def _secret_free(parse: Callable[[httpx.Response], T]) -> Callable[[httpx.Response], T]:
    """``parse``, raising its errors with the request's key cut out (the answer may quote the request)."""

    @functools.wraps(parse)
    def secret_free(response: httpx.Response) -> T:
        try:
            return parse(response)
        except MindVideoError as error:
            problem = without_secrets(error, response.request)
            if problem is error:
                raise
        # Raised here, outside the handler: the error quoting the key must not ride along as its context.
        raise problem

    return secret_free


def _without_key(data: Any, response: httpx.Response) -> Any:
    """The decoded answer with the request's key cut out of every string in it, dict keys included.

    The walk is paid only by an answer whose body could hold the key: not by a normal poll.
    """
    secret = _api_key_of(response.request)
    return without_secret_in(data, secret) if may_hold(response.content, secret) else data


@_secret_free
def task_from_response(response: httpx.Response) -> MindVideoTask:
    """The task in a create or get answer, or the error it stands for.

    The key is cut out of everything the server wrote, and the task is cut to what the
    provider stores of one task (``STORED_ANSWER_LIMIT``), so every consumer gets it clean.
    """
    data = _json_body(response)
    if isinstance(data, dict) and "cut" in data:
        data = {name: value for name, value in data.items() if name != "cut"}  # the provider's note, not the server's
    try:
        task = MindVideoTask.model_validate(_without_key(data, response))
        return task.within_stored_limit(len(response.content))
    except pydantic.ValidationError as exc:
        problems = ", ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        raise UnexpectedResponseError(
            f"MindVideo answered {response.request.method} {response.request.url.path} "
            f"without a usable task ({clip(problems, 500)})",
            http_status=response.status_code,
            request_id=_request_id(response, data),
        ) from None
    except AnswerTooLargeError as exc:
        raise OversizedAnswerError(
            str(exc), http_status=response.status_code, request_id=_request_id(response, data)
        ) from None
    except RecursionError:
        raise _unreadable(response, "nested too deeply to read") from None


def created_task_from_response(response: httpx.Response) -> MindVideoTask:
    """The task in a create answer, marked ``created`` when this call may have made it.

    That is when the API says so (201), and also when an earlier attempt of this call went
    unanswered or unread: the first POST may have created the task and its replay then answers
    200, as for a task an earlier Airflow try created. Erring this way never pays: a try that
    stops early costs a retry, not a charge.
    """
    task = task_from_response(response)
    retried = response.request.extensions.get(_ATTEMPT, 1) > 1
    return task.model_copy(update={"created": True}) if response.status_code == 201 or retried else task


@_secret_free
def events_from_response(response: httpx.Response) -> list[TaskEvent]:
    """The events in an events answer: a list, or an object holding one under ``events``/``data``."""
    data = _json_body(response)
    if isinstance(data, dict):
        data = data.get("events", data.get("data"))
    if not isinstance(data, list):
        raise UnexpectedResponseError(
            "MindVideo answered the events request without a list of events",
            http_status=response.status_code,
            request_id=_request_id(response, None),
        )
    try:
        data = _without_key(data, response)
        return [TaskEvent.model_validate(e if isinstance(e, dict) else {"message": str(e)}) for e in data]
    except (pydantic.ValidationError, RecursionError):
        raise _unreadable(response, "events of an unknown shape") from None


_NOT_JSON = object()


def _decoded(response: httpx.Response) -> Any:
    """The body as JSON, or ``_NOT_JSON``: nothing a server sends may raise past this point."""
    try:
        return json.loads(response.content, parse_int=_json_int)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _json_int(digits: str) -> int | float:
    # An integer past Python's digit limit (4,300) is valid JSON: read it as the (infinite) float
    # it is, so that one absurd field (a cost) is unknown rather than the whole answer unreadable.
    try:
        return int(digits)
    except ValueError:
        return float(digits)


def _json_body(response: httpx.Response) -> Any:
    if not response.is_success:
        raise error_from_response(response)
    data = _decoded(response)
    if data is _NOT_JSON:
        raise _unreadable(response, f"a body that is not JSON ({_content_type(response)}): {_preview(response)}")
    return data


def _unreadable(response: httpx.Response, what: str) -> UnexpectedResponseError:
    return UnexpectedResponseError(
        f"MindVideo sent {what}", http_status=response.status_code, request_id=_request_id(response, None)
    )


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
    body = _decoded(response)
    server_says = _server_message(response, body)
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
        location = clip(str(response.headers.get("Location")), 200)
        message = f"MindVideo redirected to {location!r}; not following with the key"
    else:
        message = f"MindVideo {request.method} {request.url.path} failed: {server_says}"
    retry_after = response.headers.get("Retry-After")
    if retry_after and status in RETRYABLE_STATUS:
        message += f" (Retry-After: {clip(retry_after, 40)})"
    error = cls(message, http_status=status, request_id=_request_id(response, body))
    if retry_after and status in RETRYABLE_STATUS:
        error.retry_after = retry_after_seconds(retry_after)
    return error


def _server_message(response: httpx.Response, body: Any) -> str:
    if body is _NOT_JSON:
        return f"{_content_type(response)} body: {_preview(response)}"
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value
            if value:
                return clip(value if isinstance(value, str) else _dumps(value))
    return _preview(response)


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):
        return "(unreadable)"


def _request_id(response: httpx.Response, body: Any) -> str | None:
    header = response.headers.get("X-Request-Id")
    if header:
        return clip(str(header), 100)
    if body is None:
        body = _decoded(response)
    value = body.get("request_id") if isinstance(body, dict) else None
    return clip(str(value), 100) if value else None


def _content_type(response: httpx.Response) -> str:
    return str(response.headers.get("Content-Type", "no content type")).split(";")[0]


def _preview(response: httpx.Response) -> str:
    # Only the start is shown, so only the start is decoded: bodies can be megabytes.
    text = " ".join(response.content[: _BODY_PREVIEW_CHARS * 4].decode("utf-8", "replace").split())
    if not text:
        return "(empty body)"
    return text if len(text) <= _BODY_PREVIEW_CHARS else text[:_BODY_PREVIEW_CHARS] + "..."

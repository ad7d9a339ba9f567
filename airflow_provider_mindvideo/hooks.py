"""MindVideoHook: the MindVideo task API from Airflow, sync for workers and async for triggers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
import weakref
from asyncio import sleep as async_sleep
from collections.abc import Callable, Iterator, Mapping
from time import monotonic, sleep
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_provider_mindvideo import CONN_TYPE, DEFAULT_CONN_ID, UI_FIELD_BEHAVIOUR
from airflow_provider_mindvideo.client.catalog import validate_input
from airflow_provider_mindvideo.client.deadlines import deadline_after, enforce_deadlines
from airflow_provider_mindvideo.client.errors import AuthenticationError, ConnectionNotFoundError, MindVideoError
from airflow_provider_mindvideo.client.limits import ConnectionLimits, limits_for
from airflow_provider_mindvideo.client.models import MindVideoTask, TaskEvent
from airflow_provider_mindvideo.client.protocol import (
    ApiCall,
    Outcome,
    RetryPolicy,
    Send,
    create_task_call,
    created_task_from_response,
    error_from_response,
    events_from_response,
    exchange,
    get_task_call,
    get_task_events_call,
    task_from_response,
)
from airflow_provider_mindvideo.client.redaction import redact
from airflow_provider_mindvideo.client.settings import ClientSettings, settings_from_connection
from airflow_provider_mindvideo.transports import (
    CallingClient,
    PollingClient,
    borrow_async_client,
    forget_closed_loop,
    give_back_async_client,
)

if TYPE_CHECKING:
    from airflow_provider_mindvideo.spend.location import SpendBooks

T = TypeVar("T")

# Looked up by test_connection(); MindVideo ids never look like these.
_PROBE_TASK_ID = "airflow-connection-test-00000000"
_WRONG_KEY_PROBE_TASK_ID = "airflow-connection-test-00000001"
# Sent once by test_connection(): the MindVideo API must refuse it.
_WRONG_KEY = "mv_live_airflow_connection_test_not_a_key"
_NOT_MINDVIDEO = "not the MindVideo API (wrong base URL?)"


class MindVideoHook(BaseHook):
    """Interact with the MindVideo task API.

    One HTTP client per hook (sync and async each), reused across calls and closed by
    :meth:`close` / :meth:`aclose` or by using the hook as a (async) context manager.
    Calls retry 429, 5xx and network errors with jittered backoff; 4xx answers are never retried.

    :param mindvideo_conn_id: The :ref:`MindVideo connection <howto/connection:mindvideo>`:
        host = base URL (default ``https://api.mindvideo.ai``), password = API key.
    :param timeout: Seconds one HTTP request may take; overrides the connection's ``timeout`` extra.
    :param max_retries: Retries of one call; overrides the connection's ``max_retries`` extra.
    :param retry_policy: Full control of retries and backoff (takes precedence over ``max_retries``).
    :param shared_client: For async calls, borrow the event loop's pooled client for this
        account instead of opening one (what triggers do: thousands share one loop). Closing
        the hook then leaves the shared client open.
    """

    conn_name_attr = "mindvideo_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "MindVideo"

    def __init__(
        self,
        mindvideo_conn_id: str = DEFAULT_CONN_ID,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        shared_client: bool = False,
        logger_name: str | None = None,
    ) -> None:
        super().__init__(logger_name=logger_name)
        self.mindvideo_conn_id = mindvideo_conn_id
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_policy = retry_policy
        self.shared_client = shared_client
        self._settings: ClientSettings | None = None
        self._extras: Mapping[str, Any] | None = None
        self._client: httpx.Client | None = None
        self._async_client: httpx.AsyncClient | None = None
        self._async_loop: Callable[[], asyncio.AbstractEventLoop | None] = _no_loop
        self._requests: dict[tuple[str, str], httpx.Request] = {}
        self._assembled_log: Any = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow < 3.2 (newer versions read the provider info)."""
        return UI_FIELD_BEHAVIOUR

    # -- connection and clients ------------------------------------------------------------

    def _adopt_settings(self, conn: Any) -> ClientSettings:
        settings = settings_from_connection(conn, timeout=self.timeout, max_retries=self.max_retries, log=self.log)
        from airflow.sdk.log import mask_secret

        mask_secret(settings.api_key)
        proxy_password = urlsplit(settings.proxy).password if settings.proxy else None
        if proxy_password:
            mask_secret(proxy_password)
        self._settings = settings
        # The budgets live in the extras too: the spend ledger reads them from here, no second read.
        self._extras = conn.extra_dejson
        return settings

    @property
    def settings(self) -> ClientSettings:
        """The connection's settings, read once (sync: not for use inside an event loop)."""
        if self._settings is not None:
            return self._settings
        try:
            conn = self.get_connection(self.mindvideo_conn_id)
        except AirflowNotFoundException:
            raise self._no_such_connection() from None
        return self._adopt_settings(conn)

    async def asettings(self) -> ClientSettings:
        """The connection's settings, read once without blocking the event loop."""
        if self._settings is not None:
            return self._settings
        try:
            conn = await self.aget_connection(self.mindvideo_conn_id)
        except AirflowNotFoundException:
            raise self._no_such_connection() from None
        return self._adopt_settings(conn)

    def spend_books(self, budget: str | None = None) -> SpendBooks:
        """The spend ledger's books for creates through this connection (its ``budgets`` extra), and ``budget``'s.

        Without budgets in the extras: books that do nothing, and no database is opened.
        """
        from airflow_provider_mindvideo.spend.location import spend_books

        self.settings  # noqa: B018 -- reads the connection (and its extras) once
        if self._extras is None:  # settings reused from another hook: their extras were not kept
            self._extras = self.get_connection(self.mindvideo_conn_id).extra_dejson
        return spend_books(
            self.mindvideo_conn_id,
            self._extras,
            budget,
            look_up=lambda task_id, within: self.get_task(task_id, within=within),
        )

    async def aspend_books(self, budget: str | None = None) -> SpendBooks:
        """:meth:`spend_books` without blocking the event loop (the ledger is opened in a thread)."""
        from airflow_provider_mindvideo.spend.location import spend_books

        await self.asettings()
        if self._extras is None:  # settings reused from another hook: their extras were not kept
            self._extras = (await self.aget_connection(self.mindvideo_conn_id)).extra_dejson
        return await asyncio.to_thread(spend_books, self.mindvideo_conn_id, self._extras, budget)

    def reuse_settings(self, settings: ClientSettings) -> None:
        """Use settings another hook read from this connection moments ago (waits started together share one)."""
        self._settings = settings

    @property
    def _calls_log(self) -> Any:
        # Airflow's task logger is a lazy proxy that assembles a new logger at every attribute
        # read (opening it on the log file, and advising the kernel about that file): once per
        # request's debug line it cost a twentieth of a poll's CPU in the triggerer. Once per hook.
        if self._assembled_log is None:
            log = self.log
            bind = getattr(log, "bind", None)
            self._assembled_log = bind() if callable(bind) else log
        return self._assembled_log

    def _no_such_connection(self) -> ConnectionNotFoundError:
        # Airflow's own error is retryable, and every retry would look the connection up in vain.
        return ConnectionNotFoundError(
            f"There is no Airflow connection with mindvideo_conn_id {self.mindvideo_conn_id!r}: "
            "create it (type MindVideo) or name another one"
        )

    def get_conn(self) -> httpx.Client:
        if self._client is None:
            settings = self.settings
            transport = httpx.HTTPTransport(**settings.transport_options())
            self._client = enforce_deadlines(CallingClient(**settings.client_options(), transport=transport))
        return self._client

    async def aget_conn(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._async_client is not None and self._async_loop() is not loop:
            # Made on another event loop (an earlier asyncio.run(), say): its connections belong
            # to that loop, which is closed or busy elsewhere, so it can be neither used nor
            # closed from here. Start afresh on this loop.
            self._let_go_of_async_client()
        if self._async_client is None:
            settings = await self.asettings()
            if self.shared_client:
                self._async_client = borrow_async_client(settings)
            else:
                transport = httpx.AsyncHTTPTransport(**settings.transport_options())
                self._async_client = PollingClient(**settings.client_options(), transport=transport)
            self._async_loop = weakref.ref(loop)
        return self._async_client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._async_client is None:
            return
        if self._async_loop() is not asyncio.get_running_loop():
            self._let_go_of_async_client()  # another loop's: see aget_conn
            return
        if self.shared_client and self._settings is not None:
            await give_back_async_client(self._settings)
        else:
            await self._async_client.aclose()
        self._async_client = None

    def _let_go_of_async_client(self) -> None:
        old_loop = self._async_loop()
        if self.shared_client and old_loop is not None:
            forget_closed_loop(old_loop)
        self._async_client = None

    def __enter__(self) -> MindVideoHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> MindVideoHook:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- the API ----------------------------------------------------------------------------

    def create_task(
        self,
        model: str,
        input: Mapping[str, Any],
        idempotency_key: str | None = None,
        *,
        allow_unknown_model: bool = False,
    ) -> MindVideoTask:
        """Validate ``input`` against the model's schema, then create a task (charged once per key).

        :param idempotency_key: Sent as given. Without one, a fresh key is made for this call
            and reused by its retries, so a lost response never creates a second task.
        :param allow_unknown_model: Send a model slug this provider's catalogue does not know (a
            model newer than it). Without it such a slug fails before any request, naming the
            closest known ones: a typo is never created and charged.
        """
        return self._call(_create(model, input, idempotency_key, allow_unknown_model), created_task_from_response)

    def get_task(self, task_id: str, *, within: float | None = None) -> MindVideoTask:
        """The task as it is now.

        :param within: give up after this many seconds, retries included (a wait's own deadline),
            instead of the retry policy's.
        """
        return self._call(get_task_call(task_id), task_from_response, within)

    def get_task_events(self, task_id: str, *, within: float | None = None) -> list[TaskEvent]:
        """The task's events (their format is not documented: every field optional)."""
        return self._call(get_task_events_call(task_id), events_from_response, within)

    async def acreate_task(
        self,
        model: str,
        input: Mapping[str, Any],
        idempotency_key: str | None = None,
        *,
        allow_unknown_model: bool = False,
    ) -> MindVideoTask:
        """Async :meth:`create_task`."""
        call = _create(model, input, idempotency_key, allow_unknown_model)
        return await self._acall(call, created_task_from_response)

    async def aget_task(self, task_id: str, *, within: float | None = None) -> MindVideoTask:
        """Async :meth:`get_task`."""
        return await self._acall(get_task_call(task_id), task_from_response, within)

    async def aget_task_events(self, task_id: str, *, within: float | None = None) -> list[TaskEvent]:
        """Async :meth:`get_task_events`."""
        return await self._acall(get_task_events_call(task_id), events_from_response, within)

    def test_connection(self) -> tuple[bool, str]:
        """Tell a good API key from a bad one, and the MindVideo API from any other server.

        Looks up a task that cannot exist, twice: with the key (the API answers 404, in JSON)
        and with a deliberately wrong key (the API must refuse it: 401/403). A 404 alone proves
        nothing -- any web server answers it to a wrong base URL. Nothing is created or charged.
        """
        no_retries = RetryPolicy(max_retries=0)
        try:
            settings = self.settings
            with_key = self._call(get_task_call(_PROBE_TASK_ID), _response, policy=no_retries)
            with_wrong_key = None
            if with_key.status_code == 404 and _is_json_object(with_key):
                # Another path than the first probe's: a hook reuses the GET it built for a path.
                path = get_task_call(_WRONG_KEY_PROBE_TASK_ID).path
                wrong = ApiCall("GET", path, headers={"Authorization": f"Bearer {_WRONG_KEY}"})
                with_wrong_key = self._call(wrong, _response, policy=no_retries)
        except MindVideoError as exc:
            return False, str(exc)
        ok, message = connection_test_result(settings.base_url, with_key, with_wrong_key)
        # The server's words (a Location, an error) may echo the request.
        return ok, redact(message, settings.api_key)

    # -- the two shells around protocol.exchange --------------------------------------------

    def _policy(self, settings: ClientSettings, within: float | None) -> RetryPolicy:
        policy = self.retry_policy or RetryPolicy(max_retries=settings.max_retries)
        return policy if within is None else dataclasses.replace(policy, deadline=min(policy.deadline, within))

    def _call(
        self,
        call: ApiCall,
        parse: Callable[[httpx.Response], T],
        within: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> T:
        with self._secret_free_errors():
            client, settings = self.get_conn(), self.settings
            limits = limits_for(settings)
            request = self._request(call, client)
            steps = exchange(
                request, parse, policy or self._policy(settings, within), self._calls_log, settings.timeout
            )
            outcome: Outcome = None
            try:
                while True:
                    step = steps.send(outcome)
                    if isinstance(step, Send):
                        outcome = _send(client, limits, step)
                    else:
                        sleep(step)
                        outcome = None
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def _acall(self, call: ApiCall, parse: Callable[[httpx.Response], T], within: float | None = None) -> T:
        with self._secret_free_errors():
            client, settings = await self.aget_conn(), await self.asettings()
            limits = limits_for(settings)
            request = self._request(call, client)
            steps = exchange(request, parse, self._policy(settings, within), self._calls_log, settings.timeout)
            outcome: Outcome = None
            try:
                while True:
                    step = steps.send(outcome)
                    if isinstance(step, Send):
                        outcome = await _asend(client, limits, step)
                    else:
                        await async_sleep(step)
                        outcome = None
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def _request(self, call: ApiCall, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        # A wait sends the same GET dozens of times; building it (URL parsing, header merging)
        # was a fifth of a poll's CPU in the triggerer benchmark, so a hook builds each GET once.
        if call.json is not None:
            return call.build(client)
        key = (call.method, call.path)
        request = self._requests.get(key)
        if request is None:
            if len(self._requests) >= _BUILT_REQUESTS_KEPT:
                # A batch's hook polls thousands of tasks, each only a few times: the oldest go.
                del self._requests[next(iter(self._requests))]
            request = self._requests[key] = call.build(client)
        return request

    @contextlib.contextmanager
    def _secret_free_errors(self) -> Iterator[None]:
        # The protocol already cuts the key out of what it raises; this covers every other
        # path (settings, validation) with the same rule.
        try:
            yield
        except MindVideoError as exc:
            secret = self._settings.api_key if self._settings else None
            message, request_id = redact(exc.message, secret), exc.request_id and redact(exc.request_id, secret)
            if isinstance(exc, AuthenticationError) and self.mindvideo_conn_id not in message:
                # Which connection's key was refused: a deployment may have several.
                message += f" (the API key of connection {self.mindvideo_conn_id!r}: fix its password)"
            if (message, request_id) != (exc.message, exc.request_id):
                raise type(exc)(message, http_status=exc.http_status, request_id=request_id) from None
            raise


#: GETs a hook keeps built: a wait reuses one; a batch's hundreds in flight each reuse theirs.
_BUILT_REQUESTS_KEPT = 256


def _send(client: httpx.Client, limits: ConnectionLimits, step: Send) -> Outcome:
    """One attempt on the worker, bounded as a whole by ``step.seconds`` once its turn has come.

    Waiting for a slot or a pacing turn is not the server's time: it is bounded by the attempts
    ahead of this one, each of which is bounded.
    """
    with limits.slot():
        waited = 0.0
        while delay := limits.delay():
            if waited + delay > step.seconds:
                return _no_turn(step)
            sleep(delay)
            waited += delay
        try:
            # The wait for the turn was part of the attempt's time: the call's deadline holds.
            with deadline_after(step.seconds - waited):
                return client.send(step.request)
        except httpx.RequestError as exc:
            return exc
        finally:
            limits.finish()


async def _asend(client: httpx.AsyncClient, limits: ConnectionLimits, step: Send) -> Outcome:
    """One attempt in an event loop, bounded as a whole by ``step.seconds`` once its turn has come."""
    async with limits.aslot():
        turn_asked = monotonic()
        if not await limits.await_turn(step.seconds):
            return _no_turn(step)
        # The wait in line for the turn was part of the attempt's time: the call's deadline holds.
        left = step.seconds - (monotonic() - turn_asked)
        try:
            async with asyncio.timeout(left):
                return await client.send(step.request)
        except httpx.RequestError as exc:
            return exc
        except TimeoutError:
            return httpx.ReadTimeout(f"no complete answer within {step.seconds:.1f} s", request=step.request)
        finally:
            limits.finish()


def _no_turn(step: Send) -> httpx.PoolTimeout:
    # A pacing turn further off than the attempt may last is a wait like any other: bounded.
    return httpx.PoolTimeout(
        f"no turn within {step.seconds:.1f} s under the connection's max_requests_per_second", request=step.request
    )


def _create(
    model: str, input: Mapping[str, Any], idempotency_key: str | None, allow_unknown_model: bool = False
) -> ApiCall:
    # Validation comes first: never pay for (or even send) input the API would refuse.
    validate_input(model, input, allow_unknown_model=allow_unknown_model)
    key = f"airflow-{uuid.uuid4().hex}" if idempotency_key is None else idempotency_key
    return create_task_call(model, input, key)


def connection_test_result(
    base_url: str, with_key: httpx.Response, with_wrong_key: httpx.Response | None
) -> tuple[bool, str]:
    """test_connection()'s verdict on the answers to its probes (the second is sent only after a JSON 404)."""
    status = with_key.status_code
    if status in (401, 403, 429) or status >= 500:
        return False, str(error_from_response(with_key))
    if 300 <= status < 400:
        return False, f"{base_url} redirected to {with_key.headers.get('Location')!r}: {_NOT_MINDVIDEO}"
    if status != 404:
        return False, f"{base_url} answered HTTP {status} for a task that cannot exist: {_NOT_MINDVIDEO}"
    if with_wrong_key is None:
        kind = with_key.headers.get("Content-Type", "no content type").split(";")[0]
        return False, f"{base_url} answered HTTP 404 with a {kind} body, not JSON: {_NOT_MINDVIDEO}"
    if with_wrong_key.status_code in (401, 403):
        return True, f"Connection successfully tested: MindVideo at {base_url} accepted the API key."
    return False, (
        f"{base_url} answered HTTP {with_wrong_key.status_code} to a deliberately wrong API key: "
        f"it does not check keys, so it is {_NOT_MINDVIDEO}"
    )


def _response(response: httpx.Response) -> httpx.Response:
    return response


def _is_json_object(response: httpx.Response) -> bool:
    try:
        return isinstance(json.loads(response.content), dict)
    except ValueError:
        return False


def _no_loop() -> None:
    return None

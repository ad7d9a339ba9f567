"""A hostile MindVideo server: the emulator's books, with its answers rewritten field by field by a plan.

The emulator decides what happens (tasks, charges, outcomes): its ledger (``state.charges``,
``state.tasks``) stays the truth a test checks against. Between it and the client sits
:class:`HostileAnswers`, an ASGI middleware that rewrites each 2xx JSON answer to create
(``POST /api/v1/tasks``), get (``GET /api/v1/tasks/{id}``) and events (``GET .../events``)
as a :class:`Plan` says: a field absent, null, of another type, NaN/inf/negative/huge, a
numeric or a non-numeric string, text with line separators, NUL or RTL marks, an echo of the
request's API key (plain, in an ``Authorization`` header, URL-quoted, or JSON ``\\u``-escaped
in the raw body), and extra fields up to 4 MiB.

Plans are keyed by item: every prompt carries a marker ``#<n>#`` and answers about a task are
rewritten by that item's plan (its first answers on a route by ``transient``, the rest by
``persistent``), so that a plan means the same thing however the client orders its requests.

One rule binds the plans: a ``cost_actual`` a client can read as a finite number >= 0 is the
truth (the task's charge). A server lying *low* there is out of scope: no client could hold a
ceiling against it. ``cost_estimate`` may be anything.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from hypothesis import strategies as st
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_mindvideo.emulator.app import TASKS, create_app
from airflow_provider_mindvideo.emulator.state import EmulatorConfig, EmulatorState

#: The API key: characters whose JSON, HTML and URL forms differ from the plain text.
KEY = "mv_Hostile&K3y+/=~7x<q9Zs>"
MARKER = re.compile(r"#(\d+)#")
_U_ESCAPED = "@@U-ESCAPED-KEY@@"  # replaced in the raw body by the key written as \uXXXX escapes

#: A field's rewrite: ("drop",), ("set", value), ("truth", "number" | "string"), ("echo", form), ("huge", size).
Mutation = tuple[Any, ...]
#: Field path to mutation. Paths: a top-level field; ``+extra`` (a new field); ``output.first``
#: (an extra field in the first output item); ``events.message`` (every event's message).
Rewrite = dict[str, Mutation]


@dataclass
class RoutePlan:
    transient: list[Rewrite] = field(default_factory=list)
    persistent: Rewrite = field(default_factory=dict)


#: Item number -> route (create, get, events) -> its plan. Items without one are answered truthfully.
Plan = dict[int, dict[str, RoutePlan]]


def key_forms(key: str = KEY) -> set[str]:
    """Every form the key may be stored in: plain, JSON-, HTML-, repr- and URL-escaped, and each form's head.

    A head (12 characters) catches a key cut short by a cap; shorter pieces say nothing.
    """
    forms = {
        key,
        json.dumps(key)[1:-1],
        json.dumps(key, ensure_ascii=True)[1:-1],
        "".join(f"\\u{ord(c):04x}" for c in key),
        html.escape(key),
        repr(key)[1:-1],
        quote(key, safe=""),
        quote(key),
        quote_plus(key),
    }
    return forms | {form[:12] for form in forms}


#: The secret part of the key, apart from its public prefix: any 10 characters of it in a row
#: are a leak too (a redaction that cut the key's start but left its rest would pass the forms).
FRAGMENT = 10


def leaks(text: str, key: str = KEY) -> list[str]:
    """The forms of ``key``, and the pieces of its secret part, found in ``text``."""
    secret = key.removeprefix("mv_")
    pieces = {secret[at : at + FRAGMENT] for at in range(len(secret) - FRAGMENT + 1)}
    return sorted(form for form in key_forms(key) | pieces if form in text)


def readable_number(value: Any) -> bool:
    """Whether a careful client could read ``value`` as a cost: a finite number >= 0, or a string of one."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return False
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


# -- the strategies ------------------------------------------------------------------------------

SPECIALS = st.sampled_from(["\u2028", "\u2029", "\u0085", "\x00", "\u200f", "\u202e", "\r", "\n", "\ufeff", "\x1e"])
TEXT = st.lists(st.one_of(SPECIALS, st.text(max_size=6)), min_size=1, max_size=5).map("".join)
ECHO = st.sampled_from(["plain", "header", "quoted", "u_escaped"]).map(lambda form: ("echo", form))
HUGE = st.sampled_from([70_000, 1 << 20, 4 << 20]).map(lambda size: ("huge", size))
ODD_NUMBERS = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -50.0, 1e308, 0.0, 10**30, 0.001])
ODD_TYPES = st.sampled_from([[], {}, [0.5], {"amount": 0.5}, True, False])
NUMERIC_TEXT = st.sampled_from(["0.5", "1e3", "-2", "NaN", "inf", "0"])
NON_NUMERIC = st.sampled_from(["0.50 USD", "", "about 1", "0,5"])
DROP = st.just(("drop",))
NULL = st.just(("set", None))


def _set(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Mutation]:
    return values.map(lambda value: ("set", value))


ANY_VALUE = st.one_of(
    DROP, NULL, _set(ODD_TYPES), _set(ODD_NUMBERS), _set(NUMERIC_TEXT), _set(NON_NUMERIC), _set(TEXT), ECHO, HUGE
)
# Anything but a readable number other than the truth (see the module's docstring).
COST_ACTUAL = st.one_of(
    DROP,
    NULL,
    st.sampled_from([("truth", "number"), ("truth", "string")]),
    _set(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -0.5, [], {}, True, False, "0.50 USD", "NaN", "-1"])),
    _set(TEXT.filter(lambda text: not readable_number(text))),
    ECHO,
)
TEXTUAL = st.one_of(DROP, NULL, _set(TEXT), ECHO, _set(ODD_TYPES), HUGE)


def _rewrite(fields: dict[str, st.SearchStrategy[Mutation]]) -> st.SearchStrategy[Rewrite]:
    return st.fixed_dictionaries({}, optional=fields)


_TASK_FIELDS: dict[str, st.SearchStrategy[Mutation]] = {
    "cost_estimate": ANY_VALUE,
    "cost_actual": COST_ACTUAL,
    "error": st.one_of(TEXTUAL, TEXTUAL.map(lambda inner: ("wrap", inner))),
    "request_id": TEXTUAL,
    "model": ANY_VALUE,
    "created_at": ANY_VALUE,
    "output.first": st.one_of(_set(TEXT), ECHO, HUGE),
    "+extra": st.one_of(_set(TEXT), ECHO, HUGE, _set(ODD_NUMBERS)),
}
# What a client must read to go on at all: garbled only now and then, never for good.
_ESSENTIAL = {"task_id": ANY_VALUE, "status": ANY_VALUE, "output": ANY_VALUE}
_EVENT_FIELDS: dict[str, st.SearchStrategy[Mutation]] = {
    "events.message": st.one_of(_set(TEXT), ECHO, HUGE, NULL),
    "+extra": st.one_of(ECHO, HUGE),
}


def route_plans() -> st.SearchStrategy[dict[str, RoutePlan]]:
    task = st.builds(
        RoutePlan,
        transient=st.lists(_rewrite({**_TASK_FIELDS, **_ESSENTIAL}), max_size=2),
        persistent=_rewrite(_TASK_FIELDS),
    )
    events = st.builds(
        RoutePlan,
        transient=st.lists(_rewrite({**_EVENT_FIELDS, "events": ANY_VALUE}), max_size=1),
        persistent=_rewrite(_EVENT_FIELDS),
    )
    return st.fixed_dictionaries({}, optional={"create": task, "get": task, "events": events})


def plans(items: int) -> st.SearchStrategy[Plan]:
    return st.dictionaries(st.integers(0, items - 1), route_plans(), max_size=items)


# -- the middleware ------------------------------------------------------------------------------


class HostileAnswers:
    """Rewrites the emulator's API answers by :attr:`plan` (set it between runs; counters restart)."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state
        self._plan: Plan = {}
        self._answers: Counter[tuple[int, str]] = Counter()
        #: Rewrites that raised (a bug of the plan or of this module).
        self.failures: list[str] = []
        self._lock = threading.Lock()

    @property
    def plan(self) -> Plan:
        return self._plan

    @plan.setter
    def plan(self, plan: Plan) -> None:
        with self._lock:
            self._plan, self._answers = plan, Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        request: list[Message] = []
        if route == "create":
            while not request or request[-1].get("more_body", False):
                request.append(await receive())

        async def replay() -> Message:
            return request.pop(0) if request else await receive()

        sent: list[Message] = []

        async def keep(message: Message) -> None:
            sent.append(message)

        await self.app(scope, replay, keep)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        if 200 <= start["status"] < 300:
            try:
                body = self._rewritten(route, body)
            except Exception as exc:  # the harness's own bug: a test must fail on it, not retry past it
                self.failures.append(repr(exc))
                raise
        headers = [(name, value) for name, value in start["headers"] if name.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _rewritten(self, route: str, raw: bytes) -> bytes:
        try:
            body = json.loads(raw)
        except ValueError:
            return raw
        task = self.state.tasks.get(str(body.get("task_id"))) if isinstance(body, dict) else None
        found = MARKER.search(str(task.input.get("prompt", ""))) if task is not None else None
        if task is None or found is None:
            return raw
        item = int(found.group(1))
        with self._lock:
            route_plan = self._plan.get(item, {}).get(route)
            if route_plan is None:
                return raw
            answer = self._answers[item, route]
            self._answers[item, route] += 1
        rewrite = route_plan.transient[answer] if answer < len(route_plan.transient) else route_plan.persistent
        for path, mutation in rewrite.items():
            _apply(body, path, mutation, task.cost)
        text = json.dumps(body, ensure_ascii=False, allow_nan=True)
        return text.replace(_U_ESCAPED, "".join(f"\\u{ord(c):04x}" for c in KEY)).encode()


def _route(scope: Scope) -> str | None:
    if scope["type"] != "http":
        return None
    path, method = scope["path"], scope["method"]
    if method == "POST" and path == TASKS:
        return "create"
    if method == "GET" and path.startswith(TASKS + "/"):
        return "events" if path.endswith("/events") else "get"
    return None


def _value(mutation: Mutation, truth: float) -> Any:
    kind = mutation[0]
    if kind == "set":
        return mutation[1]
    if kind == "truth":
        return truth if mutation[1] == "number" else repr(truth)
    if kind == "huge":
        return "\u2028x" * (mutation[1] // 2)
    if kind == "wrap":
        inner = {} if mutation[1][0] == "drop" else {"message": _value(mutation[1], truth)}
        return {"code": "generation_failed", **inner}
    form = mutation[1]  # an echo of the request's key, as a careless server or gateway writes it
    echoed = {
        "plain": KEY,
        "header": f"Authorization: Bearer {KEY}",
        "quoted": quote(KEY, safe=""),
        "u_escaped": _U_ESCAPED,
    }[form]
    return f"upstream refused the request: {echoed} (retry later)"


def _apply(body: Any, path: str, mutation: Mutation, truth: float) -> None:
    if not isinstance(body, dict):
        return
    if path == "+extra":
        body["x_\u2028extra"] = _value(mutation, truth)
    elif path == "output.first":
        output = body.get("output")
        media = (
            next((v for v in output.values() if isinstance(v, list) and v), None) if isinstance(output, dict) else None
        )
        if media is not None and isinstance(media[0], dict):
            media[0]["x_extra"] = _value(mutation, truth)
    elif path == "events.message":
        events = body.get("events")  # an earlier rewrite of this answer may have made it anything
        for event in events if isinstance(events, list) else []:
            if isinstance(event, dict):
                event["message"] = _value(mutation, truth)
    elif mutation[0] == "drop":
        body.pop(path, None)
    else:
        body[path] = _value(mutation, truth)


# -- the server ------------------------------------------------------------------------------------


class HostileServer:
    """The emulator behind :class:`HostileAnswers`, on 127.0.0.1."""

    def __init__(self, config: EmulatorConfig, clock: Any = time.time) -> None:
        self.state = EmulatorState(dataclasses.replace(config, api_keys=(KEY,)), clock=clock)
        self.answers = HostileAnswers(create_app(self.state), self.state)
        self.base_url = ""

    def connection(self, **extra: Any) -> str:
        """An ``AIRFLOW_CONN_<ID>`` value (JSON) pointing here, with the connection's extras."""
        return json.dumps({"conn_type": "mindvideo", "host": self.base_url, "password": KEY, "extra": extra})


@contextmanager
def hostile_server(config: EmulatorConfig) -> Iterator[HostileServer]:
    import uvicorn

    server = HostileServer(config)
    uv = uvicorn.Server(uvicorn.Config(server.answers, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=uv.run, name="hostile-mindvideo", daemon=True)
    thread.start()
    while not uv.started:  # a start-up failure ends the thread: fail rather than wait for ever
        if not thread.is_alive():
            raise RuntimeError("the hostile server did not start")
        time.sleep(0.01)
    server.base_url = f"http://127.0.0.1:{uv.servers[0].sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        uv.should_exit = True
        thread.join(timeout=30)

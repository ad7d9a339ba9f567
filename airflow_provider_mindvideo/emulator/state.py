"""The emulator's state: tasks, idempotency, charges, scripted outcomes and faults. No I/O.

Time is read from an injectable clock and task progress is computed when a task is looked at
(queued -> processing -> terminal after configured durations), so no background work runs.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_mindvideo.client.catalog import input_problems, known_models, unknown_model_problem

DEFAULT_API_KEY = "mv_test_emulator"
#: What a task of an ``extra_models`` model costs (nothing documents newer models' prices).
UNKNOWN_MODEL_COST = 0.01

Route = Literal["create", "get", "events", "files", "any"]
FaultKind = Literal[
    "status", "drop", "delay", "trickle", "malformed_json", "truncated", "html", "missing_fields", "unknown_status"
]
Outcome = Literal["succeeded", "failed", "cancelled", "never", "no_output"]


@dataclass
class Fault:
    """A fault served instead of (or around) the real answer, for the next ``times`` matching requests.

    ``route="any"`` means the API routes; output file downloads (``files``) only see faults
    aimed at them (kinds ``status``, ``html`` and ``delay``).

    kinds:
      - ``status``: answer ``status`` (e.g. 429, 503) with a JSON error, and ``retry_after`` if set.
      - ``html``: answer ``status`` (default 502) with an HTML page, as a proxy would.
      - ``drop``: close the connection mid-response. On ``create`` the task *is* created first:
        the client never learns it was (the lost-response case).
      - ``delay``: answer ``seconds`` late, after the work is done (slow server, read timeouts;
        on ``create`` the task exists while the client still waits).
      - ``trickle``: the real answer, its body sent one byte every ``seconds`` (default 0.5): a
        server that never trips a per-read timeout. On ``create`` the task exists at once.
      - ``malformed_json``: a 200 whose body is not JSON.
      - ``truncated``: a complete 200 whose JSON body stops halfway (a proxy's cut-off buffer).
      - ``missing_fields``: a 200 JSON body without ``task_id`` and ``status``.
      - ``unknown_status``: the real task, with a status value the API may add one day.
    """

    kind: FaultKind
    route: Route = "any"
    times: int = 1
    #: Let this many matching requests through first (e.g. a sensor's first look, then an outage).
    after: int = 0
    status: int | None = None
    retry_after: str | None = None
    seconds: float = 0.0

    def matches(self, route: str) -> bool:
        return self.times > 0 and (self.route == route or (self.route == "any" and route != "files"))


@dataclass
class Script:
    """How tasks whose prompt contains ``match`` end (``match=""`` applies to every task).

    ``times`` limits it to that many tasks (then it is used up); durations override the
    emulator's own for these tasks. ``output_bytes`` pads each output file to that size (served
    in chunks), to test downloads of large videos.
    """

    match: str
    outcome: Outcome
    error: str = "The model could not generate this request"
    times: int | None = None
    queued_seconds: float | None = None
    processing_seconds: float | None = None
    output_bytes: int | None = None

    def applies_to(self, prompt: str) -> bool:
        return self.match in prompt and (self.times is None or self.times > 0)


@dataclass
class EmulatedTask:
    task_id: str
    request_id: str
    api_key: str = field(repr=False)
    model: str
    input: dict[str, Any] = field(repr=False)
    kind: str
    created_at: float
    queued_seconds: float
    processing_seconds: float
    outcome: Outcome
    error: str
    cost: float
    output_bytes: int | None = None

    @property
    def terminal_at(self) -> float | None:
        """When the task becomes terminal; None when it never finishes."""
        if self.outcome == "never":
            return None
        return self.created_at + self.queued_seconds + self.processing_seconds

    def status_at(self, now: float) -> str:
        if now < self.created_at + self.queued_seconds:
            return "queued"
        terminal_at = self.terminal_at
        if terminal_at is None or now < terminal_at:
            return "processing"
        return "succeeded" if self.outcome in ("succeeded", "no_output") else self.outcome


@dataclass
class EmulatorConfig:
    """Durations are per kind of model: ``image`` and ``video``.

    ``rate_limit``: API requests per second per key; beyond it the answer is 429 with
    ``Retry-After``, as a real account's limit would be (MindVideo documents no figure).

    ``extra_models``: models the emulator accepts beyond the provider's catalogue, slug to kind
    (``"image"`` or ``"video"``), for DAGs that use a newer model with ``allow_unknown_model=True``.
    Any other unknown slug is refused with a 422, as the API refuses a typo, and not charged.

    ``prices``: what a task of a model really costs, slug to amount, where it differs from the
    catalogue's example price (e.g. ``{"gpt-image-2": 0.5}``): charged, and reported as the
    task's ``cost_estimate`` and ``cost_actual``, to test ``max_cost`` against a price the
    provider has not seen.
    """

    api_keys: tuple[str, ...] = (DEFAULT_API_KEY,)
    rate_limit: float | None = None
    extra_models: Mapping[str, str] = field(default_factory=dict)
    prices: Mapping[str, float] = field(default_factory=dict)
    queued_seconds: float = 0.2
    processing_seconds: Mapping[str, float] = field(default_factory=lambda: {"image": 0.8, "video": 3.0})


class EmulatorState:
    """Everything the emulator knows; every method is safe to call from any thread."""

    def __init__(self, config: EmulatorConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or EmulatorConfig()
        self.clock = clock
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget all tasks, charges, counters, faults and scripts (configuration stays)."""
        with self._lock:
            self.tasks: dict[str, EmulatedTask] = {}
            self._by_idempotency_key: dict[tuple[str, str], tuple[str, str]] = {}
            self.charges: list[tuple[str, float]] = []
            self.faults: list[Fault] = []
            self.scripts: list[Script] = []
            self.in_flight = 0
            self.in_flight_creates = 0
            self.reset_counters()

    def reset_counters(self) -> None:
        """Zero the request statistics (requests, connections, peaks), keeping tasks and charges."""
        with self._lock:
            self.requests: Counter[str] = Counter()
            #: Create requests that reached the API's rules, per Idempotency-Key: 1 is the create,
            #: each one more a replay (free, but a request the client could perhaps have spared).
            self.creates_by_key: Counter[str] = Counter()
            self.connections: set[tuple[str, int]] = set()
            self.max_in_flight = self.in_flight
            self.max_in_flight_creates = self.in_flight_creates
            self._recent: dict[str, deque[float]] = {}
            self.peak_requests_per_second = 0
            self.rate_limited = 0

    # -- configuration by tests and users ---------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def add_script(self, script: Script) -> None:
        with self._lock:
            self.scripts.append(script)

    def take_fault(self, route: str) -> Fault | None:
        """The first pending fault for this route, used up by one."""
        with self._lock:
            for fault in self.faults:
                if fault.matches(route):
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.times -= 1
                    return fault
            return None

    def record_request(self, route: str, client: tuple[str, int] | None) -> None:
        with self._lock:
            self.requests[route] += 1
            if client:
                self.connections.add(client)

    def enter(self, route: str | None = None) -> None:
        """An API request has arrived; ``route="create"`` also counts it among the creates in flight."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if route == "create":
                self.in_flight_creates += 1
                self.max_in_flight_creates = max(self.max_in_flight_creates, self.in_flight_creates)

    def leave(self, route: str | None = None) -> None:
        with self._lock:
            self.in_flight -= 1
            if route == "create":
                self.in_flight_creates -= 1

    def admit(self, api_key: str) -> float | None:
        """Count a request under the key's rate limit: None if admitted, else seconds to wait."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent.setdefault(api_key, deque())
            while recent and recent[0] <= now - 1.0:
                recent.popleft()
            if self.config.rate_limit is not None and len(recent) >= self.config.rate_limit:
                self.rate_limited += 1
                return max(0.1, recent[0] + 1.0 - now)
            recent.append(now)
            self.peak_requests_per_second = max(self.peak_requests_per_second, len(recent))
            return None

    # -- the API's rules ----------------------------------------------------------------------

    def is_valid_key(self, api_key: str | None) -> bool:
        return api_key is not None and api_key in self.config.api_keys

    def create_task(
        self, api_key: str, model: str, input: dict[str, Any], idempotency_key: str | None
    ) -> tuple[EmulatedTask | None, str | None, bool]:
        """Create (or replay) a task: returns (task, error, replayed).

        The error is ``"conflict"`` for a reused key with another payload, or the validation
        problems in words.
        """
        unknown = None if model in self.config.extra_models else unknown_model_problem(model)
        if unknown is not None:
            return None, unknown, False
        problems = input_problems(model, input)
        if problems:
            return None, "; ".join(problems), False
        fingerprint = hashlib.sha256(
            json.dumps([model, input], sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()
        with self._lock:
            if idempotency_key:
                self.creates_by_key[idempotency_key] += 1
                seen = self._by_idempotency_key.get((api_key, idempotency_key))
                if seen is not None:
                    if seen[0] != fingerprint:
                        return None, "conflict", False
                    return self.tasks[seen[1]], None, True
            task = self._new_task(api_key, model, input)
            self.tasks[task.task_id] = task
            self.charges.append((task.task_id, task.cost))
            if idempotency_key:
                self._by_idempotency_key[(api_key, idempotency_key)] = (fingerprint, task.task_id)
            return task, None, False

    def _new_task(self, api_key: str, model: str, input: dict[str, Any]) -> EmulatedTask:
        spec = known_models().get(model)
        kind = spec.kind if spec else self.config.extra_models[model]
        prompt = str(input.get("prompt", ""))
        script = next((s for s in reversed(self.scripts) if s.applies_to(prompt)), None)
        queued, processing = self.config.queued_seconds, self.config.processing_seconds.get(kind, 1.0)
        if script is not None:
            if script.times is not None:
                script.times -= 1
            queued = queued if script.queued_seconds is None else script.queued_seconds
            processing = processing if script.processing_seconds is None else script.processing_seconds
        return EmulatedTask(
            task_id=f"task_{uuid.uuid4().hex[:20]}",
            request_id=f"req_{uuid.uuid4().hex[:16]}",
            api_key=api_key,
            model=model,
            input=input,
            kind=kind,
            created_at=self.clock(),
            queued_seconds=queued,
            processing_seconds=processing,
            outcome=script.outcome if script else "succeeded",
            error=script.error if script else "",
            cost=self.config.prices.get(model, spec.cost_estimate if spec else UNKNOWN_MODEL_COST),
            output_bytes=script.output_bytes if script else None,
        )

    def release(self, match: str) -> int:
        """Let every unfinished task whose prompt contains ``match`` succeed now; returns how many.

        For tasks held with a ``never`` script (or long durations) while a test does something
        to its clients, e.g. restarts the triggerers under thousands of waits.
        """
        now = self.clock()
        released = 0
        with self._lock:
            for task in self.tasks.values():
                terminal_at = task.terminal_at
                if match not in str(task.input.get("prompt", "")) or (terminal_at is not None and terminal_at <= now):
                    continue
                task.outcome = "succeeded" if task.outcome == "never" else task.outcome
                task.queued_seconds = min(task.queued_seconds, max(0.0, now - task.created_at))
                task.processing_seconds = max(0.0, now - task.created_at - task.queued_seconds)
                released += 1
        return released

    def find_task(self, api_key: str, task_id: str) -> EmulatedTask | None:
        """The task, if it exists and belongs to this key (tasks are invisible to other keys)."""
        with self._lock:
            task = self.tasks.get(task_id)
            return task if task is not None and task.api_key == api_key else None

    # -- inspection ----------------------------------------------------------------------------

    @property
    def charged_tasks(self) -> int:
        return len(self.charges)

    @property
    def total_charged(self) -> float:
        return round(sum(cost for _, cost in self.charges), 6)

    def generating(self, now: float) -> tuple[int, int]:
        """Remote tasks created and not yet terminal: (now, the most at any one moment so far).

        What an account-wide cap bounds, whoever sent the creates. Computed from the tasks'
        own times, so it holds however seldom (or never) anyone polls them.
        """
        with self._lock:
            spans = [(t.created_at, t.terminal_at) for t in self.tasks.values()]
        current = sum(1 for start, end in spans if start <= now and (end is None or now < end))
        # A task ending at the moment another starts does not overlap it: ends sort first.
        moments = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans if end is not None])
        peak = running = 0
        for _, step in moments:
            running += step
            peak = max(peak, running)
        return current, peak

    def snapshot(self) -> dict[str, Any]:
        """A JSON-safe view for tests and the ``/_emulator/state`` endpoint (no API keys)."""
        now = self.clock()
        generating, max_generating = self.generating(now)
        with self._lock:
            return {
                "tasks": [
                    {
                        "task_id": t.task_id,
                        "model": t.model,
                        "kind": t.kind,
                        "status": t.status_at(now),
                        "prompt": t.input.get("prompt"),
                        "created_at": t.created_at,
                        "terminal_at": t.terminal_at,
                        "cost": t.cost,
                    }
                    for t in self.tasks.values()
                ],
                "charged_tasks": self.charged_tasks,
                "total_charged": self.total_charged,
                "requests": dict(self.requests),
                # How many keys were sent once, twice, ...: {"1": 998, "2": 2} (small at any size).
                "creates_per_key": {str(n): keys for n, keys in sorted(Counter(self.creates_by_key.values()).items())},
                "connections": len(self.connections),
                "pending_faults": sum(f.times for f in self.faults),
                "max_in_flight": self.max_in_flight,
                "in_flight_creates": self.in_flight_creates,
                "max_in_flight_creates": self.max_in_flight_creates,
                "generating": generating,
                "max_generating": max_generating,
                "peak_requests_per_second": self.peak_requests_per_second,
                "rate_limited": self.rate_limited,
            }

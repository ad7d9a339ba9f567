"""MindVideoBatchTrigger: create and wait for a whole batch of generations in the triggerer.

Creating 10,000 tasks under an account's rate limit takes many minutes, and waiting for them
longer: both happen here, in the triggerer's event loop, without a worker slot. The trigger's
kwargs name where the work list is (object storage: the metadata database never carries the
batch); it writes one manifest row per item to ``result_path`` and fires one small event.

Per item, the walk over key generations is the single-task operators' (the same pure step,
:func:`airflow_provider_mindvideo.submission.next_step`): a try creates at most one task per
item, and a restarted triggerer (same try) replays the item's keys, free, and re-attaches to
the tasks already created. Every create is reserved against ``max_cost`` first
(:mod:`airflow_provider_mindvideo.budget`) and written down (the *intents*, small files in
``<manifest>.intents/``) before it is sent, so that a later try or a restarted trigger counts
every create that may have charged -- from the manifest when its answer came, from the intents
when it did not -- before it creates anything itself. The final manifest records them all, and
the intents are then removed. A restarted trigger also knows which creates were its own try's:
a task this try created that failed ends the item for this try, as on the worker.

Concurrency: at most ``max_active`` items are between their first create and their end at any
time, on top of the connection's own ``max_concurrency`` / ``max_requests_per_second``. A 429
pauses the whole batch for the wait the server asked for, not only the request that met it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_mindvideo import DEFAULT_CONN_ID
from airflow_provider_mindvideo.batch import (
    ERROR,
    FAILED,
    OVER_BUDGET,
    PENDING,
    SUCCEEDED,
    TIMED_OUT,
    BatchSummary,
    ItemResult,
    WorkItem,
    dump_manifest,
    known_tasks,
    load_manifest,
    load_work_list,
    progress_line,
    summarize,
)
from airflow_provider_mindvideo.budget import Budget
from airflow_provider_mindvideo.cancellation import log_still_running
from airflow_provider_mindvideo.errors import (
    AuthenticationError,
    ConnectionNotFoundError,
    InsecureConnectionError,
    MindVideoError,
    TlsVerificationError,
)
from airflow_provider_mindvideo.models import MindVideoTask, TaskStatus
from airflow_provider_mindvideo.polling import check_poll_settings, next_poll_delay
from airflow_provider_mindvideo.protocol import RetryPolicy
from airflow_provider_mindvideo.submission import Step, exhausted_message, generations_to_walk, next_step

if TYPE_CHECKING:
    from airflow_provider_mindvideo.hooks import MindVideoHook

#: ``event["status"]`` of a batch that ran to its end (whatever became of its items).
DONE = "done"
#: ``event["status"]`` of a batch stopped as a whole (bad key, no connection, unreadable work list).
ERROR_EVENT = "error"
# Errors about the account or the connection, not an item: every other item would meet them too.
_STOPS_THE_BATCH = (AuthenticationError, ConnectionNotFoundError, InsecureConnectionError, TlsVerificationError)
# How many still-running remote tasks a log line names (a batch may have thousands).
_NAMED_IN_LOGS = 20
# A 429 without Retry-After still pauses the batch this long.
_DEFAULT_PAUSE = 1.0


def storage_path(url: str, conn_id: str | None) -> Any:
    """The ``ObjectStoragePath`` of ``url`` (imported here: the triggerer imports this module at start)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url, conn_id=conn_id)


def read_work_list(url: str, conn_id: str | None) -> list[WorkItem]:
    from airflow_provider_mindvideo import storage

    text = storage.read_text(storage_path(url, conn_id))
    if text is None:
        raise MindVideoError(f"The batch's work list {url} is gone; the next try writes it again")
    return load_work_list(text)


def read_manifest(url: str, conn_id: str | None) -> list[ItemResult]:
    """The manifest an earlier try (or an earlier run of this try) left, or none."""
    from airflow_provider_mindvideo import storage

    text = storage.read_text(storage_path(url, conn_id))
    return load_manifest(text) if text else []


def write_manifest(url: str, conn_id: str | None, text: str) -> None:
    from airflow_provider_mindvideo import storage

    storage.replace_text(storage_path(url, conn_id), text)


def intents_folder(result_path: str) -> str:
    """Where a batch writes down its creates before sending them: beside the manifest."""
    stem = result_path[: -len(".jsonl")] if result_path.endswith(".jsonl") else result_path
    return f"{stem}.intents"


def read_intents(folder_url: str, conn_id: str | None) -> list[dict[str, Any]]:
    """Every create any run of this task instance wrote down and no final manifest has settled yet."""
    from airflow_provider_mindvideo import storage

    folder = storage_path(folder_url, conn_id)
    if not storage.exists(folder):
        return []
    intents: list[dict[str, Any]] = []
    for name in sorted(folder.fs.ls(folder.path, detail=False)):
        text = storage.read_text(folder / str(name).rsplit("/", 1)[-1])
        intents.extend(json.loads(line) for line in (text or "").splitlines() if line.strip())
    return intents


def write_intents(folder_url: str, conn_id: str | None, name: str, intents: list[dict[str, Any]]) -> None:
    from airflow_provider_mindvideo import storage

    text = "".join(json.dumps(intent, separators=(",", ":")) + "\n" for intent in intents)
    storage.replace_text(storage_path(folder_url, conn_id) / name, text)


def clear_intents(folder_url: str, conn_id: str | None) -> None:
    """Once the final manifest records every create (answered or not), the intents are redundant."""
    folder = storage_path(folder_url, conn_id)
    if folder.fs.exists(folder.path):
        folder.fs.rm(folder.path, recursive=True)


class _Intents:
    """Creates written down before they are sent, a group at a time (one small file per group).

    A create may charge before its answer arrives, and a triggerer may die at any moment: a
    restarted trigger must count every create the dead one may have sent, or it could spend
    past ``max_cost`` by creating other items first. So each reservation is written down, and
    its create waits until the group it joined is stored.
    """

    def __init__(self, folder: str, conn_id: str | None) -> None:
        self.folder = folder
        self.conn_id = conn_id
        self._run = uuid.uuid4().hex[:12]
        self._groups = itertools.count()
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, intent: dict[str, Any]) -> None:
        """Returns once ``intent`` is stored."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((intent, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            name = f"{self._run}-{next(self._groups):06d}.jsonl"
            try:
                await asyncio.to_thread(write_intents, self.folder, self.conn_id, name, [i for i, _ in group])
            except Exception as exc:  # storage's errors are many (OSError, botocore's, ...): nothing is sent
                problem = MindVideoError(f"Could not write down the batch's creates in {self.folder}: {exc!r}")
                for _, done in group:
                    if not done.done():
                        done.set_exception(problem)
                continue
            for _, done in group:
                if not done.done():
                    done.set_result(None)


@dataclasses.dataclass(frozen=True)
class _BatchRetryPolicy(RetryPolicy):
    """The connection's retry policy, telling the batch of every 429 so that all its requests pause."""

    on_rate_limited: Callable[[float], None] | None = dataclasses.field(default=None, compare=False, repr=False)

    def retry_delay(self, attempt: int, problem: MindVideoError, elapsed: float, rng: Any) -> float | None:
        delay = super().retry_delay(attempt, problem, elapsed, rng)
        if problem.http_status == 429 and self.on_rate_limited is not None:
            self.on_rate_limited(problem.retry_after if problem.retry_after is not None else (delay or _DEFAULT_PAUSE))
        return delay


class _Pause:
    """A batch-wide pause: requests wait here while the server has asked everyone to slow down."""

    def __init__(self) -> None:
        self.until = 0.0
        self.pauses = 0

    def pause(self, seconds: float) -> None:
        until = time.monotonic() + max(0.0, seconds)
        if until > self.until:
            self.until = until
            self.pauses += 1

    async def wait(self) -> None:
        while (left := self.until - time.monotonic()) > 0:
            await asyncio.sleep(left)


class _Stop(Exception):
    """An error that ends the whole batch (see ``_STOPS_THE_BATCH``)."""

    def __init__(self, error: MindVideoError) -> None:
        super().__init__(str(error))
        self.error = error


class MindVideoBatchTrigger(BaseTrigger):
    """Create and wait for every item of a batch, then fire one event carrying the summary.

    The event's payload: ``status`` (``done`` or ``error``), ``summary`` (the
    :class:`~airflow_provider_mindvideo.batch.BatchSummary` as a dict, with ``done``) and
    ``message``. The manifest (one JSON row per item) is at ``result_path``.

    :param work_list_path: The work list (JSONL of :class:`~airflow_provider_mindvideo.batch.WorkItem`),
        an ``ObjectStoragePath`` URL the operator wrote before deferring.
    :param result_path: Where to write the manifest (an ``ObjectStoragePath`` URL).
    :param storage_conn_id: The storage connection for both paths, if they need one.
    :param mindvideo_conn_id: The MindVideo connection.
    :param try_number: The Airflow try this batch belongs to: it bounds the key generations walked.
    :param max_generations: The most remote tasks one item may ever cost.
    :param max_active: The most items between their first create and their end at once.
    :param max_cost: The most the task instance may spend, all its tries together; None: no ceiling.
    :param poll_interval: Seconds before an item's first re-check; intervals grow with its wait.
    :param max_poll_interval: The longest interval between two checks of one item.
    :param started_at: When the batch began (epoch seconds), for the progress line.
    :param deadline: When to stop (epoch seconds): items not finished by then are ``timed_out``.
    :param progress_interval: Seconds between two progress lines in the log.
    :param allow_unknown_model: Send models the catalogue does not know.
    """

    def __init__(
        self,
        work_list_path: str,
        result_path: str,
        *,
        storage_conn_id: str | None = None,
        mindvideo_conn_id: str = DEFAULT_CONN_ID,
        try_number: int = 1,
        max_generations: int = 1,
        max_active: int = 100,
        max_cost: float | None = None,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        started_at: float | None = None,
        deadline: float | None = None,
        progress_interval: float = 60.0,
        allow_unknown_model: bool = False,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        check_poll_settings(poll_interval, max_poll_interval)
        if max_active < 1:
            raise ValueError(f"max_active = {max_active!r}: must be >= 1")
        self.work_list_path = work_list_path
        self.result_path = result_path
        self.storage_conn_id = storage_conn_id
        self.mindvideo_conn_id = mindvideo_conn_id
        self.try_number = try_number
        self.max_generations = max_generations
        self.max_active = max_active
        self.max_cost = max_cost
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.started_at = time.time() if started_at is None else started_at
        self.deadline = deadline
        self.progress_interval = progress_interval
        self.allow_unknown_model = allow_unknown_model

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # Stored in the metadata database: paths, ids and numbers; the work list stays in storage.
        return (
            "airflow_provider_mindvideo.batch_trigger.MindVideoBatchTrigger",
            {
                "work_list_path": self.work_list_path,
                "result_path": self.result_path,
                "storage_conn_id": self.storage_conn_id,
                "mindvideo_conn_id": self.mindvideo_conn_id,
                "try_number": self.try_number,
                "max_generations": self.max_generations,
                "max_active": self.max_active,
                "max_cost": self.max_cost,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "started_at": self.started_at,
                "deadline": self.deadline,
                "progress_interval": self.progress_interval,
                "allow_unknown_model": self.allow_unknown_model,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_mindvideo.hooks import MindVideoHook

        hook = MindVideoHook(self.mindvideo_conn_id, shared_client=True)
        try:
            try:
                # Blocking storage I/O goes through a thread: the loop serves every other trigger meanwhile.
                items = await asyncio.to_thread(read_work_list, self.work_list_path, self.storage_conn_id)
                batch = self._batch = _Batch(self, hook, items)
                summary = await batch.run()
            except _Stop as stop:
                yield self._error(stop.error)
                return
            except MindVideoError as exc:
                yield self._error(exc)
                return
            yield TriggerEvent({"status": DONE, "summary": summary.to_xcom(), "message": batch.last_progress})
        finally:
            await hook.aclose()

    async def on_kill(self) -> None:
        """The Airflow task was cleared or marked while the batch ran (Airflow 3.3+ calls this).

        MindVideo has no cancel endpoint: the remote tasks already created keep running and are
        charged. Say which (the first few, and how many); clearing the task re-attaches to them.
        """
        batch: _Batch | None = getattr(self, "_batch", None)
        running = [row.task_id for row in batch.rows if row.task_id and row.status == PENDING] if batch else []
        shown = running[:_NAMED_IN_LOGS]
        if len(running) > len(shown):
            shown.append(f"and {len(running) - len(shown)} more")
        log_still_running(self.log, shown, "The batch was stopped (the Airflow task was cleared, or marked)")

    @staticmethod
    def _error(error: MindVideoError) -> TriggerEvent:
        return TriggerEvent(
            {"status": ERROR_EVENT, "summary": None, "message": str(error), "error_type": type(error).__name__}
        )


class _Batch:
    """One run of a batch trigger: the items, the budget, the rows, and the coroutines working them."""

    def __init__(self, trigger: MindVideoBatchTrigger, hook: MindVideoHook, items: list[WorkItem]) -> None:
        self.trigger = trigger
        self.hook = hook
        self.items = items
        self.log = trigger.log
        self.budget = Budget(trigger.max_cost)
        self.rows = [ItemResult.for_item(item) for item in items]
        self.finished: dict[str, int] = {}
        self.in_flight = 0
        self.pause = _Pause()
        self.last_progress = ""
        #: Remote tasks an earlier manifest records, by key: their cost is spent already.
        self.known: dict[str, dict[str, Any]] = {}
        self._earlier_files: dict[str, list[dict[str, Any]]] = {}
        self._checkpoint: asyncio.Future[None] | None = None
        self.intents = _Intents(intents_folder(trigger.result_path), trigger.storage_conn_id)

    def _adopt_earlier(self, earlier: list[ItemResult], intents: list[dict[str, Any]]) -> None:
        """Count what earlier tries (or earlier runs of this one) created or may have created, before creating anything.

        Without this, a retry's or a restarted trigger's new creates could take the budget ahead
        of replays of tasks already paid for, and the ceiling would not hold.
        """
        self.known = known_tasks(earlier)
        for intent in intents:
            self.known.setdefault(intent["idempotency_key"], {**intent, "task_id": None, "cost_estimate": None})
        self._earlier_files = {row.task_id: row.files for row in earlier if row.task_id and row.files}
        by_stem: dict[str, list[dict[str, Any]]] = {}
        for task in self.known.values():
            by_stem.setdefault(task["idempotency_key"].rsplit("-", 1)[0], []).append(task)
        for item, row in zip(self.items, self.rows, strict=True):
            row.tasks = sorted(by_stem.get(item.key_stem, []), key=lambda task: task["generation"])
            for task in row.tasks:
                self.budget.committed += self._cost_of(task, item.model)

    def _cost_of(self, task: dict[str, Any], model: str) -> float:
        for cost in (task.get("cost_estimate"), task.get("held"), self.budget.predict(model)):
            if cost is not None:
                return float(cost)
        return 0.0

    async def run(self) -> BatchSummary:
        settings = await self.hook.asettings()
        self.hook.retry_policy = _BatchRetryPolicy(max_retries=settings.max_retries, on_rate_limited=self.pause.pause)
        self.log.info(
            "MindVideo batch: %d item(s), try %d, at most %d in flight, max_cost %s; manifest %s",
            len(self.items),
            self.trigger.try_number,
            self.trigger.max_active,
            self.trigger.max_cost,
            self.trigger.result_path,
        )
        earlier = await asyncio.to_thread(read_manifest, self.trigger.result_path, self.trigger.storage_conn_id)
        intents = await asyncio.to_thread(read_intents, self.intents.folder, self.trigger.storage_conn_id)
        self._adopt_earlier(earlier, intents)
        queue = iter(self.items)
        reporter = asyncio.create_task(self._report_progress())
        try:
            async with asyncio.TaskGroup() as workers:
                for _ in range(min(self.trigger.max_active, len(self.items))):
                    workers.create_task(self._work(queue))
        except* _Stop as stopped:
            raise stopped.exceptions[0] from None
        finally:
            reporter.cancel()
            if self._checkpoint is not None:
                # A checkpoint's thread runs on when its waiter is cancelled: the final write must come after it.
                await asyncio.wait([self._checkpoint])
        self._log_progress()
        for row in self.rows:
            if row.status == SUCCEEDED and not row.files and row.task_id in self._earlier_files:
                row.files = self._earlier_files[row.task_id]  # stored by an earlier try: kept, not fetched again
        summary = summarize(
            self.rows, self.trigger.result_path, max_cost=self.trigger.max_cost, spent=self.budget.committed
        )
        await self._write_manifest()
        # Every create is in the manifest now, answered or not.
        await asyncio.to_thread(clear_intents, self.intents.folder, self.trigger.storage_conn_id)
        return summary

    async def _write_manifest(self) -> None:
        # Rendered here, in the loop, from rows the loop alone changes; only the writing goes to a thread.
        text = dump_manifest(self.rows)
        await asyncio.to_thread(write_manifest, self.trigger.result_path, self.trigger.storage_conn_id, text)

    async def _work(self, queue: Iterator[WorkItem]) -> None:
        # Items are taken in order, one at a time per worker: at most max_active are in flight.
        for item in queue:
            row = self.rows[item.position]
            self.in_flight += 1
            try:
                await self._item(item, row)
            except _STOPS_THE_BATCH as exc:
                raise _Stop(exc) from None
            except MindVideoError as exc:
                row.status, row.error, row.retryable = ERROR, str(exc), exc.retryable
            finally:
                self.in_flight -= 1
                self.finished[row.status] = self.finished.get(row.status, 0) + 1

    async def _item(self, item: WorkItem, row: ItemResult) -> None:
        if self._past_deadline():
            row.status, row.error, row.retryable = TIMED_OUT, "not created before the batch's timeout", True
            return
        task = await self._walk(item, row)
        if task is not None:
            self._finish(row, await self._wait(task, row))

    async def _walk(self, item: WorkItem, row: ItemResult) -> MindVideoTask | None:
        """The pay-once walk of one item; the task to wait for, or None (the row says why)."""
        trigger = self.trigger
        for generation in generations_to_walk(trigger.try_number, trigger.max_generations):
            key = item.key(generation)
            known = self.known.get(key)
            if known is not None:
                task = await self._create(item, key)  # a replay: its cost is counted already
                if known.get("try_number") == trigger.try_number:
                    # A dead trigger of this same try created it: it is this try's one task for the item.
                    task = task.model_copy(update={"created": True})
                if known.get("task_id") is None:  # its answer had been lost: now its cost is known
                    self.budget.committed += (task.cost_estimate or 0.0) - self._cost_of(known, item.model)
                    known.update(task_id=task.task_id, cost_estimate=task.cost_estimate, held=None)
            else:
                reservation = self.budget.try_reserve(item.model)
                if reservation is None:
                    row.status, row.error, row.retryable = OVER_BUDGET, self.budget.refusal(item.model), False
                    return None
                intent = row.note_task(
                    generation, key, None, None, try_number=trigger.try_number, held=reservation.amount
                )
                self.known[key] = intent
                sent = False
                try:
                    await self.intents.record(intent)
                    sent = True
                    task = await self._create(item, key)
                except MindVideoError as exc:
                    refused = exc.http_status is not None and 400 <= exc.http_status < 500 and exc.http_status != 429
                    if not sent or refused:  # nothing was charged
                        self.budget.release(reservation)
                        row.tasks.remove(intent)
                        del self.known[key]
                    raise
                self.budget.settle(reservation, task.cost_estimate)
                row.note_task(generation, key, task.task_id, task.cost_estimate, try_number=trigger.try_number)
            row.task_id, row.request_id, row.idempotency_key = task.task_id, task.request_id, key
            row.key_generation, row.cost_estimate = generation, task.cost_estimate
            decision = next_step(
                task, generation, try_number=trigger.try_number, max_generations=trigger.max_generations
            )
            if decision.step is Step.USE:
                return task
            if decision.step is not Step.NEXT:
                row.status, row.error = FAILED, decision.reason
                row.retryable = decision.step is Step.RETRY_LATER
                row.cost_actual = task.cost_actual
                return None
        row.status, row.error, row.retryable = FAILED, exhausted_message(trigger.max_generations), False
        return None

    async def _create(self, item: WorkItem, key: str) -> MindVideoTask:
        """Create (or replay) under ``key``; transient trouble is waited out with the same key (it cannot pay twice)."""
        first = True
        while True:
            await self.pause.wait()
            try:
                task = await self.hook.acreate_task(
                    item.model, item.input, idempotency_key=key, allow_unknown_model=self.trigger.allow_unknown_model
                )
            except MindVideoError as exc:
                if not exc.retryable or self._past_deadline():
                    raise
                await self._back_off(exc)
                first = False
                continue
            # An earlier call with this key may have created the task and lost the answer: this
            # one is then a replay (200), yet the task is this try's. Erring this way never pays.
            return task if first else task.model_copy(update={"created": True})

    async def _wait(self, task: MindVideoTask, row: ItemResult) -> MindVideoTask:
        """Poll until the task ends or the batch's deadline passes (then the task as last seen)."""
        started = time.time()
        while not task.is_terminal:
            now = time.time()
            if self._past_deadline(now):
                row.status, row.retryable = TIMED_OUT, True
                row.error = f"MindVideo task {task.task_id} did not finish before the batch's timeout"
                return task
            delay = next_poll_delay(now - started, self.trigger.poll_interval, self.trigger.max_poll_interval)
            if self.trigger.deadline is not None:
                delay = min(delay, max(0.0, self.trigger.deadline - now))
            await asyncio.sleep(delay)
            await self.pause.wait()
            try:
                task = await self.hook.aget_task(task.task_id, within=self._left())
            except MindVideoError as exc:
                if not exc.retryable:
                    raise
                await self._back_off(exc)  # the hook already retried; keep waiting rather than fail over a blip
        return task

    def _finish(self, row: ItemResult, task: MindVideoTask) -> None:
        if row.status == TIMED_OUT:
            return
        row.cost_actual = task.cost_actual
        row.output_urls = task.output_urls
        if task.status is TaskStatus.SUCCEEDED and task.output_urls:
            row.status, row.error, row.retryable = SUCCEEDED, None, False
            return
        row.status = FAILED
        if task.status is TaskStatus.SUCCEEDED:
            # A retry would replay the same succeeded task: it cannot help, and paying again is no retry's call.
            row.error, row.retryable = f"MindVideo task {task.task_id} succeeded but returned no output URLs", False
            return
        generation = row.key_generation or 0
        row.error = f"MindVideo task {task.task_id} {task.status.value}: {task.error_message or 'no reason given'}"
        row.retryable = generation + 1 < self.trigger.max_generations
        if not row.retryable:
            row.error += f"; it was the last of max_generations={self.trigger.max_generations}"

    async def _back_off(self, exc: MindVideoError) -> None:
        """After a call failed for good but retryably: a 429 pauses the whole batch, anything else this item."""
        if exc.http_status == 429:
            self.pause.pause(exc.retry_after if exc.retry_after is not None else _DEFAULT_PAUSE)
        else:
            # 5xx or the network, after the hook's own retries: this item backs off; the others go on.
            await asyncio.sleep(self.trigger.poll_interval)

    def _past_deadline(self, now: float | None = None) -> bool:
        deadline = self.trigger.deadline
        return deadline is not None and (now or time.time()) >= deadline

    def _left(self) -> float | None:
        deadline = self.trigger.deadline
        return None if deadline is None else max(1.0, deadline - time.time())

    async def _report_progress(self) -> None:
        """The progress line, and a checkpoint of the manifest: a restarted triggerer counts what this run created."""
        while True:
            await asyncio.sleep(self.trigger.progress_interval)
            self._log_progress()
            self._checkpoint = asyncio.ensure_future(self._write_manifest())
            await asyncio.shield(self._checkpoint)

    def _log_progress(self) -> None:
        self.last_progress = progress_line(
            total=len(self.items),
            counts=self.finished,
            in_flight=self.in_flight,
            spent=self.budget.committed,
            max_cost=self.trigger.max_cost,
            elapsed=time.time() - self.trigger.started_at,
        )
        self.log.info(self.last_progress)

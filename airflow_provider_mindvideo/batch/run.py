"""One run of a batch in the triggerer: the items worked under ``max_active``, the ceiling and the deadline.

:class:`~airflow_provider_mindvideo.batch.trigger.MindVideoBatchTrigger` is the thin Airflow face
(kwargs, event, ``on_kill``); this is the work it does: per item, the pay-once walk over key
generations (:func:`airflow_provider_mindvideo.client.submission.next_step`), every create reserved
against ``max_cost`` and written down as an intent before it is sent, waits that poll with the
growing interval, a 429 pausing the whole batch, and a manifest written at checkpoints and at
the end. Within the bounds the event loop shares with its other batches
(:mod:`airflow_provider_mindvideo.batch.sharing`): items in flight, requests, saves, and CPU
work a step at a time.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_mindvideo.batch.lease import BatchLease, LeaseLost
from airflow_provider_mindvideo.batch.ledger import BatchBooks, seconds_until
from airflow_provider_mindvideo.batch.plan import (
    DOWNLOAD_FAILED,
    ERROR,
    FAILED,
    OVER_BUDGET,
    PENDING,
    SUCCEEDED,
    TIMED_OUT,
    BatchSummary,
    ItemResult,
    WorkItem,
    known_tasks,
    manifest_chunk,
    progress_line,
    summarize,
)
from airflow_provider_mindvideo.batch.records import (
    Intents,
    clear_intents,
    intents_folder,
    read_earlier_tasks,
    read_intents,
    read_manifest,
    write_earlier_tasks,
    write_manifest,
)
from airflow_provider_mindvideo.batch.saving import Saver
from airflow_provider_mindvideo.batch.sharing import WORK_PER_STEP, clamp_active, in_steps, loop_share, stepped_aside
from airflow_provider_mindvideo.client import limits
from airflow_provider_mindvideo.client.durations import RECENT, observed_duration
from airflow_provider_mindvideo.client.errors import (
    AuthenticationError,
    ConnectionNotFoundError,
    InsecureConnectionError,
    MindVideoError,
    TlsVerificationError,
)
from airflow_provider_mindvideo.client.models import MindVideoTask, TaskStatus
from airflow_provider_mindvideo.client.polling import next_poll_delay
from airflow_provider_mindvideo.client.protocol import RetryPolicy
from airflow_provider_mindvideo.client.submission import Step, exhausted_message, generations_to_walk, next_step
from airflow_provider_mindvideo.spend.ceiling import Budget, Charge, readable_cost
from airflow_provider_mindvideo.spend.location import LedgerMisconfiguredError, LedgerUnavailableError
from airflow_provider_mindvideo.spend.records import BudgetRefusal

if TYPE_CHECKING:
    from airflow_provider_mindvideo.hooks import MindVideoHook

#: ``event["status"]`` of a batch that ran to its end (whatever became of its items).
DONE = "done"
#: ``event["status"]`` of a batch stopped as a whole (bad key, no connection, unreadable work list).
ERROR_EVENT = "error"


class BatchRunSettings(Protocol):
    """What a run reads from its trigger (a ``MindVideoBatchTrigger``): the trigger uses the run, not the reverse."""

    result_path: str
    storage_conn_id: str | None
    try_number: int
    max_generations: int
    max_active: int
    max_cost: float | None
    poll_interval: float
    max_poll_interval: float
    started_at: float
    deadline: float | None
    progress_interval: float
    allow_unknown_model: bool
    download_to: str | None
    download_conn_id: str | None
    download_allow_private_urls: bool
    budget: str | None
    on_budget_exhausted: str
    creator: dict[str, Any] | None

    @property
    def log(self) -> Any: ...


# Errors about the account or the connection, not an item: every other item would meet them too.
_STOPS_THE_BATCH = (
    AuthenticationError,
    ConnectionNotFoundError,
    InsecureConnectionError,
    TlsVerificationError,
    LedgerUnavailableError,  # budgets depend on the ledger: nothing more is sent
    LedgerMisconfiguredError,
)
# A 429 without Retry-After still pauses the batch this long.
_DEFAULT_PAUSE = 1.0
# After the deadline, calls still running (a hung connection) are cancelled this much later.
_DEADLINE_GRACE = 2.0
# Rows whose task ended (its cost_actual, if the server told it, is the row's).
_ENDED = frozenset({SUCCEEDED, FAILED, DOWNLOAD_FAILED})


@dataclasses.dataclass(frozen=True)
class _BatchRetryPolicy(RetryPolicy):
    """The connection's retry policy, telling the batch of every 429 so that all its requests pause."""

    on_rate_limited: Callable[[float], None] | None = dataclasses.field(default=None, compare=False, repr=False)
    #: The batch's deadline (epoch seconds): a retry that would wait past it is not started.
    batch_deadline: float | None = None

    def retry_delay(self, attempt: int, problem: MindVideoError, elapsed: float, rng: Any) -> float | None:
        delay = super().retry_delay(attempt, problem, elapsed, rng)
        if problem.http_status == 429 and self.on_rate_limited is not None:
            self.on_rate_limited(problem.retry_after if problem.retry_after is not None else (delay or _DEFAULT_PAUSE))
        if delay is not None and self.batch_deadline is not None and time.time() + delay > self.batch_deadline:
            return None
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

    async def wait(self, deadline: float | None = None) -> None:
        """Until the pause ends, or the batch's ``deadline`` (epoch seconds) comes, whichever is first.

        The server asked this account to wait, not the loop's other batches: their items take the
        slots meanwhile.
        """
        if self.until <= time.monotonic():
            return
        async with stepped_aside():
            while (left := self.until - time.monotonic()) > 0:
                if deadline is not None:
                    left = min(left, deadline - time.time())
                    if left <= 0:
                        return
                await asyncio.sleep(left)


class _Stop(Exception):
    """An error that ends the whole batch (see ``_STOPS_THE_BATCH``)."""

    def __init__(self, error: MindVideoError) -> None:
        super().__init__(str(error))
        self.error = error


class _Batch:
    """One run of a batch trigger: the items, the budget, the rows, and the coroutines working them."""

    def __init__(self, trigger: BatchRunSettings, hook: MindVideoHook, items: list[WorkItem]) -> None:
        self.trigger = trigger
        self.hook = hook
        self.log = trigger.log
        self.total = len(items)
        self.budget = Budget(trigger.max_cost)
        #: The loop's bounds, shared with every other batch in it; this batch is one tenant of them.
        self.share = loop_share()
        self.max_active = clamp_active(trigger.max_active, self.log)
        #: One per item, in the work list's order; made by run(), a step at a time.
        self.rows: list[ItemResult] = []
        # Items not taken yet. Each leaves as it is taken, its input with it once it is created:
        # at 10,000 items, holding every input to the end is megabytes the rows need too.
        self._waiting = collections.deque(items)
        self.finished: dict[str, int] = {}
        self.in_flight = 0
        self.pause = _Pause()
        self.last_progress = ""
        #: Remote tasks an earlier manifest records, by key: their cost is spent already.
        self.known: dict[str, dict[str, Any]] = {}
        self._earlier_files: dict[str, list[dict[str, Any]]] = {}
        self._checkpoint: asyncio.Future[None] | None = None
        self.intents = Intents(intents_folder(trigger.result_path), trigger.storage_conn_id)
        self._budget_change = asyncio.Event()
        #: What the ceiling counts for each create (this run's and earlier ones), by key.
        self.charges: dict[str, Charge] = {}
        self.saver = Saver(trigger, self.log, self.share.saves, self) if trigger.download_to else None
        #: The spend ledger (the connection's budgets); opened by run().
        self.books = BatchBooks(None, None, trigger.try_number)
        #: The run's hold on the batch (batch/lease.py): requests and journal writes only while it holds.
        self.lease: BatchLease | None = None

    async def _adopt_earlier(
        self, earlier: list[ItemResult], kept: list[dict[str, Any]], intents: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Count what earlier tries (or earlier runs of this one) created or may have created, before creating anything.

        Without this, a retry's or a restarted trigger's new creates could take the budget ahead
        of replays of tasks already paid for, and the ceiling would not hold. Every such task
        counts, whether or not an item of the current inputs owns it (``kept``: those an
        earlier run found owned by none), at the most anything recorded says its model costs:
        every record's prices are learnt first. Items with earlier tasks are taken first: their
        replays tell prices, and end what keeps a model's creates going alone. Returns the tasks
        no current item owns.
        """
        # Each loop over rows or tasks goes a step at a time: an earlier manifest may hold 10,000 rows.
        self.known = {task["idempotency_key"]: task async for task in in_steps(kept)}
        self.known.update(known_tasks(earlier))
        async for intent in in_steps(intents):
            self.known.setdefault(intent["idempotency_key"], {**intent, "task_id": None, "cost_estimate": None})
        self._earlier_files = {row.task_id: row.files for row in earlier if row.task_id and row.files}
        ended = {row.task_id: row for row in earlier if row.task_id and row.status in _ENDED}
        async for row in in_steps(earlier):
            self.budget.learn(row.model, row.cost_estimate, row.cost_actual)
        async for task in in_steps(list(self.known.values())):
            if task.get("model"):
                self.budget.learn(task["model"], task.get("cost_estimate"), task.get("cost_actual"))
                self.budget.learn(task["model"], task.get("bound"), task.get("price_seen"))
        by_stem: dict[str, list[dict[str, Any]]] = {}
        for task in self.known.values():
            by_stem.setdefault(task["idempotency_key"].rsplit("-", 1)[0], []).append(task)
        replays_first: list[WorkItem] = []
        async for item, row in in_steps(zip(self._waiting, self.rows, strict=True)):
            row.tasks = sorted(by_stem.pop(item.key_stem, []), key=lambda task: task["generation"])
            for task in row.tasks:
                self._adopt(task, item.model, ended.get(task["task_id"]), owned=True)
            if row.tasks:
                replays_first.append(item)
        if replays_first:
            rest = [item for item in self._waiting if not self.rows[item.position].tasks]
            self._waiting = collections.deque(replays_first + rest)
        orphans = [task for tasks in by_stem.values() for task in tasks]
        for task in orphans:
            self._adopt(task, task.get("model") or "", ended.get(task["task_id"]), owned=False)
        return orphans

    def _adopt(self, task: dict[str, Any], model: str, row: ItemResult | None, *, owned: bool) -> None:
        recorded = [task.get("cost_estimate"), task.get("cost_actual"), task.get("held")]
        if row is not None:
            recorded += [row.cost_estimate, row.cost_actual]
        names = task.get("task_id") or f"under key {task['idempotency_key']}"
        untold = None
        if task.get("ended") and readable_cost(task.get("cost_actual")) is None:
            untold = f"its task {names} ended without a readable cost_actual"
        elif not owned and not task.get("ended") and row is None:
            # No item replays it: this run never sees it end, nor learns its price from it.
            untold = f"its task {names}, of an item no longer in the inputs, was not seen ending"
        readable = [cost for cost in map(readable_cost, recorded) if cost is not None]
        charge = self.budget.adopt(
            model,
            recorded=max(readable, default=None),
            open=owned and not task.get("ended") and row is None,
            untold=untold,
        )
        self.charges[task["idempotency_key"]] = charge

    async def run(self) -> BatchSummary:
        settings = await self.hook.asettings()
        if self.lease is not None:
            self.intents.fence = self.lease.fenced
        # Before anything is sent: an unknown budget name or an unreachable ledger ends the batch here.
        books = await self.hook.aspend_books(getattr(self.trigger, "budget", None))
        self.books = BatchBooks(
            books,
            getattr(self.trigger, "creator", None),
            self.trigger.try_number,
            look_up=lambda task_id: self.hook.aget_task(task_id, within=self._left()),
        )
        self.hook.retry_policy = _BatchRetryPolicy(
            max_retries=settings.max_retries, on_rate_limited=self.pause.pause, batch_deadline=self.trigger.deadline
        )
        self.log.info(
            "MindVideo batch: %d item(s), try %d, at most %d in flight, max_cost %s; manifest %s",
            self.total,
            self.trigger.try_number,
            self.max_active,
            self.trigger.max_cost,
            self.trigger.result_path,
        )
        earlier = await asyncio.to_thread(read_manifest, self.trigger.result_path, self.trigger.storage_conn_id)
        kept = await asyncio.to_thread(read_earlier_tasks, self.trigger.result_path, self.trigger.storage_conn_id)
        intents = await asyncio.to_thread(read_intents, self.intents.folder, self.trigger.storage_conn_id)
        async for item in in_steps(self._waiting):
            self.rows.append(ItemResult.for_item(item))
        orphans = await self._adopt_earlier(earlier, kept, intents)
        if orphans:
            # Kept before any manifest is written over the one that recorded them.
            await self._journal(write_earlier_tasks, self.trigger.result_path, self.trigger.storage_conn_id, orphans)
        reporter = asyncio.create_task(self._report_progress())
        try:
            async with asyncio.timeout_at(self._hard_stop()):
                async with asyncio.TaskGroup() as workers:
                    # Started a step at a time: a worker's first step is the next turn's work.
                    async for _ in in_steps(range(min(self.max_active, self.total))):
                        workers.create_task(self._work())
                if self.saver is not None:
                    await self.saver.drain()
        except* _Stop as stopped:
            raise stopped.exceptions[0] from None
        except* LeaseLost as lost:
            raise lost.exceptions[0] from None
        except* TimeoutError:
            self._time_out_the_rest()
        finally:
            reporter.cancel()
            if self.saver is not None:
                self.saver.close()
            # Threads run on when their waiters are cancelled: the final writes must come after them.
            running = [job for job in (self._checkpoint, self.intents.writer) if job is not None]
            if running:
                await asyncio.wait(running)
        self._log_progress()
        for row in self.rows if self.saver is None else ():
            if row.status == SUCCEEDED and not row.files and row.task_id in self._earlier_files:
                row.files = self._earlier_files[row.task_id]  # stored by an earlier try: kept, not fetched again
        # In a thread (rows change no more): 10,000 rows are a long step, and the loop serves others meanwhile.
        summary = await asyncio.to_thread(
            summarize,
            self.rows,
            self.trigger.result_path,
            max_cost=self.trigger.max_cost,
            spent=self.budget.committed + self.budget.abandoned,
        )
        await self._write_manifest()
        # Every create is in the manifest now, answered or not.
        await self._journal(clear_intents, self.intents.folder, self.trigger.storage_conn_id)
        # A settle not written leaves its create counted at its reservation; the error says the ledger failed.
        await self.books.drain()
        return summary

    def _hard_stop(self) -> float | None:
        """When (loop time) to stop whatever still runs: a little after the deadline, should a call hang."""
        if self.trigger.deadline is None:
            return None
        return asyncio.get_running_loop().time() + max(0.0, self.trigger.deadline - time.time()) + _DEADLINE_GRACE

    def _time_out_the_rest(self) -> None:
        """The deadline stopped the items still working: each is reported ``timed_out`` (a retry waits again)."""
        for row in self.rows:
            if row.status != PENDING:
                continue
            row.status, row.retryable = TIMED_OUT, True
            row.error = (
                "not created before the batch's timeout"
                if row.task_id is None
                else f"MindVideo task {row.task_id} did not finish before the batch's timeout"
            )
        # The cancelled workers counted their rows as they stood (pending): count again from the rows.
        self.finished = {}
        for row in self.rows:
            self.finished[row.status] = self.finished.get(row.status, 0) + 1
        self.in_flight = 0

    async def _write_manifest(self) -> None:
        # Rendered here, in the loop, from rows the loop alone changes (a slice at a time, so that
        # 10,000 rows do not stall the requests); only the writing goes to a thread. As bytes in
        # slices: the text is never held whole a second (str) and third (joined, encoded) time.
        chunks = []
        for start in range(0, len(self.rows), WORK_PER_STEP):
            chunks.append(manifest_chunk(self.rows[start : start + WORK_PER_STEP]))
            await asyncio.sleep(0)
        await self._journal(write_manifest, self.trigger.result_path, self.trigger.storage_conn_id, chunks)

    async def _journal(self, write: Callable[..., None], *args: Any) -> None:
        """A journal write, in a thread; only while this run holds the batch (:raises LeaseLost: otherwise)."""
        lease = self.lease
        await asyncio.to_thread(lambda: write(*args) if lease is None else lease.fenced(lambda: write(*args)))

    async def _work(self) -> None:
        # Items are taken in order, one at a time per worker: at most max_active are in flight, and
        # each holds one of the loop's slots (shared round-robin with the loop's other batches).
        # Their requests go behind the single waits' on the same connection (this task's context only).
        limits.bulk.set(True)
        while self._waiting:
            async with self.share.active.slot(self):
                if not self._waiting:
                    return
                item = self._waiting.popleft()
                row = self.rows[item.position]
                job = self._item(item, row)
                del item  # the item's input goes when it is sent (see _item), not when it ends
                self.in_flight += 1
                try:
                    await job
                except _STOPS_THE_BATCH as exc:
                    raise _Stop(exc) from None
                except MindVideoError as exc:
                    # Trouble the item would have waited out, had the timeout not come first: it timed
                    # out (whether the answer came just before the deadline or after it is the machine's luck).
                    timed_out = exc.retryable and self._past_deadline()
                    row.status, row.retryable = (TIMED_OUT if timed_out else ERROR), exc.retryable
                    row.error = str(exc)
                    if timed_out:
                        row.error = f"no usable answer before the batch's timeout; the last: {row.error}"
                finally:
                    self._stop_watching(row)
                    self.in_flight -= 1
                    self.finished[row.status] = self.finished.get(row.status, 0) + 1

    async def _item(self, item: WorkItem, row: ItemResult) -> None:
        if self._past_deadline():
            row.status, row.error, row.retryable = TIMED_OUT, "not created before the batch's timeout", True
            return
        task = await self._walk(item, row)
        del item  # its input is sent: only the row is needed from here
        if task is not None:
            self._finish(row, await self._wait(task, row))
            if self.saver is not None and row.status == SUCCEEDED:
                self.saver.start(row, self._earlier_files.get(row.task_id or ""))

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
                if known.get("task_id") is None:  # its answer had been lost: now it is known
                    known.update(task_id=task.task_id, cost_estimate=task.cost_estimate, held=None)
                charge = self.charges.get(key)
                if charge is not None:
                    self.budget.settle(charge, task.cost_estimate, task.cost_actual)
                self.books.settle(key, task)  # a create reserved by a run that died: its answer is in now
            else:
                reservation = await self._reserve(item.model)
                if reservation is None:
                    row.status, row.error, row.retryable = OVER_BUDGET, self.budget.refusal(item.model), False
                    return None
                refusal = await self._reserve_in_ledger(key, item.model, reservation)
                if refusal is not None:
                    self.budget.release(reservation)
                    self._budget_moved()
                    row.status, row.error, row.retryable = OVER_BUDGET, refusal.message(), False
                    return None
                if self._past_deadline():
                    # Its reservation was decided after the deadline (it waited for its group, or for
                    # money): sent now, it would be charged with no one waiting for its task.
                    self.budget.release(reservation)
                    self.books.release(key)
                    self._budget_moved()
                    row.status, row.error, row.retryable = TIMED_OUT, "not created before the batch's timeout", True
                    return None
                intent = row.note_task(
                    generation,
                    key,
                    None,
                    None,
                    try_number=trigger.try_number,
                    held=self.budget.counted(reservation),
                    model=item.model,
                )
                # What the ceiling knew of the model's price when it held this create: a restarted
                # trigger learns it from the intent even when no checkpoint recorded an answer.
                intent.update(bound=self.budget.predict(item.model), price_seen=self.budget.price_seen(item.model))
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
                        self.books.release(key)
                        row.tasks.remove(intent)
                        del self.known[key]
                    else:  # it may have charged: its money stays held, and no one waits for its answer
                        self.budget.abandon(reservation, key=key)
                    self._budget_moved()
                    raise
                self.charges[key] = reservation
                self.budget.settle(reservation, task.cost_estimate, task.cost_actual)
                self.books.settle(key, task)
                self._budget_moved()
                row.note_task(generation, key, task.task_id, task.cost_estimate, try_number=trigger.try_number)
            if task.is_terminal:
                self._ended(row, key, task)
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

    async def _reserve(self, model: str) -> Charge | None:
        """Hold a create's predicted cost, waiting while only money held for creates in flight is in the way
        (or, under a ceiling, while the model's lone task, its price not known yet, runs).

        None: it would not fit even once they all settle: over budget. (The batch's hard stop
        ends a wait that reaches the deadline: the item is then ``timed_out``.)
        """
        while (reservation := self.budget.try_reserve(model)) is None:
            if self.budget.refuses(model):
                return None
            async with stepped_aside():  # other batches' items go meanwhile
                await self._budget_change.wait()
        return reservation

    async def _reserve_in_ledger(self, key: str, model: str, reservation: Charge) -> BudgetRefusal | None:
        """Reserve the create in the spend ledger at what the ceiling holds it at; the refusal, if a budget is full.

        ``on_budget_exhausted="wait"``: wait (in this loop, no worker slot) until the refusing
        window resets and try again, unless the create is dearer than the whole limit.
        """
        while True:
            refusal = await self.books.try_reserve(key, model, self.budget.counted(reservation))
            wait = getattr(self.trigger, "on_budget_exhausted", "fail") == "wait"
            if refusal is None or not wait or not refusal.could_ever_fit:
                return refusal
            self.log.info("%s Waiting for the reset (on_budget_exhausted='wait').", refusal.message())
            async with stepped_aside():
                await asyncio.sleep(seconds_until(refusal.window.resets_at.timestamp()))

    def _ended(self, row: ItemResult, key: str, task: MindVideoTask) -> None:
        """``task`` (``key``'s) ended: what it cost settles, and the items waiting for its model's price wake."""
        row.note_end(key, task.cost_actual)
        self.books.settle(key, task)
        charge = self.charges.get(key)
        if charge is not None and charge.open:
            self.budget.finish(charge, task.cost_estimate, task.cost_actual, task=task.task_id)
            self._budget_moved()

    def _stop_watching(self, row: ItemResult) -> None:
        """The item is done with: its tasks not seen ending will not be (their model's price stays untold)."""
        for entry in row.tasks:
            charge = self.charges.get(entry["idempotency_key"])
            if charge is not None and charge.open:
                name = entry.get("task_id") or f"under key {entry['idempotency_key']}"
                self.budget.finish(charge, None, None, task=name, seen_ending=False)
                self._budget_moved()

    def _budget_moved(self) -> None:
        """A create settled or was released, or a task ended: wake the items waiting for money or a price."""
        self._budget_change.set()
        self._budget_change = asyncio.Event()

    async def _create(self, item: WorkItem, key: str) -> MindVideoTask:
        """Create (or replay) under ``key``; transient trouble is waited out with the same key (it cannot pay twice)."""
        first = True
        while True:
            await self.pause.wait(self.trigger.deadline)
            if self.lease is not None:
                await self.lease.confirm()  # a run that lost the batch sends nothing more
            try:
                async with self.share.requests.slot(self):
                    task = await self.hook.acreate_task(
                        item.model,
                        item.input,
                        idempotency_key=key,
                        allow_unknown_model=self.trigger.allow_unknown_model,
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
        started = last_running = time.time()  # just created (or replayed): unfinished
        # A replayed create may name a task made long ago: its duration from now says nothing.
        fresh = task.created is True
        while not task.is_terminal:
            now = time.time()
            if self._past_deadline(now):
                row.status, row.retryable = TIMED_OUT, True
                row.error = f"MindVideo task {task.task_id} did not finish before the batch's timeout"
                return task
            delay = next_poll_delay(
                now - started,
                self.trigger.poll_interval,
                self.trigger.max_poll_interval,
                durations=RECENT.of(row.model),
            )
            if self.trigger.deadline is not None:
                delay = min(delay, max(0.0, self.trigger.deadline - now))
            await asyncio.sleep(delay)
            await self.pause.wait(self.trigger.deadline)
            try:
                async with self.share.requests.slot(self):
                    task = await self.hook.aget_task(task.task_id, within=self._left())
            except MindVideoError as exc:
                if not exc.retryable:
                    raise
                await self._back_off(exc)  # the hook already retried; keep waiting rather than fail over a blip
                continue
            if not task.is_terminal:
                last_running = time.time()
        if fresh and task.status is TaskStatus.SUCCEEDED:
            # The batch's items of one model teach each other (and the triggerer's other waits) when to look.
            took = observed_duration(last_running, time.time(), started)
            if took is not None:
                RECENT.record(row.model, took)
        return task

    def _finish(self, row: ItemResult, task: MindVideoTask) -> None:
        if row.status == TIMED_OUT:
            return
        if row.idempotency_key is not None:
            self._ended(row, row.idempotency_key, task)
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
            left = math.inf if self.trigger.deadline is None else self.trigger.deadline - time.time()
            await asyncio.sleep(max(0.0, min(self.trigger.poll_interval, left)))

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
            try:
                await asyncio.shield(self._checkpoint)
            except LeaseLost:
                return  # the renewals and the next create or write stop the run

    def _log_progress(self) -> None:
        self.last_progress = progress_line(
            total=self.total,
            counts=self.finished,
            in_flight=self.in_flight,
            spent=self.budget.committed,
            max_cost=self.trigger.max_cost,
            elapsed=time.time() - self.trigger.started_at,
            saved=None if self.saver is None else self.saver.saved,
        )
        self.log.info(self.last_progress)

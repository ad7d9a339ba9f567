"""MindVideoBatchTrigger: create and wait for a whole batch of generations in the triggerer.

Creating 10,000 tasks under an account's rate limit takes many minutes, and waiting for them
longer: both happen here, in the triggerer's event loop, without a worker slot. The trigger's
kwargs name where the work list is (object storage: the metadata database never carries the
batch); it writes one manifest row per item to ``result_path`` and fires one small event.

Per item, the walk over key generations is the single-task operators' (the same pure step,
:func:`airflow_provider_mindvideo.client.submission.next_step`): a try creates at most one task per
item, and a restarted triggerer (same try) replays the item's keys, free, and re-attaches to
the tasks already created. Every create is reserved against ``max_cost`` first
(:mod:`airflow_provider_mindvideo.spend.ceiling`) and written down (the *intents*, small files in
``<manifest>.intents/``) before it is sent, so that a later try or a restarted trigger counts
every create that may have charged -- from the manifest when its answer came, from the intents
when it did not -- before it creates anything itself. The final manifest records them all, and
the intents are then removed. A restarted trigger also knows which creates were its own try's:
a task this try created that failed ends the item for this try, as on the worker.

Twice at once: Airflow may run one trigger in two triggerers (a lost heartbeat, a re-assignment
while the first copy still runs). One run holds the batch (:mod:`airflow_provider_mindvideo.batch.lease`):
the other sends nothing, writes nothing, and fires the holder's final event, or takes the batch
over from its journal once the holder stops renewing its lease.

Concurrency: at most ``max_active`` items are between their first create and their end at any
time, on top of the connection's own ``max_concurrency`` / ``max_requests_per_second``, and
within the bounds the triggerer's event loop shares between all its batches, round-robin
(:mod:`airflow_provider_mindvideo.batch.sharing`). A 429 pauses the whole batch for the wait the
server asked for, not only the request that met it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_mindvideo import DEFAULT_CONN_ID
from airflow_provider_mindvideo.batch.lease import BatchLease, BatchSuperseded, LeaseLost
from airflow_provider_mindvideo.batch.plan import PENDING
from airflow_provider_mindvideo.batch.records import read_work_list
from airflow_provider_mindvideo.batch.run import DONE, ERROR_EVENT, _Batch, _Stop
from airflow_provider_mindvideo.client.cancellation import log_still_running
from airflow_provider_mindvideo.client.errors import MindVideoError
from airflow_provider_mindvideo.client.polling import check_poll_settings
from airflow_provider_mindvideo.resume import hold_until_resumable

if TYPE_CHECKING:
    from airflow_provider_mindvideo.hooks import MindVideoHook

__all__ = ["DONE", "ERROR_EVENT", "MindVideoBatchTrigger"]

# How many still-running remote tasks a log line names (a batch may have thousands).
_NAMED_IN_LOGS = 20


class MindVideoBatchTrigger(BaseTrigger):
    """Create and wait for every item of a batch, then fire one event carrying the summary.

    The event's payload: ``status`` (``done`` or ``error``), ``summary`` (the
    :class:`~airflow_provider_mindvideo.batch.plan.BatchSummary` as a dict, with ``done``) and
    ``message``. The manifest (one JSON row per item) is at ``result_path``.

    :param work_list_path: The work list (JSONL of :class:`~airflow_provider_mindvideo.batch.plan.WorkItem`),
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
    :param download_to: Save each succeeded item's outputs into this folder (an
        ``ObjectStoragePath`` URL) as it finishes, a few at a time, while the others generate;
        None: the operator saves them, if at all. Files an earlier run stored are kept.
    :param download_conn_id: The storage connection for ``download_to``.
    :param download_allow_private_urls: Let downloads reach loopback and private addresses.
    :param budget: The operator's named budget in the spend ledger, besides the account's.
    :param on_budget_exhausted: ``"fail"``: an item a budget refuses is ``over_budget``;
        ``"wait"``: it waits in this loop until the window resets.
    :param creator: What the ledger's rows name: ``dag_id``, ``run_id``, ``task_id``, ``map_index``.
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
        download_to: str | None = None,
        download_conn_id: str | None = None,
        download_allow_private_urls: bool = False,
        budget: str | None = None,
        on_budget_exhausted: str = "fail",
        creator: dict[str, Any] | None = None,
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
        self.download_to = download_to
        self.download_conn_id = download_conn_id
        self.download_allow_private_urls = download_allow_private_urls
        self.budget = budget
        self.on_budget_exhausted = on_budget_exhausted
        self.creator = creator

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # Stored in the metadata database: paths, ids and numbers; the work list stays in storage.
        # The classpath is this public path wherever the class's module lives, on purpose: a trigger
        # row written by this version still loads in an older one (a downgrade, a rolling upgrade).
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
                "download_to": self.download_to,
                "download_conn_id": self.download_conn_id,
                "download_allow_private_urls": self.download_allow_private_urls,
                "budget": self.budget,
                "on_budget_exhausted": self.on_budget_exhausted,
                "creator": self.creator,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_mindvideo.hooks import MindVideoHook

        hook = MindVideoHook(self.mindvideo_conn_id, shared_client=True)
        lease = BatchLease(self.result_path, self.storage_conn_id, self.try_number, owner=self.creator)
        try:
            payload = await self._payload(hook, lease)
            await hold_until_resumable(self.started_at, self.log)  # Airflow's fast-resume race: resume.py
            yield TriggerEvent(payload)
        finally:
            lease.close()
            await hook.aclose()

    async def _payload(self, hook: MindVideoHook, lease: BatchLease) -> dict[str, Any]:
        """The batch's final event: from this run, or from the run that held the batch (see batch/lease.py)."""
        while True:
            try:
                finished = await lease.claim(self.log)
            except BatchSuperseded as superseded:
                return self._error(MindVideoError(str(superseded)))
            if finished is not None:
                return finished
            try:
                payload = await self._holding(hook, lease)
            except BatchSuperseded as superseded:
                # A later try asked for the batch while this run held it: let go at once, for it to go on.
                with contextlib.suppress(Exception):
                    await lease.release(None)
                return self._error(MindVideoError(str(superseded)))
            except LeaseLost as lost:
                self.log.warning("MindVideo batch: %s; this run stops sending and follows it", lost)
                continue
            except BaseException:
                # Cancelled (Airflow moved the trigger, or the task) or crashed: a run that waits takes over at once.
                with contextlib.suppress(Exception):
                    await lease.release(None)
                raise
            if await lease.release(payload):
                return payload

    async def _holding(self, hook: MindVideoHook, lease: BatchLease) -> dict[str, Any]:
        """Run the batch while renewing the lease; :raises LeaseLost: as soon as another run holds it."""
        work = asyncio.ensure_future(self._work(hook, lease))
        keeper = asyncio.ensure_future(lease.keep())
        try:
            await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()
                await asyncio.wait({work})
                keeper.result()  # raises what ended the renewals (LeaseLost)
            return work.result()
        finally:
            keeper.cancel()
            work.cancel()

    async def _work(self, hook: MindVideoHook, lease: BatchLease) -> dict[str, Any]:
        try:
            # Blocking storage I/O goes through a thread: the loop serves every other trigger meanwhile.
            items = await asyncio.to_thread(read_work_list, self.work_list_path, self.storage_conn_id)
            batch = self._batch = _Batch(self, hook, items)
            batch.lease = lease
            summary = await batch.run()
        except _Stop as stop:
            return self._error(stop.error)
        except MindVideoError as exc:
            return self._error(exc)
        return {
            "status": DONE,
            "summary": summary.to_xcom(),
            "message": batch.last_progress,
            # The worker's saves of what is missing end by it too (or soon after, see the operator).
            "deadline": self.deadline,
        }

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
    def _error(error: MindVideoError) -> dict[str, Any]:
        return {"status": ERROR_EVENT, "summary": None, "message": str(error), "error_type": type(error).__name__}

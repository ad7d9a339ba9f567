"""MindVideoTaskTrigger: wait for a MindVideo task in the triggerer, without a worker slot."""

from __future__ import annotations

import asyncio
import time
import weakref
from asyncio import sleep
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

from airflow_provider_mindvideo import DEFAULT_CONN_ID
from airflow_provider_mindvideo.client.cancellation import log_still_running
from airflow_provider_mindvideo.client.durations import RECENT, observed_duration
from airflow_provider_mindvideo.client.errors import MindVideoError
from airflow_provider_mindvideo.client.models import MindVideoTask, TaskStatus
from airflow_provider_mindvideo.client.polling import (
    FIRST_CHECKS_PER_SLICE,
    SLICE_SECONDS,
    FirstCheckSlots,
    check_poll_settings,
    next_poll_delay,
)
from airflow_provider_mindvideo.client.settings import ClientSettings, RecentSettings
from airflow_provider_mindvideo.resume import hold_until_resumable

if TYPE_CHECKING:
    from airflow_provider_mindvideo.hooks import MindVideoHook

_LAST_LOOK_SECONDS = 2.0
# The clock the first checks are spread by (tests fix it).
_clock = time.monotonic
# The waits on one event loop (one triggerer) share their first-check slots.
_first_check_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FirstCheckSlots] = weakref.WeakKeyDictionary()


def _first_check_delay() -> float:
    loop = asyncio.get_running_loop()
    slots = _first_check_slots.get(loop)
    if slots is None:
        slots = _first_check_slots[loop] = FirstCheckSlots(FIRST_CHECKS_PER_SLICE, SLICE_SECONDS)
    return slots.delay(_clock())


#: Waits on one event loop that start within this many seconds of each other read their
#: connection once between them: an edited connection reaches new waits at most this late.
SETTINGS_REUSE_SECONDS = 10.0
_recent_settings: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RecentSettings] = weakref.WeakKeyDictionary()
# Readings under way, by loop and connection id: waits starting in the same instant wait for one.
_reading: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Task[ClientSettings]]] = (
    weakref.WeakKeyDictionary()
)


async def _read_settings(hook: MindVideoHook) -> None:
    """Give ``hook`` its connection's settings, read by another wait on this loop if it read them lately."""
    loop = asyncio.get_running_loop()
    recent = _recent_settings.get(loop)
    if recent is None:
        recent = _recent_settings[loop] = RecentSettings(SETTINGS_REUSE_SECONDS)
    conn_id = hook.mindvideo_conn_id
    settings = recent.get(conn_id, _clock())
    if settings is None:
        under_way = _reading.setdefault(loop, {})
        reading = under_way.get(conn_id)
        if reading is None:
            reading = under_way[conn_id] = loop.create_task(_read_and_keep(hook, recent))
            reading.add_done_callback(lambda done: _reading_done(under_way, conn_id, done))
        # Shielded: a wait cancelled meanwhile must not cancel the reading the others wait for.
        settings = await asyncio.shield(reading)  # a failed reading raises here, for each wait alike
    hook.reuse_settings(settings)


def _reading_done(under_way: dict[str, asyncio.Task[ClientSettings]], conn_id: str, done: asyncio.Task[Any]) -> None:
    under_way.pop(conn_id, None)
    if not done.cancelled():
        done.exception()  # retrieved here too: every wait that asked may have been cancelled meanwhile


async def _read_and_keep(hook: MindVideoHook, recent: RecentSettings) -> ClientSettings:
    # The triggers' hooks take no timeout or retry overrides: their settings are the connection's alone.
    settings = await hook.asettings()
    recent.put(hook.mindvideo_conn_id, settings, _clock())
    return settings


_EVENT_FIELDS = frozenset(MindVideoTask.model_fields) - {"created"}


def _event_task(task: MindVideoTask) -> dict[str, Any]:
    # Events are stored in the metadata database: the task's own fields only (a server's extra
    # fields can be any size), and its error in the capped words the provider shows.
    record = task.model_dump(mode="json", include=set(_EVENT_FIELDS))
    record["error"] = task.error_message
    return record


#: XCom key of the small JSON record describing the MindVideo task (never its input). The
#: trigger pushes it when the task ends in the triggerer; :mod:`.outcomes` when it ends on a worker.
XCOM_TASK_KEY = "mindvideo_task"
#: Outcomes a MindVideoTaskTrigger event can carry, in ``event["status"]``.
SUCCESS, FAILED, CANCELLED, TIMEOUT, ERROR = "success", "failed", "cancelled", "timeout", "error"
_OUTCOME_OF = {TaskStatus.SUCCEEDED: SUCCESS, TaskStatus.FAILED: FAILED, TaskStatus.CANCELLED: CANCELLED}


class MindVideoTaskTrigger(BaseTrigger):
    """Poll a MindVideo task until it ends, then fire one event.

    The event's payload is a dict: ``status`` (``success``, ``failed``, ``cancelled``,
    ``timeout`` or ``error``), ``mindvideo_task_id``, ``task`` (the task as JSON, when known)
    and ``message``. Transient API errors (429, 5xx, network) are retried here, not reported;
    permanent ones (bad key, unknown task) end the wait with ``error``.

    :param mindvideo_task_id: The MindVideo task to wait for.
    :param mindvideo_conn_id: The MindVideo connection.
    :param poll_interval: Seconds before the first re-check, and the shortest interval between
        two checks; later intervals grow with the elapsed wait (a quarter of it) up to
        ``max_poll_interval``, or, once this triggerer saw a few tasks of ``model`` end, gather
        around when they usually end (see ``airflow_provider_mindvideo.client.polling``).
    :param max_poll_interval: The longest interval between two checks, hence the latest a task
        is seen after it ended.
    :param started_at: When the wait began (epoch seconds); intervals grow from here.
    :param deadline: When to give up (epoch seconds), or None to wait for ever.
    :param model: The task's model: the triggerer learns how long its tasks take, and aims
        its checks at when they usually end. None: the backoff alone.
    :param end_from_trigger: When the task succeeded with at least one output, end the Airflow
        task here, in the triggerer, with the XComs :class:`~airflow_provider_mindvideo.sensors.MindVideoTaskSensor`
        would push (a ``TaskSuccessEvent``), instead of resuming it on a worker. Every other
        outcome still fires the event above and resumes on a worker, so that failures keep
        their rules.
    """

    def __init__(
        self,
        mindvideo_task_id: str,
        mindvideo_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        started_at: float | None = None,
        deadline: float | None = None,
        end_from_trigger: bool = False,
        model: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        check_poll_settings(poll_interval, max_poll_interval)
        self.mindvideo_task_id = mindvideo_task_id
        self.mindvideo_conn_id = mindvideo_conn_id
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.started_at = time.time() if started_at is None else started_at
        self.deadline = deadline
        self.end_from_trigger = end_from_trigger
        self.model = model

    @classmethod
    def starting_now(
        cls,
        mindvideo_task_id: str,
        mindvideo_conn_id: str,
        poll_interval: float,
        max_poll_interval: float,
        timeout: float,
        *,
        end_from_trigger: bool = False,
        model: str | None = None,
    ) -> MindVideoTaskTrigger:
        """A wait that starts now and gives up ``timeout`` seconds later."""
        now = time.time()
        return cls(
            mindvideo_task_id,
            mindvideo_conn_id,
            poll_interval,
            max_poll_interval,
            started_at=now,
            deadline=now + timeout,
            end_from_trigger=end_from_trigger,
            model=model,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # Stored in the metadata database: ids and numbers only, never the API key.
        kwargs: dict[str, Any] = {
            "mindvideo_task_id": self.mindvideo_task_id,
            "mindvideo_conn_id": self.mindvideo_conn_id,
            "poll_interval": self.poll_interval,
            "max_poll_interval": self.max_poll_interval,
            "started_at": self.started_at,
            "deadline": self.deadline,
        }
        # Only when set: a wait without it is stored exactly as earlier releases stored it.
        if self.end_from_trigger:
            kwargs["end_from_trigger"] = True
        if self.model is not None:
            kwargs["model"] = self.model
        return "airflow_provider_mindvideo.triggers.MindVideoTaskTrigger", kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_mindvideo.hooks import MindVideoHook

        # Thousands of waits share the triggerer's loop: they share one pooled client too.
        hook = MindVideoHook(self.mindvideo_conn_id, shared_client=True)
        self._last_problem: str | None = None
        self._seen: tuple[str, float] | None = None  # the last status seen, and since when
        self._last_running: float | None = None  # when this run last saw the task unfinished
        self._settings_read = False
        try:
            # Thousands of waits handed to a triggerer at once would all look now, in one burst.
            if held := _first_check_delay():
                await sleep(held)
            while True:
                event, server_asked = await self._check_by_deadline(hook)
                now = time.time()
                if event is None and self.deadline is not None and now >= self.deadline:
                    # An outage that outlasted the wait is the cause worth naming, not the timeout.
                    cause = f"; the last check failed: {self._last_problem}" if self._last_problem else ""
                    event = self._event(
                        TIMEOUT, None, f"MindVideo task {self.mindvideo_task_id} did not finish in time{cause}"
                    )
                if event is not None:
                    # An event that resumes the task on a worker waits until Airflow can take it
                    # back (see resume.py); one that ends the task here (end_from_trigger) does not.
                    if not isinstance(event, TaskSuccessEvent):
                        await hold_until_resumable(self.started_at, self.log)
                    yield event
                    return
                await sleep(self._next_delay(now, server_asked))
        finally:
            # Also on cancellation (triggerer shutdown, task cleared): release the connection.
            await hook.aclose()

    async def _check_by_deadline(self, hook: MindVideoHook) -> tuple[TriggerEvent | None, float]:
        # The hook's own retries and Retry-After waits happen inside the check: the wait's
        # deadline must bound them too, not only the sleeps between checks.
        if self.deadline is None:
            return await self._check(hook)
        # A wait resumed after its deadline (a triggerer restart) still takes one short last look:
        # a task that finished meanwhile is worth reporting as such.
        left = max(_LAST_LOOK_SECONDS, self.deadline - time.time())
        try:
            async with asyncio.timeout(left):
                return await self._check(hook, within=left)
        except TimeoutError:
            self._last_problem = self._last_problem or "no answer before the deadline"
            return None, 0.0

    async def _check(self, hook: MindVideoHook, within: float | None = None) -> tuple[TriggerEvent | None, float]:
        """Look at the task once: the event to fire, else the wait the server asked for (or 0).

        ``within``: the hook starts no retry wait (a long Retry-After) it could not finish by
        then, and gives up naming the cause; the timeout around the check is the backstop.
        """
        try:
            if not self._settings_read:
                await _read_settings(hook)
                self._settings_read = True
            task = await hook.aget_task(self.mindvideo_task_id, within=within)
        except MindVideoError as exc:
            if not exc.retryable:
                return self._event(ERROR, None, str(exc), error_type=type(exc).__name__), 0.0
            # The hook already retried; keep waiting rather than fail a long job over a blip.
            if str(exc) != self._last_problem:
                self.log.warning("MindVideo task %s: %s; will check again", self.mindvideo_task_id, exc)
            self._last_problem = str(exc)
            return None, exc.retry_after or 0.0
        self._last_problem = None
        self._note_status(task)
        self._learn(task)
        if task.is_terminal:
            if self.end_from_trigger and task.status is TaskStatus.SUCCEEDED and task.output_urls:
                return self._success_here(task), 0.0
            return self._event(_OUTCOME_OF[task.status], task, self._describe(task)), 0.0
        return None, 0.0

    def _success_here(self, task: MindVideoTask) -> TaskSuccessEvent:
        """End the Airflow task in the triggerer, with the XComs the sensor would push on a worker.

        Only a success with outputs ends here: a failed, cancelled or empty task, a timeout or an
        error resumes on a worker, where retries, soft_fail and the pay-once rules apply.
        """
        from airflow_provider_mindvideo.links import MindVideoOutputLink, output_url

        # The task as the worker would see it: rebuilt from the event's own record of it, as
        # execute_complete rebuilds it (task_from_event), so that both paths store the same record.
        finished = MindVideoTask.model_validate(_event_task(task))
        record = finished.summary()
        self.log.info(
            "%s, actual cost %s; the Airflow task ends here, in the triggerer (end_from_trigger)",
            self._describe(finished),
            finished.cost_actual if finished.cost_actual is not None else "unknown",
        )
        return TaskSuccessEvent(
            xcoms={
                "return_value": finished.output_urls,
                XCOM_TASK_KEY: record,
                # A worker computes the operator's links as the task ends; no worker runs now.
                MindVideoOutputLink().xcom_key: output_url(record, None),
            }
        )

    def _note_status(self, task: MindVideoTask) -> None:
        """One log line per change of status, with how long the previous one lasted (the first seen, only if final)."""
        now = time.time()
        if self._seen is not None and self._seen[0] == task.reported_status:
            return
        if self._seen is None and not task.is_terminal and task.status is not TaskStatus.UNKNOWN:
            # The operator logged the task and its status as it deferred; each line is a message
            # to the triggerer's supervisor, thousands a minute: the wait logs what changes.
            self._seen = (task.reported_status, now)
            return
        previous = f" after {self._seen[0]} for {now - self._seen[1]:.0f} s" if self._seen else ""
        unknown = " (a status this provider does not know; waiting)" if task.status is TaskStatus.UNKNOWN else ""
        self.log.info(
            "MindVideo task %s is %s%s%s, %.0f s into the wait",
            task.task_id,
            task.reported_status,
            unknown,
            previous,
            now - self.started_at,
        )
        self._seen = (task.reported_status, now)

    async def on_kill(self) -> None:
        """The Airflow task was cleared or marked failed or successful while it waited (Airflow 3.3+ calls this).

        MindVideo has no cancel endpoint: the remote task keeps running and is charged. Say so.
        """
        log_still_running(
            self.log,
            [self.mindvideo_task_id],
            "The wait was stopped (the Airflow task was cleared, or marked failed or successful)",
        )

    def _learn(self, task: MindVideoTask) -> None:
        """Tell the triggerer's other waits how long a task of this model took, when this one saw it end."""
        now = time.time()
        if not task.is_terminal:
            self._last_running = now
        elif self.model is not None and task.status is TaskStatus.SUCCEEDED:
            # Failures end early for reasons of their own: only successes say how long the work takes.
            took = observed_duration(self._last_running, now, self.started_at)
            if took is not None:
                RECENT.record(self.model, took)

    def _next_delay(self, now: float, server_asked: float) -> float:
        planned = next_poll_delay(
            now - self.started_at, self.poll_interval, self.max_poll_interval, durations=RECENT.of(self.model)
        )
        delay = max(server_asked, planned)
        return delay if self.deadline is None else min(delay, max(0.0, self.deadline - now))

    def _event(
        self, status: str, task: MindVideoTask | None, message: str, error_type: str | None = None
    ) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "mindvideo_task_id": self.mindvideo_task_id,
                "task": _event_task(task) if task else None,
                "message": message,
                "error_type": error_type,
            }
        )

    @staticmethod
    def _describe(task: MindVideoTask) -> str:
        if task.status is TaskStatus.SUCCEEDED:
            return f"MindVideo task {task.task_id} succeeded with {len(task.output_urls)} output(s)"
        reason = f": {task.error_message}" if task.error_message else ""
        return f"MindVideo task {task.task_id} {task.status.value}{reason}"

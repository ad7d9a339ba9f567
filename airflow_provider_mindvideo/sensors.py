"""MindVideoTaskSensor: wait for a MindVideo task to finish and hand over its output URLs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException

from airflow_provider_mindvideo import DEFAULT_CONN_ID
from airflow_provider_mindvideo.client.cancellation import is_unfinished, log_still_running
from airflow_provider_mindvideo.client.errors import RemoteTaskFailedError, WaitTimeoutError
from airflow_provider_mindvideo.client.models import MindVideoTask
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.links import MindVideoOutputLink
from airflow_provider_mindvideo.outcomes import deliver, task_from_event
from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class MindVideoTaskSensor(BaseSensorOperator):
    """Wait for a MindVideo task to finish; return its output URLs.

    Fails with the remote error and the task's recent events when the task failed or was
    cancelled; with ``soft_fail=True`` (or ``never_fail=True``) it is skipped instead, whether the
    task ended before the first check or while waiting. Retrying cannot change a finished task,
    so these failures do not use the task's retries; to generate again after a remote failure,
    use :class:`~airflow_provider_mindvideo.operators.MindVideoGenerateOperator`.

    :param mindvideo_task_id: The task to wait for, e.g. ``submit.output``. (templated)
    :param mindvideo_conn_id: The MindVideo connection. (templated)
    :param deferrable: Wait in the triggerer, freeing the worker slot. Default:
        ``[operators] default_deferrable``.
    :param poke_interval: Seconds before the first re-check. Deferred, the interval then grows
        with the elapsed wait up to ``max_poll_interval``; in poke mode it is fixed (or grows
        with ``exponential_backoff``).
    :param max_poll_interval: The longest interval between two checks while deferred.
    :param timeout: Seconds before the sensor times out, across deferral (an absolute deadline).
    :param end_from_trigger: Deferred, end the task in the triggerer when the MindVideo task
        succeeds, with the same XComs, instead of resuming it on a worker: one worker run per
        wait instead of two. A failed, cancelled or empty task, a timeout or an error still
        resumes on a worker, with the rules above. Only for ``deferrable=True``; the sensor ends
        on a worker all the same when a downstream task maps over its output (unmapped), when it
        has ``outlets`` or ``do_xcom_push=False``: only a worker records those.

    XCom: ``return_value`` is the list of output URLs; ``mindvideo_task`` holds task id,
    request id, status, cost estimate and actual, output, and the error if any.

    Killed or cleared: MindVideo has no cancel endpoint, so the task waited for keeps running
    and is charged; the sensor's log says so.
    """

    template_fields: Sequence[str] = ("mindvideo_task_id", "mindvideo_conn_id")
    operator_extra_links = (MindVideoOutputLink(),)
    ui_color = "#e8dcff"
    # The status the last poke saw, for on_kill.
    _seen_status: str | None = None

    def __init__(
        self,
        *,
        mindvideo_task_id: str,
        mindvideo_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_poll_interval: float = 60.0,
        end_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 5.0)
        super().__init__(**kwargs)
        if end_from_trigger and not deferrable:
            raise ValueError(
                "end_from_trigger = True needs deferrable = True: only a wait in the triggerer can end there"
            )
        self.mindvideo_task_id = mindvideo_task_id
        self.mindvideo_conn_id = mindvideo_conn_id
        self.deferrable = deferrable
        self.max_poll_interval = max(max_poll_interval, self.poke_interval)
        self.end_from_trigger = end_from_trigger

    @cached_property
    def hook(self) -> MindVideoHook:
        return MindVideoHook(self.mindvideo_conn_id)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        task = self.hook.get_task(self.mindvideo_task_id)
        self._seen_status = task.reported_status
        if not task.is_terminal:
            self.log.info("MindVideo task %s is %s", task.task_id, task.reported_status)
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._deliver(context, task))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        task = self.hook.get_task(self.mindvideo_task_id)
        if task.is_terminal:
            return self._deliver(context, task)
        self.defer(
            trigger=MindVideoTaskTrigger.starting_now(
                task.task_id,
                self.mindvideo_conn_id,
                self.poke_interval,
                self.max_poll_interval,
                self.timeout,
                end_from_trigger=self._may_end_in_triggerer(context),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def _may_end_in_triggerer(self, context: Context) -> bool:
        """Whether ``end_from_trigger`` can end this task without losing what a worker records."""
        if not self.end_from_trigger:
            return False
        # The triggerer stores XComs and the state, nothing else: a mapped downstream's length
        # (of an unmapped upstream), asset events and a suppressed return value are the worker's.
        unmapped = context["ti"].map_index in (None, -1)
        has_dag: bool = self.has_dag()  # type: ignore[no-untyped-call]
        why_not = None
        if unmapped and has_dag and next(self.iter_mapped_dependants(), None) is not None:
            why_not = "a downstream task maps over its output"
        elif self.outlets:
            why_not = "it has outlets"
        elif not self.do_xcom_push:
            why_not = "do_xcom_push is False"
        if why_not:
            self.log.info("end_from_trigger: this sensor ends on a worker all the same, as %s", why_not)
        return why_not is None

    def execute_complete(self, context: Context, event: dict[str, Any] | str) -> list[str]:
        if not isinstance(event, dict):
            # A success the trigger meant to end in the triggerer (its payload is the state,
            # "success"), resumed here all the same: `dag.test()` runs triggers in line and resumes
            # every one. The event holds no task: look it up once.
            return self._deliver(context, self.hook.get_task(self.mindvideo_task_id))
        try:
            task = task_from_event(event)
        except WaitTimeoutError as exc:
            raise AirflowSensorTimeout(str(exc)) from exc
        return self._deliver(context, task)

    def on_kill(self) -> None:
        """Say that the remote task outlives this wait: MindVideo has no cancel endpoint."""
        if is_unfinished(self._seen_status):
            log_still_running(self.log, [self.mindvideo_task_id], f"Task {self.task_id} was killed while it waited")

    def _deliver(self, context: Context, task: MindVideoTask) -> list[str]:
        try:
            return deliver(context, self.hook, task, self.log)
        except RemoteTaskFailedError as exc:
            if self.soft_fail or self.never_fail:
                # Decided here, not left to BaseSensorOperator: its soft_fail handling wraps poke()
                # and the resumed method, but a task already finished at the deferrable sensor's
                # first check ends in execute(), outside both.
                flag = "soft_fail" if self.soft_fail else "never_fail"
                raise AirflowSkipException(f"{exc}; skipped instead of failing, as {flag}=True") from exc
            # A finished task stays finished: a retry of this sensor could only fail again.
            raise AirflowFailException(str(exc)) from exc

"""Operators that create one MindVideo task: submit only, or submit and wait for the output."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf

from airflow_provider_mindvideo import DEFAULT_CONN_ID
from airflow_provider_mindvideo.client.durations import RECENT, observed_duration
from airflow_provider_mindvideo.client.polling import check_poll_settings, next_poll_delay
from airflow_provider_mindvideo.links import (
    MindVideoGalleryLink,
    MindVideoModelDocsLink,
    MindVideoOutputLink,
    remember_push,
)
from airflow_provider_mindvideo.operators.templating import TEMPLATE_EXT, input_from_template, template_error
from airflow_provider_mindvideo.spend.arguments import check_budget_arguments
from airflow_provider_mindvideo.spend.ceiling import check_max_cost

# What only a running task needs (the hook, its HTTP client and models, the trigger, the
# submission rules) is imported where it is used: DAG files import this module at every parse.
if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import BaseOperatorLink, Context

    from airflow_provider_mindvideo.client.models import MindVideoTask
    from airflow_provider_mindvideo.hooks import MindVideoHook
    from airflow_provider_mindvideo.outputs.lineage import Lineage
    from airflow_provider_mindvideo.spend.location import SpendBooks
    from airflow_provider_mindvideo.spend.records import BudgetWindowExceededError

# The trigger enforces the deadline itself; Airflow's own deferral timeout is only a backstop.
_DEFERRAL_GRACE = timedelta(minutes=5)


class MindVideoSubmitOperator(BaseOperator):
    """Create a MindVideo generation task and return its id, paying once however often Airflow retries.

    Without ``idempotency_key``, the key is derived from the DAG run (dag_id, task_id, run_id,
    map_index) and the rendered request: a retry, a clear or a restarted worker gets the same
    remote task back without a second charge, while a retry after the remote task *failed*
    creates a new one. See :doc:`/paying-once`.

    :param model: The model slug, e.g. ``gpt-image-2``. (templated)
    :param input: The model's input, e.g. ``{"prompt": "...", "size": "16:9"}``; nested values
        are templated. Or the name of a ``.json`` / ``.json.j2`` file next to the DAG (or in its
        ``template_searchpath``), rendered with Jinja and read as one JSON object. Checked
        against the model's schema before anything is sent. (templated)
    :param idempotency_key: Send exactly this key instead of the derived one. (templated)
    :param mindvideo_conn_id: The MindVideo connection. (templated)
    :param max_generations: The most remote tasks this task instance may ever create (each try
        creates at most one, and only after the previous one failed). Default: ``retries + 1``.
    :param allow_unknown_model: Send a model slug this provider's catalogue does not know (a
        model newer than it). Without it such a slug fails before any request, naming the
        closest known ones.
    :param max_cost: The most this task instance may spend, all its tries together, in the
        API's cost unit. Before each create, its cost is predicted (the highest of the model's
        documented price and the costs the replayed earlier tasks of this task instance
        reported, estimates and actual costs) and counted with what earlier tries spent, each at
        that price or more; a create that could pass the ceiling is not sent and the task fails
        at once with :class:`~airflow_provider_mindvideo.client.errors.BudgetExceededError`, naming
        ``max_cost`` and the prediction -- also when an earlier try's task of the model ended
        without a readable ``cost_actual`` while no answer ever told one (the server never said
        what the model costs). None: no ceiling. See :mod:`airflow_provider_mindvideo.spend.ceiling`.
    :param budget: A budget of the connection's ``budgets`` extra this task's creates count
        against, besides the account's (settable in ``default_args``). Each create is reserved in
        the spend ledger at the amount ``max_cost`` holds it at before it is sent; one that would
        pass a budget window is not sent. See :doc:`/spend`.
    :param on_budget_exhausted: ``"fail"`` (default): a create refused by a budget fails the task
        at once with :class:`~airflow_provider_mindvideo.spend.records.BudgetWindowExceededError`
        (naming the budget, window, spent, reserved, limit and reset). ``"wait"``: the task defers
        (holding no worker slot) until the window resets, then tries again.

    XCom: ``return_value`` is the MindVideo task id; ``mindvideo_task`` holds task id, request
    id, model, status, cost estimate and the idempotency key used (never the input).

    Killed or cleared: MindVideo has no cancel endpoint, so a remote task already created keeps
    running and is charged; the task's log names it.
    """

    template_fields: Sequence[str] = ("model", "input", "idempotency_key", "mindvideo_conn_id")
    template_ext: Sequence[str] = TEMPLATE_EXT
    template_fields_renderers = {"input": "json"}
    operator_extra_links: Collection[BaseOperatorLink] = (MindVideoModelDocsLink(), MindVideoGalleryLink())
    ui_color = "#e8dcff"
    # What this try learned, for lineage and on_kill (the operator object of one try).
    _record: dict[str, Any] | None = None
    _books: SpendBooks | None = None
    _outputs: Sequence[str] = ()

    def __init__(
        self,
        *,
        model: str,
        input: Mapping[str, Any] | str,
        idempotency_key: str | None = None,
        mindvideo_conn_id: str = DEFAULT_CONN_ID,
        max_generations: int | None = None,
        allow_unknown_model: bool = False,
        max_cost: float | None = None,
        budget: str | None = None,
        on_budget_exhausted: str = "fail",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_budget_arguments(budget, on_budget_exhausted)
        if max_generations is not None and (isinstance(max_generations, bool) or max_generations < 1):
            raise ValueError(f"max_generations = {max_generations!r}: must be a whole number >= 1, or None")
        check_max_cost(max_cost)
        self.model = model
        self.input = input
        self.idempotency_key = idempotency_key
        self.mindvideo_conn_id = mindvideo_conn_id
        self.max_generations = max_generations
        self.allow_unknown_model = allow_unknown_model
        self.max_cost = max_cost
        self.budget = budget
        self.on_budget_exhausted = on_budget_exhausted

    @cached_property
    def hook(self) -> MindVideoHook:
        from airflow_provider_mindvideo.hooks import MindVideoHook

        return MindVideoHook(self.mindvideo_conn_id)

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        """Render field by field; a template that does not render fails the task at once, naming the field.

        A retry would render it the same way: a syntax error, an unknown filter or an undefined
        name (e.g. ``ds`` in a run without a logical date) spends no retries.
        """
        import jinja2

        env = jinja_env or self.get_template_env()
        for field in self.template_fields:
            try:
                self._do_render_template_fields(self, [field], context, env, set())
            except jinja2.TemplateError as exc:
                raise template_error(field, exc) from None

    def execute(self, context: Context) -> str:
        task, _ = self.submit(context)
        return task.task_id

    def execute_after_budget_wait(self, context: Context, event: Any = None) -> Any:
        """The budget window that refused the create has reset: try again, from the start."""
        return self.execute(context)

    def _wait_for_budget(self, error: BudgetWindowExceededError) -> None:
        """``on_budget_exhausted="wait"``: defer until the refusing window resets (no worker slot held)."""
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        refusal = error.refusal
        if self.on_budget_exhausted != "wait" or not refusal.could_ever_fit:
            raise error  # a create dearer than the whole limit never fits: waiting would not help
        self.log.warning("%s Waiting for the reset (on_budget_exhausted='wait').", error)
        self.defer(trigger=DateTimeTrigger(moment=refusal.window.resets_at), method_name="execute_after_budget_wait")

    def render_template(
        self,
        content: Any,
        context: Context,
        jinja_env: jinja2.Environment | None = None,
        seen_oids: set[int] | None = None,
    ) -> Any:
        if isinstance(content, str):
            return super().render_template(content, context, jinja_env, seen_oids)
        # Only a whole field names a template file: inside an input, a prompt or a URL that
        # ends in ".json" is text, not a file to load.
        file_endings = self.template_ext
        self.template_ext = ()
        try:
            return super().render_template(content, context, jinja_env, seen_oids)
        finally:
            self.template_ext = file_endings

    def submit(self, context: Context) -> tuple[MindVideoTask, dict[str, Any]]:
        """Validate, find or create this task instance's remote task, and record it in XCom."""
        from airflow_provider_mindvideo.client.catalog import validate_input
        from airflow_provider_mindvideo.client.errors import MindVideoError
        from airflow_provider_mindvideo.client.idempotency import task_instance_key
        from airflow_provider_mindvideo.client.submission import find_or_create, replay_explicit_key
        from airflow_provider_mindvideo.outcomes import XCOM_TASK_KEY
        from airflow_provider_mindvideo.spend.ceiling import Budget
        from airflow_provider_mindvideo.spend.records import BudgetWindowExceededError, CreateRecord

        # A .json / .json.j2 file (or a template) renders to JSON text: the key and the
        # request are derived from what it says, not from its spelling.
        request: Mapping[str, Any] = input_from_template(self.input)
        self.input = request
        validate_input(self.model, request, allow_unknown_model=self.allow_unknown_model)
        ti = context["ti"]
        # Counts what this try's creates and replays report: replays tell what earlier tries spent.
        budget = Budget(self.max_cost)
        # The connection's budgets (none: books that do nothing); an unknown budget name fails here, before any create.
        books = self._books = self.hook.spend_books(self.budget)

        def create(key: str) -> MindVideoTask:
            reservation = budget.reserve(self.model)  # raises before anything is sent
            try:
                # In the ledger at what the ceiling holds it at; a replayed key is the same row, never counted twice.
                books.reserve(CreateRecord.of(ti, key, self.model), budget.counted(reservation))
            except BudgetWindowExceededError:
                budget.release(reservation)
                raise
            try:
                task = self.hook.create_task(
                    self.model, request, idempotency_key=key, allow_unknown_model=self.allow_unknown_model
                )
            except MindVideoError as exc:
                if exc.http_status is not None and 400 <= exc.http_status < 500 and exc.http_status != 429:
                    budget.release(reservation)  # refused: nothing was charged
                    books.release(key)
                raise
            # Unless the API said it created it, it may be an earlier try's task: counted at the most
            # any answer says the model costs, whatever this one says.
            budget.settle(reservation, task.cost_estimate, task.cost_actual, earlier=not task.created)
            if task.is_terminal:  # an earlier try's task that ended tells what it was charged, or that no one said
                budget.finish(reservation, task.cost_estimate, task.cost_actual, task=task.task_id)
            settle_in(books, key, task)
            return task

        try:
            if self.idempotency_key is not None:  # an explicit key is checked, never silently replaced
                submitted = replay_explicit_key(create, self.idempotency_key)
            else:
                submitted = find_or_create(
                    create,
                    lambda generation: task_instance_key(ti, self.model, request, generation),
                    try_number=ti.try_number,
                    max_generations=self.max_generations or (self.retries or 0) + 1,
                    log=self.log,
                )
        except BudgetWindowExceededError as refused:
            self._wait_for_budget(refused)
            raise
        task, key = submitted.task, submitted.idempotency_key
        record = {
            "task_id": task.task_id,
            "request_id": task.request_id,
            "model": self.model,
            "status": task.reported_status,
            "cost_estimate": task.cost_estimate,
            "idempotency_key": key,
            "key_generation": submitted.generation,
        }
        remember_push(ti, XCOM_TASK_KEY, record)
        self._record = record
        self.log.info(
            "MindVideo task %s (%s) is %s; cost estimate %s",
            task.task_id,
            self.model,
            task.reported_status,
            task.cost_estimate,
        )
        return task, record

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage:
        """OpenLineage: the input's reference files in, the outputs out, and the ``mindvideo`` run facet.

        Read from what this try did (no API call, no XCom read): the run facet names the model,
        the MindVideo task, its cost estimate (and actual cost once finished) and the key
        generation; outputs are the stored files with ``download_to``, else the output URLs.
        """
        from airflow_provider_mindvideo.outputs.lineage import operator_lineage, reference_urls

        return operator_lineage(
            inputs=reference_urls(self.input),
            outputs=self._outputs,
            records=[self._record] if self._record else [],
        )

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Lineage:
        """As on complete: a generation that failed remotely is charged all the same, and the facet says so."""
        return self.get_openlineage_facets_on_complete(task_instance)


class MindVideoGenerateOperator(MindVideoSubmitOperator):
    """Create a MindVideo task and wait for its output, in one task: the shape for mapped pipelines.

    Takes :class:`MindVideoSubmitOperator`'s parameters and the same pay-once rules, plus:

    :param deferrable: Wait in the triggerer, freeing the worker slot. Default:
        ``[operators] default_deferrable``.
    :param poll_interval: Seconds before the first re-check; the interval then grows with the
        elapsed wait (a quarter of it), up to ``max_poll_interval``.
    :param max_poll_interval: The longest interval between two checks.
    :param timeout: Seconds to wait for the task to finish before failing (retryable: the next
        try finds the same remote task and waits again).
    :param download_to: Also save the outputs into this folder, as
        :class:`MindVideoDownloadOperator` does (default file names, ``overwrite=False``), and
        emit an asset event for it. An ``ObjectStoragePath`` URL. (templated)
    :param download_conn_id: The storage connection for ``download_to``. (templated)
    :param download_allow_private_urls: Let the download reach loopback, private, link-local
        and metadata addresses (e.g. the emulator on 127.0.0.1). Default: ``[mindvideo]
        allow_private_urls``, read when the task runs.

    XCom: ``return_value`` is the list of output URLs; ``mindvideo_task`` is the submit record
    plus status, cost_actual and output; with ``download_to``, ``mindvideo_files`` is the
    manifest of saved files.
    """

    template_fields: Sequence[str] = (*MindVideoSubmitOperator.template_fields, "download_to", "download_conn_id")
    operator_extra_links = (MindVideoOutputLink(), MindVideoModelDocsLink(), MindVideoGalleryLink())

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        timeout: float | timedelta = timedelta(hours=2),
        download_to: str | None = None,
        download_conn_id: str | None = None,
        download_allow_private_urls: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if download_to is not None:
            from airflow_provider_mindvideo.operators.download import outlets_for

            kwargs.setdefault("outlets", outlets_for(download_to))
        super().__init__(**kwargs)
        check_poll_settings(poll_interval, max_poll_interval)
        self.download_to = download_to
        self.download_conn_id = download_conn_id
        self.download_allow_private_urls = download_allow_private_urls
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)

    def execute(self, context: Context) -> list[str]:  # type: ignore[override]
        if self.download_to:
            from airflow_provider_mindvideo.operators.download import check_folder

            check_folder(self.download_to, self.download_conn_id)  # before paying, not after
        task, record = self.submit(context)
        if not task.is_terminal and self.deferrable:
            from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger

            self.defer(
                trigger=MindVideoTaskTrigger.starting_now(
                    task.task_id,
                    self.mindvideo_conn_id,
                    self.poll_interval,
                    self.max_poll_interval,
                    self.timeout,
                    model=self.model,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout) + _DEFERRAL_GRACE,
            )
        started_at = time.time()
        deadline = started_at + self.timeout
        return self._finish(context, self._wait(task, started_at, deadline), record)

    def _wait(self, task: MindVideoTask, started_at: float, deadline: float) -> MindVideoTask:
        """Poll on the worker (``deferrable=False``) with the trigger's schedule."""
        from airflow_provider_mindvideo.client.errors import WaitTimeoutError

        last_running = started_at  # the submit's answer saw it unfinished
        # A replayed create may name an earlier try's task: its duration from now says nothing.
        fresh = task.created is True
        while not task.is_terminal:
            now = time.time()
            if now >= deadline:
                raise WaitTimeoutError(f"MindVideo task {task.task_id} did not finish within {self.timeout:.0f} s")
            delay = next_poll_delay(
                now - started_at, self.poll_interval, self.max_poll_interval, durations=RECENT.of(self.model)
            )
            time.sleep(min(deadline - now, delay))
            task = self.hook.get_task(task.task_id, within=max(1.0, deadline - time.time()))
            if not task.is_terminal:
                last_running = time.time()
        if fresh and task.status.value == "succeeded":
            # A worker process may wait for more than one task (tests, a local executor): it learns too.
            took = observed_duration(last_running, time.time(), started_at)
            if took is not None:
                RECENT.record(self.model, took)
        return task

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        from airflow_provider_mindvideo.outcomes import XCOM_TASK_KEY, task_from_event

        ti = context["ti"]
        # The submit record was pushed before deferring; XCom is what survives the deferral.
        record = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_TASK_KEY, map_indexes=ti.map_index)
        return self._finish(context, task_from_event(event), record)

    def _finish(self, context: Context, task: MindVideoTask, record: dict[str, Any] | None) -> list[str]:
        from airflow_provider_mindvideo.operators.download import save_outputs
        from airflow_provider_mindvideo.outcomes import deliver

        self._record = {**(record or {}), **task.summary()}
        if record and record.get("idempotency_key"):
            # Ended: it counts max(estimate, actual) from now on. After a deferral this is a new
            # operator object: the books are opened again (nothing is opened without budgets).
            books = self._books or self.hook.spend_books(self.budget)
            settle_in(books, record["idempotency_key"], task)
        urls = deliver(context, self.hook, task, self.log, record)
        self._outputs = urls
        if self.download_to:
            files = save_outputs(
                self,
                context,
                urls,
                self.download_to,
                self.download_conn_id,
                task.task_id,
                allow_private_urls=self.download_allow_private_urls,
            )
            self._outputs = [stored.path for stored in files]
        return urls

    def on_kill(self) -> None:
        """Say which remote task outlives this one: MindVideo has no cancel endpoint."""
        from airflow_provider_mindvideo.client.cancellation import is_unfinished, log_still_running

        record = self._record
        if record and is_unfinished(record.get("status")):
            log_still_running(self.log, [record["task_id"]], f"Task {self.task_id} was killed while it waited")


def settle_in(books: SpendBooks, key: str, task: MindVideoTask) -> None:
    """The create's answer (or its ended task) told what it costs: the ledger counts ``max(estimate, actual)``."""
    from airflow_provider_mindvideo.spend.records import Settlement

    books.settle_many([Settlement.told_by(key, task)])

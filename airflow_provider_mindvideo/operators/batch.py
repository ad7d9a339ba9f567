"""MindVideoBatchGenerateOperator: thousands of generations in one task instance, paying once per item."""

from __future__ import annotations

import codecs
import contextlib
import json
import time
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, BaseOperator, ObjectStoragePath, conf

from airflow_provider_mindvideo import DEFAULT_CONN_ID
from airflow_provider_mindvideo.batch.outputs import (
    DOWNLOAD_CONCURRENCY,
    files_summary,
    save_item_outputs,
    still_stored,
)
from airflow_provider_mindvideo.batch.plan import (
    DOWNLOAD_FAILED,
    SUCCEEDED,
    BatchSummary,
    Entry,
    ItemResult,
    check_max_failed,
    dump_manifest,
    dump_work_list,
    entries_from_csv,
    entries_from_jsonl,
    entries_from_list,
    failure_report,
    load_manifest,
    summarize,
    too_many_failed,
    work_list,
)
from airflow_provider_mindvideo.batch.records import (
    default_manifest_url,
    folder_problem,
    read_owner,
    work_list_url,
    write_owner,
)
from airflow_provider_mindvideo.client import errors
from airflow_provider_mindvideo.client.deadlines import Deadline
from airflow_provider_mindvideo.client.errors import (
    BatchItemsFailedError,
    BatchItemsFailedForGoodError,
    InputValidationError,
    MindVideoError,
    ResultPathError,
)
from airflow_provider_mindvideo.client.polling import check_poll_settings
from airflow_provider_mindvideo.links import MindVideoGalleryLink, MindVideoModelDocsLink
from airflow_provider_mindvideo.operators.download import check_folder, outlets_for, private_urls_allowed
from airflow_provider_mindvideo.outputs import storage
from airflow_provider_mindvideo.outputs.downloads import download_client, record_output
from airflow_provider_mindvideo.spend.arguments import check_budget_arguments
from airflow_provider_mindvideo.spend.ceiling import check_max_cost

if TYPE_CHECKING:
    import httpx
    from airflow.sdk import BaseOperatorLink, Context

#: XCom key of the batch's summary, pushed also when the batch fails (``return_value`` holds it on success).
XCOM_BATCH_KEY = "mindvideo_batch"
# The trigger enforces the batch's deadline itself; Airflow's own deferral timeout is only a backstop.
_DEFERRAL_GRACE = timedelta(minutes=10)


class MindVideoBatchGenerateOperator(BaseOperator):
    """Generate a whole batch of images or videos in one task instance: one deferral, one manifest, one summary.

    For thousands of prompts, where a mapped :class:`MindVideoGenerateOperator` would cost three
    task instances per prompt and stops at ``[core] max_map_length``. The operator checks every
    input, writes the work list to object storage and defers; the trigger
    (:class:`~airflow_provider_mindvideo.batch.trigger.MindVideoBatchTrigger`) creates the
    tasks and waits for them in the triggerer, without a worker slot, and writes the manifest.

    **Pays once per item.** Each item's Idempotency-Key derives from the task instance, the
    item's position and its content. A retry, a clear, a killed worker or a restarted
    triggerer replays the keys (free) and re-attaches to the tasks already created: items that
    succeeded are never generated again; items whose remote task failed are generated again,
    under their next key generation, on the next try -- only those, and at most
    ``max_generations`` times in all. A try creates at most one task per item.

    :param inputs: The model inputs: a list of objects such as ``{"prompt": "..."}``, or an
        XComArg giving one. An item may name its own model with a ``"model"`` key (or take the
        form ``{"model": "...", "input": {...}}``). (templated)
    :param inputs_path: Instead of ``inputs``: an ``ObjectStoragePath`` URL of a JSONL file (one
        input per line) or a ``.csv`` file (a header row naming the fields, one input per row; a
        ``model`` column names the item's model; empty cells are left out; cells of numeric,
        boolean, array or object fields are read as JSON). (templated)
    :param inputs_encoding: The text encoding of ``inputs_path`` (e.g. ``cp1252`` for a CSV
        saved by Excel on Windows). Default ``utf-8``; a byte order mark is tolerated. A file
        that is not in it fails before anything is sent, naming the line and column.
    :param model: The model slug for items that do not name one, e.g. ``gpt-image-2``. (templated)
    :param result_path: Where the manifest goes: an ``ObjectStoragePath`` URL of a JSONL file,
        one row per item (input line, MindVideo task id, status, cost estimate and actual,
        output URLs, stored files, error, and every remote task the item has cost). The work
        list is written beside it (``<name>.work.jsonl``), for the trigger to read, and so are
        the creates in flight (``<name>.intents/``, removed when the batch ends), the task
        instance it belongs to (``<name>.owner.json``), the run of the trigger that holds the
        batch (``<name>.lease.json``) and the tasks of items the inputs no longer hold
        (``<name>.earlier.jsonl``). Each task instance needs its own path (the
        default gives one): a path another task instance used is refused before anything is
        sent, and so is a folder. Default:
        ``<[mindvideo] batch_folder>/<dag_id>/<run_id>/<task_id>[-<map_index>]/manifest.jsonl``,
        where ``batch_folder`` defaults to ``file://$AIRFLOW_HOME/mindvideo/batches``: set it (or
        ``result_path``) to shared storage (``s3://...``) when workers and triggerers run on
        different machines. (templated)
    :param storage_conn_id: The storage connection for ``inputs_path``, ``result_path`` and
        the work list, if they need one. (templated)
    :param max_active: The most items between their first create and their end at once, on top
        of the connection's own ``max_concurrency`` / ``max_requests_per_second``. At most
        1,000: the triggerer's loop shares that many between all its batches (a larger value is
        clamped, with a warning; :mod:`airflow_provider_mindvideo.batch.sharing`).
    :param max_failed: How many items may fail without failing the task: a count (``int``) or
        a fraction of the items (``float``, e.g. ``0.05``). Default ``0``. Failed means any
        outcome but ``succeeded``: ``failed``, ``over_budget``, ``timed_out``, ``error``,
        ``download_failed``. The manifest and the summary always say which items failed and why.
    :param max_cost: The most this task instance may spend, all its tries together, in the API's
        cost unit (a finite number >= 0). Before each create the next item's cost is predicted
        (the highest cost estimate the answers told so far for its model, else the model's
        documented price) and held until the answer settles it; a model's first create goes
        alone, so that its answer tells the price before more are sent. An item that does not
        fit only because money is held for creates in flight waits for their answers; one that
        would not fit even then is not created and is reported ``over_budget``. Every task
        earlier tries created counts, whatever the inputs say now. None: no ceiling. What
        remains: a price that depends on the input and rises above every earlier answer can
        pass the ceiling by at most that rise times the creates in flight (``max_active``).
    :param budget: A budget of the connection's ``budgets`` extra the items count against,
        besides the account's (settable in ``default_args``). Each create is reserved in the
        spend ledger at what ``max_cost`` holds it at before it is sent; an item a budget window
        refuses is ``over_budget`` (its error names the budget, window, spent, reserved, limit and
        reset) and the batch goes on with what fits. See :doc:`/spend`.
    :param on_budget_exhausted: ``"fail"`` (default): refused items are ``over_budget``.
        ``"wait"``: they wait in the triggerer (no worker slot) until the window resets, within
        ``timeout``.
    :param download_to: Also save each succeeded item's outputs into this folder (an
        ``ObjectStoragePath`` URL), as :class:`MindVideoDownloadOperator` does (default file
        names, ``overwrite=False``), :data:`DOWNLOAD_CONCURRENCY` at a time. The trigger saves
        each item's as it finishes, while the others generate (the triggerer must reach the
        folder, as it reaches ``result_path``); the worker then saves only what is missing
        (a save that met a 5xx or the store's trouble). Resumable: files an earlier try, or a
        triggerer that died, stored are kept and not written again. Emits one asset event for
        the folder. (templated)
    :param download_conn_id: The storage connection for ``download_to``. (templated)
    :param download_allow_private_urls: Let downloads reach loopback and private addresses (the
        emulator). Default: ``[mindvideo] allow_private_urls``.
    :param max_generations: The most remote tasks one item may ever cost. Default: ``retries + 1``.
    :param timeout: Seconds (or a ``timedelta``) the batch may take, creating and waiting;
        items not finished by then are ``timed_out`` (the next try waits for them again).
    :param poll_interval: Seconds before an item's first re-check; intervals grow with its wait.
    :param max_poll_interval: The longest interval between two checks of one item.
    :param progress_interval: Seconds between two progress lines in the triggerer's log (done,
        failed, in flight, waiting, spend so far, time left).
    :param mindvideo_conn_id: The MindVideo connection. (templated)
    :param allow_unknown_model: Send model slugs this provider's catalogue does not know.

    Every item is checked against its model's schema before anything is sent: if any is
    invalid, the task fails naming every invalid item by its line, and nothing is created.

    XCom: ``return_value`` (and ``mindvideo_batch``, pushed also when the task fails) is the
    summary: ``items``, ``counts`` per outcome, ``failed``, ``retryable_failures``,
    ``cost_estimate`` and ``cost_actual`` totals, ``max_cost`` and ``manifest`` (its URL). Never
    the rows: they are in the manifest.

    Fails with :class:`~airflow_provider_mindvideo.client.errors.BatchItemsFailedError` (retryable)
    when more items failed than ``max_failed`` allows, or
    :class:`~airflow_provider_mindvideo.client.errors.BatchItemsFailedForGoodError` when no retry
    could change that.
    """

    template_fields: Sequence[str] = (
        "model",
        "inputs",
        "inputs_path",
        "result_path",
        "storage_conn_id",
        "download_to",
        "download_conn_id",
        "mindvideo_conn_id",
    )
    template_fields_renderers = {"inputs": "json"}
    operator_extra_links: Collection[BaseOperatorLink] = (MindVideoModelDocsLink(), MindVideoGalleryLink())
    ui_color = "#e8dcff"

    def __init__(
        self,
        *,
        model: str | None = None,
        inputs: Any = None,
        inputs_path: str | None = None,
        inputs_encoding: str = "utf-8",
        result_path: str | None = None,
        storage_conn_id: str | None = None,
        max_active: int = 100,
        max_failed: int | float = 0,
        max_cost: float | None = None,
        download_to: str | None = None,
        download_conn_id: str | None = None,
        download_allow_private_urls: bool | None = None,
        max_generations: int | None = None,
        timeout: float | timedelta = timedelta(hours=24),
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        progress_interval: float = 60.0,
        mindvideo_conn_id: str = DEFAULT_CONN_ID,
        allow_unknown_model: bool = False,
        budget: str | None = None,
        on_budget_exhausted: str = "fail",
        **kwargs: Any,
    ) -> None:
        if download_to is not None:
            kwargs.setdefault("outlets", outlets_for(download_to))
        super().__init__(**kwargs)
        if (inputs is None) == (inputs_path is None):
            raise ValueError("Give exactly one of inputs (a list or an XComArg) and inputs_path (a JSONL or CSV URL)")
        if isinstance(max_active, bool) or not isinstance(max_active, int) or max_active < 1:
            raise ValueError(f"max_active = {max_active!r}: must be a whole number >= 1")
        check_max_failed(max_failed)
        check_max_cost(max_cost)
        check_budget_arguments(budget, on_budget_exhausted)
        if max_generations is not None and (isinstance(max_generations, bool) or max_generations < 1):
            raise ValueError(f"max_generations = {max_generations!r}: must be a whole number >= 1, or None")
        check_poll_settings(poll_interval, max_poll_interval)
        if progress_interval <= 0:
            raise ValueError(f"progress_interval = {progress_interval!r}: must be > 0 seconds")
        self.model = model
        self.inputs = inputs
        self.inputs_path = inputs_path
        try:
            # 'hex', 'rot13', 'zlib' are codecs too, but no text encoding: bytes.decode refuses them.
            text_encoding = codecs.lookup(inputs_encoding)._is_text_encoding
        except (LookupError, TypeError):
            text_encoding = False
        if not text_encoding:
            raise ValueError(f"inputs_encoding = {inputs_encoding!r}: not a text encoding Python knows")
        self.inputs_encoding = inputs_encoding
        self.result_path = result_path
        self.storage_conn_id = storage_conn_id
        self.max_active = max_active
        self.max_failed = max_failed
        self.max_cost = max_cost
        self.download_to = download_to
        self.download_conn_id = download_conn_id
        self.download_allow_private_urls = download_allow_private_urls
        self.max_generations = max_generations
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.progress_interval = progress_interval
        self.mindvideo_conn_id = mindvideo_conn_id
        self.allow_unknown_model = allow_unknown_model
        self.budget = budget
        self.on_budget_exhausted = on_budget_exhausted

    def execute(self, context: Context) -> None:
        """Read and check every input, write the work list, and hand the batch to the triggerer."""
        ti = context["ti"]
        source = self.inputs_path or "inputs"
        items = work_list(self._entries(), self.model, ti, allow_unknown_model=self.allow_unknown_model, source=source)
        result_path = self.result_path or default_result_path(ti)
        self._claim(result_path, ti)
        if self.download_to:
            check_folder(self.download_to, self.download_conn_id)
        # The budget's name and the ledger, checked before the batch is handed on (nothing opened without budgets).
        from airflow_provider_mindvideo.hooks import MindVideoHook

        MindVideoHook(self.mindvideo_conn_id).spend_books(self.budget)
        work_path = work_list_path(result_path)
        storage.replace_text(self._storage(work_path), dump_work_list(items))
        self.log.info(
            "MindVideo batch of %d item(s) checked; work list at %s, manifest to %s", len(items), work_path, result_path
        )
        # Imported here: the trigger's machinery (hooks, protocol, models) would otherwise weigh on
        # every DAG file that names this operator, parsed far more often than it runs.
        from airflow_provider_mindvideo.batch.trigger import MindVideoBatchTrigger

        started = time.time()
        self.defer(
            trigger=MindVideoBatchTrigger(
                work_path,
                result_path,
                storage_conn_id=self.storage_conn_id,
                mindvideo_conn_id=self.mindvideo_conn_id,
                try_number=ti.try_number,
                max_generations=self.max_generations or (self.retries or 0) + 1,
                max_active=self.max_active,
                max_cost=self.max_cost,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                started_at=started,
                deadline=started + self.timeout,
                progress_interval=self.progress_interval,
                allow_unknown_model=self.allow_unknown_model,
                download_to=self.download_to,
                download_conn_id=self.download_conn_id,
                download_allow_private_urls=private_urls_allowed(self.download_allow_private_urls),
                budget=self.budget,
                on_budget_exhausted=self.on_budget_exhausted,
                creator={"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "map_index": ti.map_index},
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) + _DEFERRAL_GRACE,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Save outputs (``download_to``), record the summary, and judge it against ``max_failed``."""
        from airflow_provider_mindvideo.batch.trigger import DONE

        if event.get("status") != DONE or not event.get("summary"):
            error_class = getattr(errors, str(event.get("error_type")), MindVideoError)
            if not (isinstance(error_class, type) and issubclass(error_class, MindVideoError)):
                error_class = MindVideoError
            raise error_class(event.get("message") or f"MindVideo batch ended with {event.get('status')!r}")
        summary = BatchSummary.from_xcom(event["summary"])
        rows: list[ItemResult] | None = None
        if self.download_to:
            rows = self._read_manifest(summary.manifest)
            if self._save_outputs(context, rows, _save_deadline(event.get("deadline"), self.timeout)):
                storage.replace_text(self._storage(summary.manifest), dump_manifest(rows))
                summary = summarize(rows, summary.manifest, max_cost=summary.max_cost, spent=summary.cost_estimate)
        record = summary.to_xcom()
        context["ti"].xcom_push(key=XCOM_BATCH_KEY, value=record)
        counts = ", ".join(f"{count} {outcome}" for outcome, count in summary.counts.items() if count)
        ceiling = f" (max_cost {summary.max_cost:g})" if summary.max_cost is not None else ""
        self.log.info(
            "MindVideo batch: %d item(s): %s; cost estimate %g%s, actual %g; manifest %s",
            summary.items,
            counts,
            summary.cost_estimate,
            ceiling,
            summary.cost_actual,
            summary.manifest,
        )
        if too_many_failed(summary, self.max_failed):
            rows = rows if rows is not None else self._read_manifest(summary.manifest)
            error = BatchItemsFailedError if summary.retryable_failures else BatchItemsFailedForGoodError
            what = "the next try generates the failed items again" if summary.retryable_failures else "no retry helps"
            raise error(
                f"{summary.failed} of {summary.items} item(s) failed, more than max_failed = {self.max_failed!r} "
                f"allows ({what}); manifest {summary.manifest}:\n{failure_report(rows)}"
            )
        return record

    # -- the parts ---------------------------------------------------------------------------

    def _entries(self) -> list[Entry]:
        if self.inputs_path is None:
            inputs = self.inputs
            if isinstance(inputs, str):  # a template that rendered a JSON list
                try:
                    inputs = json.loads(inputs)
                except json.JSONDecodeError as exc:
                    raise InputValidationError(f"inputs: a text that is not a JSON list ({exc.msg})") from None
            return entries_from_list(inputs)
        text = self._inputs_text(self.inputs_path)
        if self.inputs_path.lower().endswith(".csv"):
            try:
                return entries_from_csv(text, self.model)
            except InputValidationError as exc:
                raise InputValidationError(f"inputs_path = {self.inputs_path!r}: {exc}") from None
        return entries_from_jsonl(text)

    def _inputs_text(self, url: str) -> str:
        path = self._storage(url)
        if not storage.exists(path):
            raise InputValidationError(f"inputs_path = {url!r}: there is no such file")
        data: bytes = path.fs.cat_file(path.path)
        # utf-8-sig: spreadsheets' "CSV UTF-8" starts with a byte order mark.
        encoding = "utf-8-sig" if codecs.lookup(self.inputs_encoding).name == "utf-8" else self.inputs_encoding
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as exc:
            start = data.rfind(b"\n", 0, exc.start) + 1
            line = data.count(b"\n", 0, exc.start) + 1
            column = len(data[start : exc.start].decode(encoding, errors="replace")) + 1
            raise InputValidationError(
                f"inputs_path = {url!r}: line {line}, column {column}: byte {data[exc.start : exc.start + 1]!r} is "
                f"not {self.inputs_encoding} text; save the file as UTF-8, or pass its encoding as inputs_encoding "
                "(e.g. 'cp1252' for Excel on Windows). Nothing was sent"
            ) from None

    def _claim(self, result_path: str, ti: Any) -> None:
        """Make ``result_path`` this task instance's, before anything is sent.

        A folder cannot be a manifest; and two task instances writing one manifest would
        overwrite each other's record of what was paid (a retry of either would then spend
        again): a path another task instance claimed is refused.
        """
        target = self._storage(result_path)
        if storage.exists(target) and target.is_dir():
            raise ResultPathError(folder_problem(result_path))
        owner = {
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
            "run_id": ti.run_id,
            "map_index": -1 if ti.map_index is None else ti.map_index,
        }
        claimed = read_owner(result_path, self.storage_conn_id)
        if claimed is not None and claimed != owner:
            described = ", ".join(f"{name}={claimed.get(name)!r}" for name in owner)
            raise ResultPathError(
                f"result_path = {result_path!r}: belongs to another task instance ({described}); give each task "
                "instance its own path (the default does; or template it with {{ run_id }} and {{ ti.map_index }}). "
                "Nothing was sent"
            )
        if claimed is None:
            write_owner(result_path, self.storage_conn_id, owner)

    def _storage(self, url: str) -> ObjectStoragePath:
        return ObjectStoragePath(url, conn_id=self.storage_conn_id)

    def _read_manifest(self, url: str) -> list[ItemResult]:
        text = storage.read_text(self._storage(url))
        if text is None:
            raise MindVideoError(f"The batch's manifest {url} is missing; the next try writes it again")
        return load_manifest(text, f"The batch's manifest {url}")

    def _save_outputs(self, context: Context, rows: list[ItemResult], deadline: Deadline) -> bool:
        """Save the succeeded items' outputs the trigger did not (or that are gone since), a few at a time.

        The trigger saves each item's outputs as it finishes; this saves only what is missing
        (a batch from a trigger without ``download_to``, a save that met the store's trouble,
        files removed since). Returns whether any row changed.
        """
        assert self.download_to is not None
        folder = ObjectStoragePath(self.download_to, conn_id=self.download_conn_id)
        succeeded = [row for row in rows if row.status == SUCCEEDED]
        allow_private = private_urls_allowed(self.download_allow_private_urls)
        with (
            download_client(allow_private_urls=allow_private) as client,
            ThreadPoolExecutor(max_workers=DOWNLOAD_CONCURRENCY) as pool,
            _cancelled_on_exit(deadline),
        ):
            stored = pool.map(lambda row: still_stored(row.files, row.output_urls, self.download_conn_id), succeeded)
            todo = [row for row, kept in zip(succeeded, stored, strict=True) if not kept]
            saves = pool.map(lambda row: _save_row(client, folder, row, deadline), todo)
            for row, files in zip(todo, saves, strict=True):
                for file in files:
                    self.log.info(
                        "%s %s (%d bytes)", "Saved" if file["written"] else "Kept", file["path"], file["bytes"]
                    )
                if row.status == DOWNLOAD_FAILED:
                    self.log.warning("Line %d: %s", row.line, row.error)
        files = [file for row in rows if row.status == SUCCEEDED for file in row.files]
        for file in files:  # stored by the trigger or here: this task's outputs either way
            record_output(folder, file["path"])
        summary = files_summary(files)
        destination = Asset(self.download_to)
        for outlet in self.outlets:
            if isinstance(outlet, AssetAlias):
                context["outlet_events"][outlet].add(destination, extra=summary)
            elif isinstance(outlet, Asset) and outlet.uri == destination.uri:
                context["outlet_events"][outlet].extra.update(summary)
        return bool(todo)


def _save_row(
    client: httpx.Client, folder: ObjectStoragePath, row: ItemResult, deadline: Deadline
) -> list[dict[str, Any]]:
    """One item's outputs; a failure marks the row ``download_failed`` instead of stopping the others."""
    try:
        # Reported to lineage below with the trigger's files, once each.
        row.files = save_item_outputs(
            client, folder, row.output_urls, row.task_id, record_lineage=False, deadline=deadline
        )
    except MindVideoError as exc:
        row.status, row.error, row.retryable = DOWNLOAD_FAILED, str(exc), exc.retryable
        return []
    except OSError as exc:  # the store's trouble with this item (a name, a quota): max_failed judges it
        row.status, row.error, row.retryable = DOWNLOAD_FAILED, f"Saving the outputs failed: {exc!r}", True
        return []
    return row.files


#: What the worker's saves get when the batch's deadline has passed (the trigger met trouble saving).
_SAVE_GRACE = 600.0


def _save_deadline(batch_deadline: Any, timeout: float) -> Deadline:
    """When the worker's saves must end: the batch's deadline, but at least :data:`_SAVE_GRACE` from now."""
    left = float(batch_deadline) - time.time() if isinstance(batch_deadline, int | float) else timeout
    return Deadline(time.monotonic() + max(left, _SAVE_GRACE))


@contextlib.contextmanager
def _cancelled_on_exit(deadline: Deadline) -> Iterator[None]:
    # An error (Airflow's execution_timeout, a kill) must not wait for downloads still running in
    # the pool's threads: their next read fails instead.
    try:
        yield
    finally:
        deadline.cancel()


def default_result_path(ti: Any) -> str:
    """``<[mindvideo] batch_folder>/<dag_id>/<run_id>/<task_id>[-<map_index>]/manifest.jsonl``."""
    folder = conf.get("mindvideo", "batch_folder", fallback=None)
    return default_manifest_url(folder, ti.dag_id, ti.run_id, ti.task_id, ti.map_index)


#: Where the work list goes: beside the manifest (``manifest.jsonl`` -> ``manifest.work.jsonl``).
work_list_path = work_list_url

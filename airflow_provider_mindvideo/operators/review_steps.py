"""The steps of a review around its pages: find the items; merge the pages' decisions, regenerating the rejected."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_mindvideo import DEFAULT_CONN_ID, storage
from airflow_provider_mindvideo.budget import Budget, catalogue_price
from airflow_provider_mindvideo.downloads import XCOM_FILES_KEY, download_client, store_outputs
from airflow_provider_mindvideo.errors import InputValidationError, MindVideoError
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.models import MindVideoTask, TaskStatus
from airflow_provider_mindvideo.outcomes import XCOM_TASK_KEY
from airflow_provider_mindvideo.polling import next_poll_delay
from airflow_provider_mindvideo.review import (
    Decision,
    ReviewItem,
    ReviewState,
    decisions_of_pages,
    items_from_batch_manifest,
    items_from_generated,
    manifest_row,
    regenerated_item,
    regeneration_input,
    regeneration_key,
    review_pages,
)
from airflow_provider_mindvideo.review_page import DEFAULT_PAGE_SIZE

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom key of the review's state after a step (the last round's result also returns it). Before
#: the last round a step *returns* the next round's pages: Airflow maps only over return values.
XCOM_REVIEW_STATE_KEY = "mindvideo_review"
#: XCom key of the review manifest: one row per decision, with who decided and when.
XCOM_REVIEW_MANIFEST_KEY = "mindvideo_review_manifest"


class MindVideoReviewItemsOperator(BaseOperator):
    """Find the generated outputs to review and split them into pages (the first step of :func:`review_rounds`).

    Where the items come from (one of):

    :param generate_task_id: A (mapped) :class:`MindVideoGenerateOperator`, or the sensor of a
        Submit + Sensor pair: its ``mindvideo_task`` records by map index. Needs ``inputs``.
    :param inputs: The inputs that task was mapped over (the prompts shown). (templated)
    :param save_task_id: The (mapped) task that saved the outputs (its ``mindvideo_files``);
        default: ``generate_task_id`` (a Generate operator with ``download_to``).
    :param key_task_id: The task that created the remote tasks: a rejected item is generated
        again as the next generation of the idempotency key it recorded. Default:
        ``generate_task_id`` (for Submit + Sensor, pass the Submit task).
    :param batch_manifest: The manifest of a :class:`MindVideoBatchGenerateOperator`: its URL,
        or the batch's summary (``batch.output``). Its work list, beside it, gives each row's
        input; only succeeded rows are reviewed, and a rejected row is generated again as the
        next generation of the batch item's own key. (templated)
    :param storage_conn_id: The storage connection for ``batch_manifest``. (templated)
    :param page_size: The most items one page shows.

    XCom: ``return_value`` is the pages of round 1 (the page tasks map over them);
    ``mindvideo_review`` the review's state before round 1 (``pending``: the items).
    """

    template_fields: Sequence[str] = ("inputs", "batch_manifest", "storage_conn_id")
    ui_color = "#e8dcff"

    def __init__(
        self,
        *,
        generate_task_id: str | None = None,
        inputs: Any = None,
        save_task_id: str | None = None,
        key_task_id: str | None = None,
        batch_manifest: Any = None,
        storage_conn_id: str | None = None,
        max_rounds: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (generate_task_id is None) == (batch_manifest is None):
            raise ValueError("A review needs exactly one of generate_task_id (with inputs) and batch_manifest")
        if generate_task_id is not None and inputs is None:
            raise ValueError("generate_task_id needs inputs: the list the generation was mapped over")
        self.generate_task_id = generate_task_id
        self.inputs = inputs
        self.save_task_id = save_task_id
        self.key_task_id = key_task_id
        self.batch_manifest = batch_manifest
        self.storage_conn_id = storage_conn_id
        self.max_rounds = max_rounds
        self.page_size = page_size

    def execute(self, context: Context) -> list[dict[str, Any]]:
        items = self.batch_items() if self.batch_manifest is not None else self.generated_items(context)
        pages = review_pages(items, round=1, max_rounds=self.max_rounds, page_size=self.page_size)
        state = ReviewState(round=0, max_rounds=self.max_rounds, pending=items)
        context["ti"].xcom_push(key=XCOM_REVIEW_STATE_KEY, value=state.to_xcom())
        self.log.info("%d item(s) to review, on %d page(s) of at most %d", len(items), len(pages), self.page_size)
        return pages

    def generated_items(self, context: Context) -> list[ReviewItem]:
        ti = context["ti"]
        assert self.generate_task_id is not None
        inputs = list(self.inputs or [])
        indexes = list(range(len(inputs)))
        records = _as_list(ti.xcom_pull(task_ids=self.generate_task_id, key=XCOM_TASK_KEY, map_indexes=indexes))
        files = _as_list(
            ti.xcom_pull(task_ids=self.save_task_id or self.generate_task_id, key=XCOM_FILES_KEY, map_indexes=indexes)
        )
        key_task_id = self.key_task_id or self.generate_task_id
        key_records = (
            _as_list(ti.xcom_pull(task_ids=key_task_id, key=XCOM_TASK_KEY, map_indexes=indexes))
            if key_task_id != self.generate_task_id
            else None
        )
        return items_from_generated(
            inputs,
            records,
            files if any(entry is not None for entry in files) else None,
            key_records,
            dag_id=ti.dag_id,
            task_id=key_task_id,
            run_id=ti.run_id,
        )

    def batch_items(self) -> list[ReviewItem]:
        from airflow_provider_mindvideo.operators.batch import work_list_path

        manifest = self.batch_manifest
        if isinstance(manifest, Mapping):  # the batch's summary
            manifest = manifest.get("manifest")
        if not isinstance(manifest, str) or not manifest:
            raise InputValidationError(
                f"review: batch_manifest = {manifest!r}: must be the manifest's URL or the batch's summary"
            )
        rows = read_jsonl(ObjectStoragePath(manifest, conn_id=self.storage_conn_id), manifest)
        work = read_jsonl(ObjectStoragePath(work_list_path(manifest), conn_id=self.storage_conn_id), manifest)
        return items_from_batch_manifest(rows, work, manifest=manifest)


class MindVideoReviewResultOperator(BaseOperator):
    """Merge a round's pages into one result and manifest; generate the rejected again for the next round.

    Runs when the round's pages are done (``trigger_rule="none_failed"``: also when the round had
    no page, then passing the previous state on).

    :param previous: The previous step's state (its ``mindvideo_review`` XCom: the items step's, or
        the previous round's result's).
    :param review_task_id: The round's (mapped) page task.
    :param regenerate_rejected: Generate each rejected item again -- one new MindVideo task
        each, the next generation of the key that made it; nothing for the approved -- for the
        next round (not after the last round).
    :param append_comment: Append the reviewer's comment to the prompt of the new generation.
    :param max_cost: The most that regenerations may cost across all rounds (see
        :class:`~airflow_provider_mindvideo.budget.Budget`: predicted from the item's recorded
        cost, else the model's price, and held before each create). A rejected item that could
        pass it is not generated again, and the manifest says why.
    :param download_to: Save regenerated outputs into this folder (an ``ObjectStoragePath``
        URL), so that approved items of later rounds have files too. (templated)
    :param download_conn_id: The storage connection for ``download_to``.
    :param download_allow_private_urls: As :class:`MindVideoDownloadOperator`'s ``allow_private_urls``.
    :param regeneration_timeout: Seconds to wait for the regenerated outputs.
    :param page_size: The most items one page of the next round shows.

    XCom: ``mindvideo_review`` is the review's state: ``approved`` / ``rejected`` / ``pending``
    items, ``approved_files``, ``approved_urls``, ``approved_task_ids``, ``spent`` and the
    ``manifest`` (one row per decision: item, decision, comment, ``decided_by``, ``decided_at``,
    ``timed_out``, ``regenerated_as``, ``note``); ``mindvideo_review_manifest`` holds the
    manifest alone. ``return_value`` is the state after the last round, else the next round's
    pages (the next page task maps over them).
    """

    template_fields: Sequence[str] = ("previous", "download_to", "mindvideo_conn_id")
    ui_color = "#e8dcff"

    def __init__(
        self,
        *,
        previous: Any,
        review_task_id: str,
        regenerate_rejected: bool = False,
        append_comment: bool = False,
        max_cost: float | None = None,
        download_to: str | None = None,
        download_conn_id: str | None = None,
        download_allow_private_urls: bool | None = None,
        regeneration_timeout: float = 3600.0,
        poll_interval: float = 2.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        mindvideo_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "none_failed")
        super().__init__(**kwargs)
        Budget(max_cost)  # refuses a bad ceiling when the DAG is parsed
        self.previous = previous
        self.review_task_id = review_task_id
        self.regenerate_rejected = regenerate_rejected
        self.append_comment = append_comment
        self.max_cost = max_cost
        self.download_to = download_to
        self.download_conn_id = download_conn_id
        self.download_allow_private_urls = download_allow_private_urls
        self.regeneration_timeout = regeneration_timeout
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.mindvideo_conn_id = mindvideo_conn_id

    @cached_property
    def hook(self) -> MindVideoHook:
        return MindVideoHook(self.mindvideo_conn_id)

    def execute(self, context: Context) -> Any:
        ti = context["ti"]
        previous = ReviewState.from_xcom(self.previous)
        state = ReviewState(
            round=previous.round + 1,
            max_rounds=previous.max_rounds,
            approved=previous.approved,
            rejected=previous.rejected,
            manifest=previous.manifest,
            spent=previous.spent,
        )
        shown = previous.pending
        if shown:
            pages = len(review_pages(shown, round=state.round, max_rounds=state.max_rounds, page_size=self.page_size))
            answers = _as_list(ti.xcom_pull(task_ids=self.review_task_id, map_indexes=list(range(pages))))
            state = self.apply(state, decisions_of_pages(shown, answers))
        record = state.to_xcom()
        ti.xcom_push(key=XCOM_REVIEW_STATE_KEY, value=record)
        ti.xcom_push(key=XCOM_REVIEW_MANIFEST_KEY, value=record["manifest"])
        self.log.info(
            "After round %d: %d approved, %d rejected, %d generated again for the next round; regenerations cost %g",
            state.round,
            len(state.approved),
            len(state.rejected),
            len(state.pending),
            state.spent,
        )
        if state.round >= state.max_rounds:
            return record
        return review_pages(state.pending, round=state.round + 1, max_rounds=state.max_rounds, page_size=self.page_size)

    def apply(self, state: ReviewState, decisions: Sequence[Decision]) -> ReviewState:
        """Keep the approved; generate the rejected again (while rounds and ``max_cost`` allow) for the next round."""
        again = self.regenerate_rejected and state.round < state.max_rounds
        # Regenerations of earlier rounds are committed already: max_cost holds across rounds.
        budget = Budget(self.max_cost, price_of=_recorded_prices(decisions), committed=state.spent)
        created: list[tuple[Decision, MindVideoTask, dict[str, Any], int]] = []
        for decision in decisions:
            item = decision.item
            if decision.approved or not again:
                (state.approved if decision.approved else state.rejected).append(item)
                state.manifest.append(manifest_row(decision, state.round))
                continue
            reservation = budget.try_reserve(item.model)
            if reservation is None:
                state.rejected.append(item)
                note = f"not generated again: {budget.refusal(item.model)}"
                state.manifest.append(manifest_row(decision, state.round, note=note))
                continue
            request = regeneration_input(item, decision.comment, self.append_comment)
            key, generation = regeneration_key(item)
            try:
                task = self.hook.create_task(item.model, request, idempotency_key=key)
            except MindVideoError as exc:
                if exc.http_status is not None and 400 <= exc.http_status < 500 and exc.http_status != 429:
                    budget.release(reservation)  # refused: nothing was charged
                raise
            budget.settle(reservation, task.cost_estimate)
            self.log.info(
                "Item %d rejected: generating it again as MindVideo task %s (key generation %d)",
                item.number,
                task.task_id,
                generation,
            )
            created.append((decision, task, request, generation))
        state.spent = budget.committed
        for decision, task, request, generation in created:
            self._collect(state, decision, self._wait(task), request, generation)
        return state

    def _collect(
        self, state: ReviewState, decision: Decision, finished: MindVideoTask, request: dict[str, Any], generation: int
    ) -> None:
        item = decision.item
        if finished.status is not TaskStatus.SUCCEEDED or not finished.output_urls:
            state.rejected.append(item)
            note = f"generating again ended {finished.reported_status}: {finished.error_message or ''}"
            state.manifest.append(manifest_row(decision, state.round, regenerated_as=finished.task_id, note=note))
            return
        state.pending.append(
            regenerated_item(
                item,
                mindvideo_task_id=finished.task_id,
                input=request,
                output_urls=finished.output_urls,
                files=self._save(finished),
                cost=finished.cost_actual if finished.cost_actual is not None else finished.cost_estimate,
                key_generation=generation,
                round=state.round + 1,
            )
        )
        state.manifest.append(manifest_row(decision, state.round, regenerated_as=finished.task_id))

    def _wait(self, task: MindVideoTask) -> MindVideoTask:
        started = time.monotonic()
        while not task.is_terminal:
            elapsed = time.monotonic() - started
            if elapsed >= self.regeneration_timeout:
                raise MindVideoError(
                    f"MindVideo task {task.task_id} (a rejected item generated again) did not finish within "
                    f"regeneration_timeout={self.regeneration_timeout:.0f} s"
                )
            time.sleep(min(next_poll_delay(elapsed, self.poll_interval, 30.0), self.regeneration_timeout - elapsed))
            task = self.hook.get_task(task.task_id)
        return task

    def _save(self, task: MindVideoTask) -> list[str]:
        if not self.download_to:
            return []
        from airflow_provider_mindvideo.operators.download import private_urls_allowed

        folder = ObjectStoragePath(self.download_to, conn_id=self.download_conn_id)
        with download_client(allow_private_urls=private_urls_allowed(self.download_allow_private_urls)) as client:
            stored = store_outputs(client, task.output_urls, folder, mindvideo_task_id=task.task_id)
        return [file.path for file in stored]


def _recorded_prices(decisions: Sequence[Decision]) -> Any:
    """A model's price for the budget: the highest cost recorded for its items under review, else the catalogue's.

    An item's own cost predicts its regeneration (same model, same input) better than the
    catalogue's example price, which knows nothing of a video's duration or an image's size.
    """
    recorded: dict[str, float] = {}
    for decision in decisions:
        cost = decision.item.cost
        if cost is not None:
            recorded[decision.item.model] = max(cost, recorded.get(decision.item.model, 0.0))

    def price_of(model: str) -> float | None:
        return recorded.get(model, catalogue_price(model))

    return price_of


def read_jsonl(path: ObjectStoragePath, name: str) -> list[dict[str, Any]]:
    """The rows of a JSONL file; ``name`` is how errors call it."""
    text = storage.read_text(path)
    if text is None:
        raise InputValidationError(f"review: {path} (for {name}) does not exist")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputValidationError(f"review: {path} line {number} is not JSON: {exc.msg}") from None
        if not isinstance(row, Mapping):
            raise InputValidationError(f"review: {path} line {number} is not a JSON object")
        rows.append(dict(row))
    return rows


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]

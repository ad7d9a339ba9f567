"""The first step of a review: find the items to review and split them into the pages of round 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_mindvideo.client import jsonl
from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.outputs import storage
from airflow_provider_mindvideo.outputs.downloads import XCOM_FILES_KEY
from airflow_provider_mindvideo.review.items import ReviewItem, ReviewState, review_pages
from airflow_provider_mindvideo.review.page import DEFAULT_PAGE_SIZE
from airflow_provider_mindvideo.review.sources import items_from_batch_manifest, items_from_generated

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom key of the review's state after a step (the last round's result also returns it). Before
#: the last round a step *returns* the next round's pages: Airflow maps only over return values.
XCOM_REVIEW_STATE_KEY = "mindvideo_review"


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
        # Imported when used: outcomes brings the hook's models and triggers into every DAG parse.
        from airflow_provider_mindvideo.outcomes import XCOM_TASK_KEY

        ti = context["ti"]
        assert self.generate_task_id is not None
        inputs = list(self.inputs or [])
        indexes = list(range(len(inputs)))
        records = as_list(ti.xcom_pull(task_ids=self.generate_task_id, key=XCOM_TASK_KEY, map_indexes=indexes))
        files = as_list(
            ti.xcom_pull(task_ids=self.save_task_id or self.generate_task_id, key=XCOM_FILES_KEY, map_indexes=indexes)
        )
        key_task_id = self.key_task_id or self.generate_task_id
        key_records = (
            as_list(ti.xcom_pull(task_ids=key_task_id, key=XCOM_TASK_KEY, map_indexes=indexes))
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


def read_jsonl(path: ObjectStoragePath, name: str) -> list[dict[str, Any]]:
    """The rows of a JSONL file; ``name`` is how errors call it."""
    text = storage.read_text(path)
    if text is None:
        raise InputValidationError(f"review: {path} (for {name}) does not exist")
    # A batch writes its manifest and work list whole or not at all: no torn line is tolerated.
    try:
        rows, _ = jsonl.load_objects(text)
    except jsonl.JsonLinesError as exc:
        raise InputValidationError(
            f"review: {path} (for {name}): {exc}; review a manifest the batch wrote whole, beside its work list"
        ) from None
    return [row for _, row in rows]


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]

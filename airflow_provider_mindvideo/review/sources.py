"""Where reviewed items come from: mapped Generate / Submit + Sensor records, or a batch manifest. Pure.

Each item keeps the stem and generation of the key that made it, read from what the generating
task recorded, so that :func:`.review.regeneration_key` continues that very key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.client.idempotency import key_stem, split_key
from airflow_provider_mindvideo.review.items import ReviewItem


def items_from_generated(
    inputs: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any] | None],
    files: Sequence[Any] | None,
    key_records: Sequence[Mapping[str, Any] | None] | None = None,
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
) -> list[ReviewItem]:
    """Items from a mapped Generate (or Submit + Sensor) task: its inputs, its ``mindvideo_task`` records by map index.

    :param files: per map index, the stored paths or the download manifest (``mindvideo_files``)
        of the outputs; ``None`` when they were not saved.
    :param key_records: per map index, the record of the task that created the remote task
        (the Submit task's, for Submit + Sensor; default ``records``): its ``idempotency_key``
        is the key a rejected item's next generation follows.
    :param task_id: that creating task, whose key is derived again when a record has none.
    """
    if len(records) != len(inputs):
        raise InputValidationError(
            f"review: {len(inputs)} input(s) but {len(records)} generation record(s) from task {task_id!r}; "
            "pass the same list the generation was mapped over"
        )
    items: list[ReviewItem] = []
    for index, (request, record) in enumerate(zip(inputs, records, strict=True)):
        if not record or not record.get("output_urls"):
            continue  # nothing was generated: nothing to look at
        keyed = (key_records[index] if key_records is not None and index < len(key_records) else None) or record
        model = str(keyed.get("model") or record.get("model") or "")
        recorded = keyed.get("idempotency_key")
        if isinstance(recorded, str) and recorded:
            stem, generation = split_key(recorded)
        else:  # a record from before keys were recorded: the key the task instance derives
            stem = key_stem(dag_id, task_id, run_id, index, model, request)
            generation = int(keyed.get("key_generation") or 0)
        stored = files[index] if files is not None and index < len(files) else None
        items.append(
            ReviewItem(
                number=len(items) + 1,
                model=model,
                input=dict(request),
                mindvideo_task_id=str(record["task_id"]),
                output_urls=list(record["output_urls"]),
                files=stored_paths(stored),
                cost=_cost(record) if _cost(record) is not None else _cost(keyed),
                key_stem=stem,
                key_generation=generation,
            )
        )
    return items


def items_from_batch_manifest(
    rows: Iterable[Mapping[str, Any]], work: Iterable[Mapping[str, Any]], *, manifest: str = "the batch manifest"
) -> list[ReviewItem]:
    """Items from the rows of a :class:`MindVideoBatchGenerateOperator` manifest and its work list.

    Only rows that succeeded with outputs are reviewed. A row's input is in the work list (the
    manifest holds none), by ``position``; its key is the row's ``idempotency_key`` -- the batch
    item's own key -- so a rejected row is generated again as that key's next generation.
    """
    inputs = {int(entry["position"]): entry for entry in work}
    items: list[ReviewItem] = []
    for row in rows:
        if row.get("status") != "succeeded" or not row.get("output_urls"):
            continue
        position = row.get("position")
        entry = inputs.get(position) if isinstance(position, int) and not isinstance(position, bool) else None
        if entry is None:
            raise InputValidationError(
                f"review: {manifest} line {row.get('line')!r} has position = {position!r}, which its work list "
                "does not hold; review the manifest the batch wrote, beside its work list"
            )
        recorded = row.get("idempotency_key")
        stem, generation = split_key(recorded) if isinstance(recorded, str) and recorded else (entry["key"], 0)
        items.append(
            ReviewItem(
                number=len(items) + 1,
                model=str(row.get("model") or entry["model"]),
                input=dict(entry["input"]),
                mindvideo_task_id=str(row.get("task_id") or row.get("mindvideo_task_id")),
                output_urls=list(row["output_urls"]),
                files=stored_paths(row.get("files")),
                cost=_cost(row),
                key_stem=stem,
                key_generation=generation,
            )
        )
    return items


def stored_paths(files: Any) -> list[str]:
    """Paths from a download manifest (``[{"path": ...}]``), a list of paths, or nested lists of either."""
    if files is None:
        return []
    if isinstance(files, str):
        return [files]
    if isinstance(files, Mapping):
        return [str(files["path"])] if files.get("path") else []
    return [path for entry in files for path in stored_paths(entry)]


def _cost(record: Mapping[str, Any]) -> float | None:
    for name in ("cost_actual", "cost", "cost_estimate"):
        value = record.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None

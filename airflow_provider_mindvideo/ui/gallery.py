"""A run's outputs, one item per generation: batch manifest rows, Submit/Generate records and ledger rows, joined.

Sources, in the order an item takes its fields from them:

- the batch manifests of the run's batch task instances
  (:mod:`airflow_provider_mindvideo.ui.manifests`): model, status, MindVideo task id, output URLs,
  stored files, error; the prompt from the work list beside it;
- the run's ``mindvideo_task`` XComs (:mod:`airflow_provider_mindvideo.ui.records`): one item per
  Submit/Generate task instance;
- the ledger: the cost of every create (its ``cost`` column, summed over the item's key
  generations), and an item of its own for a create neither of the above knows (still running,
  or its task failed before recording).

Without budgets there are no ledger rows: the costs are then the manifests' and records'
(``max(cost_estimate, cost_actual)``), and ``cost_source`` says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine, Row

from airflow_provider_mindvideo.batch.records import work_list_url
from airflow_provider_mindvideo.spend.budgets import from_micros
from airflow_provider_mindvideo.spend.engines import reading
from airflow_provider_mindvideo.spend.schema import spend
from airflow_provider_mindvideo.ui import batch_items, decisions, manifests, records
from airflow_provider_mindvideo.ui.freshness import Kept, ledger_fingerprint


@dataclass(frozen=True)
class TaskInstance:
    task_id: str
    map_index: int

    @classmethod
    def of(cls, task_id: str, map_index: int | None) -> TaskInstance:
        return cls(task_id, -1 if map_index is None else map_index)


def run_items(
    engine: Engine | None, dag_id: str, run_id: str, *, only: TaskInstance | None = None
) -> list[dict[str, Any]]:
    """Every output item of the run (or of one task instance of it), in task then item order.

    Items are numbered across the whole run (``number``), also when one task instance's are asked
    for. The run's list is kept while its ledger rows, XCom records and manifests stay the same
    (:mod:`.freshness`): a page of a 10,000-item run does not join 10,000 items again.
    """
    _, joined, chosen = _selected(engine, dag_id, run_id, only, None)
    return [joined.item(n) for n in chosen]


def run_page(
    engine: Engine | None,
    dag_id: str,
    run_id: str,
    *,
    only: TaskInstance | None = None,
    mindvideo_task_id: str | None = None,
    number: int = 1,
    size: int = 60,
) -> dict[str, Any]:
    """One page of the run's (or task instance's, or MindVideo task's) items, with what they all add up to."""
    totals, joined, chosen = _selected(engine, dag_id, run_id, only, mindvideo_task_id)
    start = (number - 1) * size
    return totals | {"page": number, "per_page": size, "items": [joined.item(n) for n in chosen[start : start + size]]}


def _selected(
    engine: Engine | None, dag_id: str, run_id: str, only: TaskInstance | None, mindvideo_task_id: str | None
) -> tuple[dict[str, Any], _Joined, list[int]]:
    """The totals, the run's joined items and the numbers of those selected."""
    name = engine.url.render_as_string(hide_password=True) if engine else None
    ledger = ledger_fingerprint(engine, spend.c.dag_id == dag_id, spend.c.run_id == run_id) if engine else None
    xcoms = records.run_records(dag_id, run_id)
    # Which task instances have rows changes only when a row is added: (count, highest id) tell.
    added = ledger[:2] if ledger else None
    instances = _instances_kept.get(
        (name, dag_id, run_id), (added, tuple(xcoms)), lambda: _instances(engine, dag_id, run_id, xcoms)
    )
    urls = {ti: batch_manifest_url(dag_id, run_id, ti, xcoms) for ti in instances}
    fingerprint = (
        ledger,
        repr(sorted(xcoms.items(), key=repr)),
        tuple((u, manifests.version_of(u), manifests.version_of(work_list_url(u))) for u in urls.values() if u),
    )

    def select_items() -> tuple[dict[str, Any], _Joined, list[int]]:
        joined = _runs_kept.get((name, dag_id, run_id), fingerprint, lambda: _join(engine, dag_id, run_id, xcoms, urls))
        items = joined.items
        chosen = list(range(len(items)))
        if only is not None:
            chosen = [n for n in chosen if TaskInstance(items[n]["task"], items[n]["map_index"]) == only]
        if mindvideo_task_id is not None:
            chosen = [n for n in chosen if items[n]["mindvideo_task_id"] == mindvideo_task_id]
        return joined.totals(chosen), joined, chosen

    return _selections_kept.get((name, dag_id, run_id, only, mindvideo_task_id), fingerprint, select_items)


_instances_kept = Kept(size=8)
_runs_kept = Kept(size=8)
_selections_kept = Kept(size=64)


def _instances(
    engine: Engine | None, dag_id: str, run_id: str, xcoms: Mapping[tuple[str, int, str], Any]
) -> list[TaskInstance]:
    """The run's task instances that made something: those with ledger rows or MindVideo records."""
    found = {TaskInstance(task, index) for task, index, key in xcoms if key != records.REVIEW_KEY}
    if engine is not None:
        query = (
            select(spend.c.task_id, spend.c.map_index)
            .where(spend.c.dag_id == dag_id, spend.c.run_id == run_id, spend.c.task_id.is_not(None))
            .distinct()
        )
        with reading(engine) as connection:
            found |= {TaskInstance.of(task, index) for task, index in connection.execute(query)}
    return sorted(found, key=lambda t: (t.task_id, t.map_index))


def _join(
    engine: Engine | None,
    dag_id: str,
    run_id: str,
    xcoms: Mapping[tuple[str, int, str], Any],
    urls: Mapping[TaskInstance, str | None],
) -> _Joined:
    ledger = _ledger_rows(engine, dag_id, run_id)
    cost_by_key = {r.key: r.micros for r in ledger}
    by_instance: dict[TaskInstance, list[Row[Any]]] = {}
    if any(key == records.TASK_KEY for _, _, key in xcoms):
        for r in ledger:
            by_instance.setdefault(TaskInstance.of(r.task_id, r.map_index), []).append(r)
    used: set[str] = set()
    items: list[dict[str, Any]] = []
    priced: list[tuple[float | None, str] | None] = []  # a batch item's cost and its source; None: the item's own
    by_remote: dict[str, int] = {}  # MindVideo task id -> index of its Submit/Generate item
    for ti, url in urls.items():
        outputs = batch_items.batch_outputs(ti.task_id, ti.map_index, url) if url else None
        if outputs:
            items.extend(output.item for output in outputs)
            priced.extend(batch_items.ledger_cost(output, cost_by_key, used) for output in outputs)
        record = xcoms.get((ti.task_id, ti.map_index, records.TASK_KEY))
        if isinstance(record, Mapping):
            _add_record(items, by_remote, _record_item(ti, record, by_instance.get(ti, []), used))
            priced.extend([None] * (len(items) - len(priced)))
    items.extend(_ledger_item(row) for row in ledger if row.key not in used)
    if any(item["source"] == "task" and not item["prompt"] for item in items):
        rendered = records.rendered_prompts(dag_id, run_id)
        for item in items:
            if item["source"] == "task" and not item["prompt"]:
                item["prompt"] = rendered.get((item["task"], item["map_index"]))
    reviews, reviewed_only = decisions.reviews(items, xcoms)
    items.extend(reviewed_only)
    priced.extend([None] * (len(items) - len(priced)))
    return _Joined(items, priced, reviews)


@dataclass(frozen=True)
class _Joined:
    """The run's items in order, their number their index; kept, so shared by requests and never changed.

    A batch item is its manifest's kept dict (:func:`.batch_items.batch_outputs`) with its cost beside it in
    ``priced``: a change of the ledger makes a list of costs, not 10,000 new dicts, and only the
    items of the page asked for become whole (:meth:`item`).
    """

    items: list[dict[str, Any]]
    priced: list[tuple[float | None, str] | None]
    reviews: Mapping[str, dict[str, Any]]

    def item(self, number: int) -> dict[str, Any]:
        """The item as the page shows it: with its cost, its review decision and its number."""
        item, priced = self.items[number], self.priced[number]
        cost, source = priced if priced is not None else (item["cost"], item["cost_source"])
        remote = item["mindvideo_task_id"]
        review = self.reviews.get(remote) if remote else None
        return {**item, "cost": cost, "cost_source": source, "review": review, "number": number}

    def totals(self, chosen: list[int]) -> dict[str, Any]:
        """What the items ``chosen`` add up to: how many, how many of each status, what they cost."""
        statuses: dict[str, int] = {}
        total_micros = 0
        for number in chosen:
            status, priced = self.items[number]["status"], self.priced[number]
            statuses[status] = statuses.get(status, 0) + 1
            cost = priced[0] if priced is not None else self.items[number]["cost"]
            total_micros += round((cost or 0) * 1_000_000)
        return {"total": len(chosen), "statuses": statuses, "cost": from_micros(total_micros)}


def batch_manifest_url(
    dag_id: str, run_id: str, ti: TaskInstance, xcoms: Mapping[tuple[str, int, str], Any] | None = None
) -> str | None:
    """The manifest this batch task instance wrote: the one its XCom names, else its default place."""
    if xcoms is None:
        xcoms = records.run_records(dag_id, run_id)
    summary = xcoms.get((ti.task_id, ti.map_index, records.BATCH_KEY))
    if isinstance(summary, Mapping) and isinstance(summary.get("manifest"), str):
        return manifests.named_manifest(str(summary["manifest"]), dag_id, run_id, ti.task_id, ti.map_index)
    return manifests.default_manifest_url(dag_id, run_id, ti.task_id, ti.map_index)


def stored_file(dag_id: str, run_id: str, ti: TaskInstance, position: int, n: int) -> dict[str, Any] | None:
    """The ``n``-th stored file of item ``position`` of a batch, as its manifest names it; else None."""
    url = batch_manifest_url(dag_id, run_id, ti)
    rows = manifests.manifest_rows(url) if url else None
    for row in rows or ():
        if row.position == position:
            return row.files[n] if 0 <= n < len(row.files) else None
    return None


def _ledger_rows(engine: Engine | None, dag_id: str, run_id: str) -> Sequence[Row[Any]]:
    """The run's creates, oldest first: key, task_id, map_index, model, state, micros, mindvideo_task_id."""
    if engine is None:
        return []
    # Only the columns an item takes, as rows: a 10,000-item run reads them on every change of its rows.
    query = (
        select(
            spend.c.idempotency_key.label("key"),
            spend.c.task_id,
            spend.c.map_index,
            spend.c.model,
            spend.c.state,
            spend.c.cost.label("micros"),
            spend.c.mindvideo_task_id,
        )
        .where(spend.c.dag_id == dag_id, spend.c.run_id == run_id)
        .order_by(spend.c.created_at, spend.c.id)
    )
    with reading(engine) as connection:
        return connection.execute(query).all()  # type: ignore[return-value]  # seven columns: Row[Any] here


def _record_item(
    ti: TaskInstance, record: Mapping[str, Any], mine: Sequence[Row[Any]], used: set[str]
) -> dict[str, Any]:
    remote = record.get("task_id")
    matching = [r for r in mine if r.mindvideo_task_id == remote] or mine
    used.update(r.key for r in matching)
    if matching:
        cost: float | None = from_micros(sum(r.micros for r in matching))
        source = "ledger"
    else:
        cost, source = batch_items.known_cost(record.get("cost_estimate"), record.get("cost_actual")), "record"
    urls = [u for u in record.get("output_urls") or () if isinstance(u, str)]
    return {
        "task": ti.task_id,
        "map_index": ti.map_index,
        "source": "task",
        "position": None,
        "line": None,
        "model": record.get("model") or (matching[0].model if matching else None),
        "status": str(record.get("status") or "unknown"),
        "mindvideo_task_id": remote,
        "cost": cost,
        "cost_source": source,
        "prompt": record.get("prompt") if isinstance(record.get("prompt"), str) else None,
        "error": record.get("error") if isinstance(record.get("error"), str) else None,
        "media": [{"url": url, "kind": batch_items.kind(url, None), "stored": None} for url in urls],
    }


def _add_record(items: list[dict[str, Any]], by_remote: dict[str, int], item: dict[str, Any]) -> None:
    """One item per MindVideo task: a Submit and the Sensor that waited for it record the same task.

    The item stays the creating task instance's (the one the ledger charged, else the first),
    with the latest word on status, outputs and error: the waiter's record has the outputs.
    """
    remote = item["mindvideo_task_id"]
    if not remote or remote not in by_remote:
        if remote:
            by_remote[remote] = len(items)
        items.append(item)
        return
    same = items[by_remote[remote]]
    first, second = (same, item) if same["cost_source"] == "ledger" or item["cost_source"] != "ledger" else (item, same)
    merged = {**first}
    for field in ("status", "error"):
        merged[field] = second[field] if second["media"] or not first["media"] else first[field]
    merged["media"] = second["media"] or first["media"]
    merged["prompt"] = first["prompt"] or second["prompt"]
    merged["model"] = first["model"] or second["model"]
    if merged["cost"] is None:
        merged["cost"], merged["cost_source"] = second["cost"], second["cost_source"]
    items[by_remote[remote]] = merged


def _ledger_item(row: Row[Any]) -> dict[str, Any]:
    return {
        "task": row.task_id,
        "map_index": -1 if row.map_index is None else row.map_index,
        "source": "ledger",
        "position": None,
        "line": None,
        "model": row.model,
        # reserved: no answer recorded yet; released: the API refused the create; refused: a budget did.
        "status": _LEDGER_STATUS.get(row.state, row.state),
        "mindvideo_task_id": row.mindvideo_task_id,
        "cost": from_micros(row.micros),
        "cost_source": "ledger",
        "prompt": None,
        "error": None,
        "media": [],
    }


_LEDGER_STATUS = {"reserved": "in_flight", "released": "refused_by_api", "refused": "over_budget"}

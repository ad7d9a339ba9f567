"""What a human review decided about each output of the run, from the review's manifest (XCom).

Every round's result task pushes ``mindvideo_review_manifest``: one row per decision so far
(``round``, ``number``, ``mindvideo_task_id``, ``decision``, ``comment``, ``decided_by``,
``decided_at``, ``timed_out``, ``regenerated_as``, ``note``; see
:func:`airflow_provider_mindvideo.review.items.manifest_row`). An item of the gallery takes the
decision of the row naming its MindVideo task (the latest round's, where several do); a rejected
output made again shows ``regenerate`` and the task id of its new output. An output only the
review knows (a regeneration, with no ledger to record its create) gets an item of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_mindvideo.ui import records

APPROVE, REJECT, REGENERATE = "approve", "reject", "regenerate"


def reviews(
    items: list[dict[str, Any]], xcoms: Mapping[tuple[str, int, str], Any]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The decision shown for each MindVideo task id, and items of the outputs only a review knows.

    ``items`` are not changed (they may be kept and shared): an item's ``review`` is
    ``decisions.get(item["mindvideo_task_id"])``, None where no review decided on it.
    """
    found, makers = _decided(xcoms)
    known = {item["mindvideo_task_id"] for item in items if item["mindvideo_task_id"]}
    added: list[dict[str, Any]] = []
    for task_id, (row, _) in sorted(found.items(), key=lambda kv: (kv[1][0]["round"], kv[1][0]["number"])):
        if task_id in known:
            continue
        maker = makers.get(task_id, ("", -1))
        urls = [u for u in row.get("output_urls") or () if isinstance(u, str)]
        cost = row.get("cost")
        added.append(
            {
                "task": maker[0],
                "map_index": maker[1],
                "source": "review",
                "position": None,
                "line": None,
                "model": row.get("model"),
                "status": "succeeded",
                "mindvideo_task_id": task_id,
                "cost": float(cost) if isinstance(cost, int | float) else None,
                "cost_source": "review",
                "prompt": row.get("prompt") if isinstance(row.get("prompt"), str) else None,
                "error": None,
                "media": [{"url": url, "kind": "image", "stored": None} for url in urls],
            }
        )
    return {task_id: decision for task_id, (_, decision) in found.items()}, added


def _decided(
    xcoms: Mapping[tuple[str, int, str], Any],
) -> tuple[dict[str, tuple[dict[str, Any], dict[str, Any]]], dict[str, tuple[str, int]]]:
    """{MindVideo task id: (its latest row, the decision shown)}, and which review task made each regeneration."""
    found: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    # A regeneration was made by the round whose manifest first names it: the shortest manifest.
    makers: dict[str, tuple[int, tuple[str, int]]] = {}
    for (task, index, key), manifest in xcoms.items():
        if key != records.REVIEW_KEY or not isinstance(manifest, list):
            continue
        for row in manifest:
            if not (isinstance(row, Mapping) and isinstance(row.get("mindvideo_task_id"), str)):
                continue
            row = {**row, "round": _int(row.get("round")), "number": _int(row.get("number"))}
            task_id = row["mindvideo_task_id"]
            if task_id not in found or row["round"] >= found[task_id][0]["round"]:
                found[task_id] = (row, _decision(row))
            made = row.get("regenerated_as")
            if isinstance(made, str) and (made not in makers or len(manifest) < makers[made][0]):
                makers[made] = (len(manifest), (task, index))
    return found, {made: ti for made, (_, ti) in makers.items()}


def _decision(row: Mapping[str, Any]) -> dict[str, Any]:
    regenerated = row.get("regenerated_as")
    approved = row.get("decision") == APPROVE
    return {
        "decision": APPROVE if approved else (REGENERATE if regenerated else REJECT),
        "round": row["round"],
        "comment": row.get("comment"),
        "decided_by": row.get("decided_by"),
        "decided_at": row.get("decided_at"),
        "timed_out": bool(row.get("timed_out")),
        "regenerated_as": regenerated,
        "note": row.get("note"),
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

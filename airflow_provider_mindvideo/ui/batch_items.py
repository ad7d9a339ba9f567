"""A batch manifest's rows as gallery items, built once per version of the manifest and its work list.

Building the items of a 10,000-row manifest (media, kinds, prompts) is most of what a gallery page
costs; the manifest changes far less often than the ledger. The items are kept while both files
keep their size and modification time, and never changed: the ledger's cost of each is put beside
them (:func:`ledger_cost`), not into them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_mindvideo.batch.plan import ItemResult
from airflow_provider_mindvideo.batch.records import work_list_url
from airflow_provider_mindvideo.client.errors import CorruptRecordError
from airflow_provider_mindvideo.spend.budgets import from_micros
from airflow_provider_mindvideo.ui import manifests
from airflow_provider_mindvideo.ui.freshness import Kept

_VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".m4v", ".ogv")


@dataclass(frozen=True)
class Output:
    """A manifest row as an item, before the ledger's word on its cost (``keys``: the ledger rows it may have)."""

    item: dict[str, Any]
    keys: tuple[str, ...]
    manifest_cost: float | None


def batch_outputs(task_id: str, map_index: int, url: str) -> list[Output] | None:
    """The items of a batch manifest (with the work list's prompts), kept while both files stay the same.

    Building 10,000 items is most of a gallery's time; the ledger's costs change far more often
    than the manifest and are kept beside these items (:func:`ledger_cost`, ``gallery._Joined``).
    """
    version = (manifests.version_of(url), manifests.version_of(work_list_url(url)))
    return _outputs_kept.get((url, task_id, map_index), version, lambda: _read(task_id, map_index, url))


def _read(task_id: str, map_index: int, url: str) -> list[Output] | None:
    try:
        rows = manifests.manifest_rows(url)
    except CorruptRecordError as damaged:
        # One damaged manifest must not take the run's other outputs down with it: this task's
        # items then come from the ledger alone, as if it had no manifest; the log says why.
        log.warning(
            "MindVideo gallery: the manifest of %s is not readable, shown from the ledger: %s", task_id, damaged
        )
        return None
    if not rows:
        return None
    prompts = manifests.prompts(url)
    return [_output(task_id, map_index, row, prompts.get(row.position)) for row in rows]


_outputs_kept = Kept(size=8)
log = logging.getLogger(__name__)


def ledger_cost(output: Output, cost_by_key: Mapping[str, int], used: set[str]) -> tuple[float | None, str]:
    """A batch item's cost: the ledger's for its keys (marked used), else the manifest's."""
    in_ledger = [key for key in output.keys if key in cost_by_key]
    if not in_ledger:
        return output.manifest_cost, "manifest"
    used.update(in_ledger)
    return from_micros(sum(cost_by_key[key] for key in in_ledger)), "ledger"


def _output(task_id: str, map_index: int, row: ItemResult, prompt: str | None) -> Output:
    # DAG code writes the manifest: a position that is not a number would be markup on the page.
    position = whole_number(row.position)
    keys = {t.get("idempotency_key") for t in row.tasks} | {row.idempotency_key}
    stored = {str(f.get("url")): n for n, f in enumerate(row.files)}
    media = [
        {
            "url": url,
            "kind": kind(url, row.files[stored[url]].get("content_type") if url in stored else None),
            "stored": {"position": position, "n": stored[url]} if url in stored and position is not None else None,
        }
        for url in row.output_urls
    ]
    item = {
        "task": task_id,
        "map_index": map_index,
        "source": "batch",
        "position": position,
        "line": whole_number(row.line),
        "model": row.model,
        "status": row.status,
        "mindvideo_task_id": row.task_id,
        "cost": None,
        "cost_source": "manifest",
        "prompt": prompt,
        "error": row.error,
        "media": media,
    }
    return Output(
        item,
        tuple(sorted(key for key in keys if isinstance(key, str))),
        known_cost(row.cost_estimate, row.cost_actual),
    )


def known_cost(estimate: Any, actual: Any) -> float | None:
    known = [float(v) for v in (estimate, actual) if isinstance(v, int | float) and v == v and abs(v) != float("inf")]
    return max(known) if known else None


def kind(url: str, content_type: Any) -> str:
    if isinstance(content_type, str):
        return "video" if content_type.startswith("video/") else "image"
    return "video" if url.split("?", 1)[0].lower().endswith(_VIDEO_SUFFIXES) else "image"


def whole_number(value: Any) -> int | None:
    """``value`` if it is an int (not a bool), else None: what a manifest's numbers may reach the page as."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None

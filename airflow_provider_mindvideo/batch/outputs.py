"""Saving a batch's outputs (``download_to``): one item's files, and whether an earlier save still holds.

Blocking I/O: the trigger calls these from a bounded thread pool as items finish (so saving
overlaps generating), the operator's ``execute_complete`` for whatever is still missing. Both
go through :func:`airflow_provider_mindvideo.outputs.downloads.store_outputs`: the same streaming,
no-clobber writes and the same address guard (:mod:`airflow_provider_mindvideo.outputs.network`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_mindvideo.outputs import storage
from airflow_provider_mindvideo.outputs.downloads import store_outputs

if TYPE_CHECKING:
    import httpx
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_mindvideo.client.deadlines import Deadline

#: Outputs saved at once with ``download_to``: downloads are I/O bound, and the store may limit writers.
DOWNLOAD_CONCURRENCY = 8


def save_item_outputs(
    client: httpx.Client,
    folder: ObjectStoragePath,
    urls: Sequence[str],
    mindvideo_task_id: str | None,
    *,
    record_lineage: bool = True,
    deadline: Deadline | None = None,
) -> list[dict[str, Any]]:
    """Store one item's outputs in ``folder`` (default file names, never overwriting); their manifest entries.

    A file already there with the same content is kept (``written`` False), so saving an item
    again -- a restarted triggerer, a retry -- rewrites nothing.

    :param deadline: When the downloads must have ended, however slowly a server sends (cancellable).
    :raises MindVideoError: when a link is gone, not media, refused by the address guard, or
        collides with a different file.
    """
    files = store_outputs(
        client, urls, folder, mindvideo_task_id=mindvideo_task_id, record_lineage=record_lineage, deadline=deadline
    )
    return [file.to_xcom() for file in files]


def still_stored(files: Sequence[Mapping[str, Any]], urls: Sequence[str], conn_id: str | None) -> bool:
    """Whether ``files`` (an earlier save of these ``urls``) are all still there, at the size recorded.

    The size, not the content: reading every kept file back would cost the download it saves. A
    file cut short or replaced by another size is saved again (and, the name being taken by
    other content, reported as a collision instead of being overwritten).
    """
    if not files or len(files) != len(urls):
        return False
    from airflow.sdk import ObjectStoragePath

    return all(storage.size_of(ObjectStoragePath(file["path"], conn_id=conn_id)) == file.get("bytes") for file in files)


def files_summary(files: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What an asset event says about a batch's stored files: counts only, the manifest lists them."""
    count = written = size = 0
    for file in files:
        count += 1
        written += bool(file.get("written"))
        size += int(file.get("bytes") or 0)
    return {"files": count, "written": written, "bytes": size}

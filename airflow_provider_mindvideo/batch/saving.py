"""Saving a batch's outputs in the triggerer (``download_to``) as items finish, while the others generate."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_mindvideo.batch.outputs import DOWNLOAD_CONCURRENCY, save_item_outputs, still_stored
from airflow_provider_mindvideo.batch.plan import DOWNLOAD_FAILED, ItemResult
from airflow_provider_mindvideo.client.deadlines import Deadline
from airflow_provider_mindvideo.client.errors import MindVideoError

if TYPE_CHECKING:
    import httpx
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_mindvideo.batch.sharing import FairSlots


class SaveSettings(Protocol):
    """What saving reads from the batch trigger."""

    deadline: float | None
    download_to: str | None
    download_conn_id: str | None
    download_allow_private_urls: bool


class Saver:
    """Saves succeeded items' outputs (``download_to``) as they finish, a few at a time, while the others generate.

    Threads do the blocking I/O and return what they stored; rows are changed only in the
    event loop, which alone renders the manifest. A save that fails in a way another attempt
    may not (a 5xx, the store's own trouble) leaves the row without files: the worker's
    ``execute_complete`` saves what is missing, and judges. Files an earlier run stored (and still there)
    are kept without a download; a file this run finds already there with the same content
    (stored after the last checkpoint of a run that died) is compared, not rewritten.
    """

    def __init__(self, trigger: SaveSettings, log: Any, share: FairSlots, tenant: object) -> None:
        from airflow.sdk import ObjectStoragePath

        from airflow_provider_mindvideo.outputs.downloads import download_client

        assert trigger.download_to is not None
        self.log = log
        self.conn_id = trigger.download_conn_id
        self.folder = ObjectStoragePath(trigger.download_to, conn_id=trigger.download_conn_id)
        self.client: httpx.Client = download_client(allow_private_urls=trigger.download_allow_private_urls)
        self.pool = ThreadPoolExecutor(DOWNLOAD_CONCURRENCY, thread_name_prefix="mindvideo-batch-save")
        # Saves end with the batch: by its deadline however slowly a server sends, and at once
        # (within a socket timeout) when the batch stops -- a thread still reading would hold
        # the triggerer's exit until the server let go.
        left = math.inf if trigger.deadline is None else trigger.deadline - time.time()
        self.deadline = Deadline(time.monotonic() + max(0.0, left))
        self.jobs: set[asyncio.Task[None]] = set()
        self.saved = 0
        #: Saves at once, every batch of the loop together (``sharing.LOOP_SAVES``).
        self.share = share
        self.tenant = tenant

    def start(self, row: ItemResult, earlier: list[dict[str, Any]] | None) -> None:
        job = asyncio.create_task(self._save(row, earlier))
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)

    async def _save(self, row: ItemResult, earlier: list[dict[str, Any]] | None) -> None:
        urls, task_id = list(row.output_urls), row.task_id
        loop = asyncio.get_running_loop()
        try:
            async with self.share.slot(self.tenant):
                files = await loop.run_in_executor(
                    self.pool,
                    _save_or_keep,
                    self.client,
                    self.folder,
                    self.conn_id,
                    urls,
                    task_id,
                    earlier,
                    self.deadline,
                )
        except MindVideoError as exc:
            if exc.retryable:  # a blip (a 5xx, a dropped connection): the worker tries once more before judging
                self.log.warning("Line %d: %s; the worker tries again", row.line, exc)
                return
            row.status, row.error, row.retryable = DOWNLOAD_FAILED, str(exc), exc.retryable
            self.log.warning("Line %d: %s", row.line, row.error)
            return
        except Exception as exc:  # the store's own trouble (OSError, botocore's, ...): the worker tries again
            self.log.warning(
                "Line %d: saving the outputs of task %s failed (%r); the worker tries again", row.line, task_id, exc
            )
            return
        row.files = files
        self.saved += 1

    async def drain(self) -> None:
        """Until every save started so far has ended."""
        while self.jobs:
            await asyncio.wait(list(self.jobs))

    def close(self) -> None:
        """Stop: saves not started are dropped (the worker does them), running ones end at their next read."""
        self.deadline.cancel()
        for job in self.jobs:
            job.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if not self.jobs:
            self.client.close()


def _save_or_keep(
    client: httpx.Client,
    folder: ObjectStoragePath,
    conn_id: str | None,
    urls: Sequence[str],
    task_id: str | None,
    earlier: list[dict[str, Any]] | None,
    deadline: Deadline,
) -> list[dict[str, Any]]:
    if earlier and still_stored(earlier, urls, conn_id):
        # This try left them untouched: ``written`` says so (the asset event counts this try's writes).
        return [{**file, "written": False} for file in earlier]
    # In the triggerer the hook lineage collector belongs to no task: the worker reports the files.
    return save_item_outputs(client, folder, urls, task_id, record_lineage=False, deadline=deadline)

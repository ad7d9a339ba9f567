"""Where a batch keeps its records, in object storage beside its manifest. Blocking I/O: call it from a thread.

Beside ``<name>.jsonl`` (the manifest, one row per item):

- ``<name>.work.jsonl``: the work list, written by the operator for the trigger;
- ``<name>.intents/``: creates written down before they are sent (removed when the batch ends);
- ``<name>.lease.json`` (and ``.lease.lock`` on local files): which run of the trigger holds
  the batch, and the final event it left (:mod:`airflow_provider_mindvideo.batch.lease`);
- ``<name>.owner.json``: the task instance the path belongs to (``dag_id``, ``task_id``,
  ``run_id``, ``map_index``), so that another one is refused before it spends;
- ``<name>.earlier.jsonl``: remote tasks earlier tries created for items the inputs no longer
  hold (a line added at the top shifts every item's key). They were paid for, so they count
  against ``max_cost``; the manifest has no row to keep them in.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from functools import partial
from typing import Any

from airflow_provider_mindvideo.batch.lease import LeaseLost
from airflow_provider_mindvideo.batch.plan import ItemResult, WorkItem, load_manifest, load_work_list
from airflow_provider_mindvideo.batch.sharing import WORK_PER_STEP
from airflow_provider_mindvideo.client import jsonl
from airflow_provider_mindvideo.client.errors import CorruptRecordError, MindVideoError, ResultPathError

log = logging.getLogger(__name__)


# A run id holds ':' and '+', a task id may hold anything Airflow allows: folder names keep the safe part.
_UNSAFE_IN_PATHS = re.compile(r"[^A-Za-z0-9._=-]+")


def default_manifest_url(folder: str | None, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """``<folder>/<dag_id>/<run_id>/<task_id>[-<map_index>]/manifest.jsonl``: a batch without ``result_path``.

    :param folder: ``[mindvideo] batch_folder``; None: ``$AIRFLOW_HOME/mindvideo/batches``. A stored
        layout: the batch operator writes here and the UI reads here.
    """
    if not folder:
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        folder = f"file://{os.path.abspath(home)}/mindvideo/batches"
    task = task_id if map_index is None or map_index < 0 else f"{task_id}-{map_index}"
    parts = [_UNSAFE_IN_PATHS.sub("_", part) for part in (dag_id, run_id, task)]
    return "/".join([folder.rstrip("/"), *parts, "manifest.jsonl"])


def work_list_url(manifest_url: str) -> str:
    """Where the work list goes: beside the manifest (``manifest.jsonl`` -> ``manifest.work.jsonl``)."""
    stem = manifest_url[: -len(".jsonl")] if manifest_url.endswith(".jsonl") else manifest_url
    return f"{stem}.work.jsonl"


def _stem(result_path: str) -> str:
    return result_path[: -len(".jsonl")] if result_path.endswith(".jsonl") else result_path


def storage_path(url: str, conn_id: str | None) -> Any:
    """The ``ObjectStoragePath`` of ``url`` (imported here: the triggerer imports this module at start)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url, conn_id=conn_id)


def read_work_list(url: str, conn_id: str | None) -> list[WorkItem]:
    from airflow_provider_mindvideo.outputs import storage

    text = storage.read_text(storage_path(url, conn_id))
    if text is None:
        raise MindVideoError(f"The batch's work list {url} is gone; the next try writes it again")
    return load_work_list(text, f"The batch's work list {url}")


def read_manifest(url: str, conn_id: str | None) -> list[ItemResult]:
    """The manifest an earlier try (or an earlier run of this try) left, or none."""
    from airflow_provider_mindvideo.outputs import storage

    try:
        text = storage.read_text(storage_path(url, conn_id))
    except IsADirectoryError:
        raise ResultPathError(folder_problem(url)) from None
    return load_manifest(text, f"The batch's manifest {url}") if text else []


def folder_problem(result_path: str) -> str:
    return (
        f"result_path = {result_path!r}: is a folder; give the URL of the manifest file in it, e.g. "
        f"{result_path.rstrip('/')}/manifest.jsonl. Nothing was sent"
    )


def owner_path(result_path: str) -> str:
    return f"{_stem(result_path)}.owner.json"


def read_owner(result_path: str, conn_id: str | None) -> dict[str, Any] | None:
    """The task instance ``result_path`` belongs to, if one claimed it."""
    from airflow_provider_mindvideo.outputs import storage

    path = owner_path(result_path)
    text = storage.read_text(storage_path(path, conn_id))
    if not text:
        return None
    try:
        owner = json.loads(text)
    except json.JSONDecodeError as exc:
        owner = exc
    if not isinstance(owner, dict):
        raise CorruptRecordError(
            f"{path}: is not the JSON object this provider wrote (the task instance the batch's records belong "
            f"to). Restore it, or -- if no other task instance writes to {result_path} -- remove it to claim the "
            "path again. Nothing was sent"
        )
    return owner


def write_owner(result_path: str, conn_id: str | None, owner: dict[str, Any]) -> None:
    from airflow_provider_mindvideo.outputs import storage

    storage.replace_text(storage_path(owner_path(result_path), conn_id), json.dumps(owner, sort_keys=True))


def write_manifest(url: str, conn_id: str | None, chunks: Iterable[bytes]) -> None:
    """Replace the manifest with ``chunks`` (UTF-8 JSONL), whole or not at all."""
    from airflow_provider_mindvideo.outputs import storage

    storage.write_new(storage_path(url, conn_id), chunks, overwrite=True)


def intents_folder(result_path: str) -> str:
    """Where a batch writes down its creates before sending them: beside the manifest."""
    return f"{_stem(result_path)}.intents"


def earlier_tasks_path(result_path: str) -> str:
    """Where the remote tasks of items no longer in the inputs are kept: beside the manifest."""
    return f"{_stem(result_path)}.earlier.jsonl"


def read_earlier_tasks(result_path: str, conn_id: str | None) -> list[dict[str, Any]]:
    from airflow_provider_mindvideo.outputs import storage

    path = earlier_tasks_path(result_path)
    text = storage.read_text(storage_path(path, conn_id))
    # Written whole or not at all (storage.replace_text): any damage, a torn line too, came from
    # outside, and these tasks were paid for -- refused, never guessed around.
    try:
        rows, _ = jsonl.load_objects(text or "")
    except jsonl.JsonLinesError as exc:
        raise CorruptRecordError(
            f"{path}: {exc}. It records tasks earlier tries paid for whose items the inputs no longer hold, so "
            "nothing was sent. Restore it from a copy, or mend or remove that line and clear the task: a task no "
            "longer recorded there no longer counts against max_cost"
        ) from None
    return [row for _, row in rows]


def write_earlier_tasks(result_path: str, conn_id: str | None, tasks: Iterable[dict[str, Any]]) -> None:
    from airflow_provider_mindvideo.outputs import storage

    storage.replace_text(storage_path(earlier_tasks_path(result_path), conn_id), jsonl.dump(tasks))


def read_intents(folder_url: str, conn_id: str | None) -> list[dict[str, Any]]:
    """Every create any run of this task instance wrote down and no final manifest has settled yet."""
    from airflow_provider_mindvideo.outputs import storage

    folder = storage_path(folder_url, conn_id)
    if not storage.exists(folder):
        return []
    intents: list[dict[str, Any]] = []
    for name in sorted(folder.fs.ls(folder.path, detail=False)):
        path = folder / str(name).rsplit("/", 1)[-1]
        text = storage.read_text(path)
        # A torn last line is dropped: a group's creates wait until its whole file is stored
        # (Intents.record), so none of a file its writer did not finish was sent. On the stores
        # storage.replace_text writes atomically there is no such file; elsewhere (a rename that
        # copies) there may be. Any other damage is refused: a lost intent could be a paid create.
        try:
            rows, torn = jsonl.load_objects(text or "", torn_tail=True)
        except jsonl.JsonLinesError as exc:
            raise CorruptRecordError(
                f"{path}: {exc}. It records a create that may have been sent and paid for, so nothing was sent. "
                "Restore it, or mend or remove that line and clear the task: a create no longer recorded no "
                "longer counts against max_cost"
            ) from None
        if torn is not None:
            log.warning(
                "%s: line %d is cut short (its writer stopped): dropped, none of its creates was sent",
                path,
                torn.number,
            )
        intents.extend(row for _, row in rows)
    return intents


def write_intents(folder_url: str, conn_id: str | None, name: str, intents: list[dict[str, Any]]) -> None:
    from airflow_provider_mindvideo.outputs import storage

    storage.replace_text(storage_path(folder_url, conn_id) / name, jsonl.dump(intents))


def clear_intents(folder_url: str, conn_id: str | None) -> None:
    """Once the final manifest records every create (answered or not), the intents are redundant."""
    folder = storage_path(folder_url, conn_id)
    # Another run of this task instance (a restarted trigger's predecessor) may be removing them too.
    with suppress(FileNotFoundError):
        if folder.fs.exists(folder.path):
            folder.fs.rm(folder.path, recursive=True)


class Intents:
    """Creates written down before they are sent, a group at a time (one small file per group).

    A create may charge before its answer arrives, and a triggerer may die at any moment: a
    restarted trigger must count every create the dead one may have sent, or it could spend
    past ``max_cost`` by creating other items first. So each reservation is written down, and
    its create waits until the group it joined is stored.
    """

    def __init__(self, folder: str, conn_id: str | None) -> None:
        self.folder = folder
        self.conn_id = conn_id
        self._run = uuid.uuid4().hex[:12]
        self._groups = itertools.count()
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        #: The task storing the groups, while there are any to store.
        self.writer: asyncio.Task[None] | None = None
        #: Runs each group's write only while the run holds the batch (``BatchLease.fenced``), if set.
        self.fence: Callable[[Callable[[], None]], None] | None = None

    async def record(self, intent: dict[str, Any]) -> None:
        """Returns once ``intent`` is stored."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((intent, done))
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            name = f"{self._run}-{next(self._groups):06d}.jsonl"
            write = partial(write_intents, self.folder, self.conn_id, name, [i for i, _ in group])
            problem: Exception | None = None
            try:
                await asyncio.to_thread(write if self.fence is None else partial(self.fence, write))
            except LeaseLost as lost:  # another run holds the batch: nothing is sent, and the run stands down
                problem = lost
            except Exception as exc:  # storage's errors are many (OSError, botocore's, ...): nothing is sent
                problem = MindVideoError(f"Could not write down the batch's creates in {self.folder}: {exc!r}")
            # Woken a step at a time: each create waiting here runs its next step in the turn after.
            for woken, (_, done) in enumerate(group, 1):
                if not done.done():
                    if problem is None:
                        done.set_result(None)
                    else:
                        done.set_exception(problem)
                if woken % WORK_PER_STEP == 0:
                    await asyncio.sleep(0)

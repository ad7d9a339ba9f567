"""The batch manifests (and work lists) a run wrote, found and read for the gallery; parsed once per version.

A batch task instance writes its manifest where its ``result_path`` says, by default
``<[mindvideo] batch_folder>/<dag_id>/<run_id>/<task_id>[-<map_index>]/manifest.jsonl``; the
operator's XCom ``mindvideo_batch`` names it either way. The gallery looks in both places and
nowhere else: the paths come from the run's identity and its records, never from a request.
A 10,000-item manifest is a few MB of JSON: parsing it for every page would cost the page its
speed, so a parsed copy is kept while the file's size, modification time and inode stay the same.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from airflow_provider_mindvideo.batch import records
from airflow_provider_mindvideo.batch.plan import ItemResult, WorkItem, load_manifest, load_work_list
from airflow_provider_mindvideo.batch.records import work_list_url

T = TypeVar("T")

_CACHE_SIZE = 16


def default_manifest_url(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """Where a batch task instance without ``result_path`` writes its manifest (as the batch operator names it)."""
    from airflow.sdk import conf

    folder = conf.get("mindvideo", "batch_folder", fallback=None)
    return records.default_manifest_url(folder, dag_id, run_id, task_id, map_index)


def named_manifest(named: str, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """The manifest a batch task instance's XCom names, unless it lies in another run's folder of the batch folder.

    The XCom is written by DAG code (or by anyone who may edit the DAG's XComs): pointed at the
    default place of another DAG's run, it would show that DAG's outputs, prompts and files to
    whoever reads this one. A ``result_path`` outside the batch folder is the DAG's own choice.
    """
    own = default_manifest_url(dag_id, run_id, task_id, map_index)
    root, run_folder = own.rsplit("/", 4)[0], own.rsplit("/", 2)[0]
    normal = _normal(named)
    if normal is None:
        return own
    if _normal(root + "/") and normal.startswith(str(_normal(root + "/"))):
        return named if normal.startswith(str(_normal(run_folder + "/"))) else own
    return named


def _normal(url: str) -> str | None:
    """``url`` with ``.`` and ``..`` resolved (None: one that climbs above its root), for comparing places."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "file", url
    elif scheme == "local":
        scheme = "file"
    if rest.startswith("//"):
        return None
    if scheme != "file":  # s3://conn@bucket/... is the bucket's object, read with that connection
        netloc, slash, path = rest.partition("/")
        rest = netloc.rsplit("@", 1)[-1].lower() + slash + path
    normal = posixpath.normpath(rest) + ("/" if rest.endswith("/") else "")
    if normal.startswith("..") or normal.startswith("/.."):
        return None
    return f"{scheme}://{normal}"


def local_path(url: str) -> str | None:
    """The file of a ``file://`` URL or plain path; None for object storage."""
    if url.startswith("file://"):
        return url[len("file://") :]
    if "://" in url:
        return None
    return url


class _Parsed:
    """Parsed files by URL, kept while the file's (size, mtime) stays the same."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[tuple[int, ...], Any]] = OrderedDict()

    def get(self, url: str, parse: Callable[[str, str], T]) -> T | None:
        version = _version(url)
        if version is None:
            return None
        with self._lock:
            found = self._entries.get(url)
            if found is not None and found[0] == version:
                self._entries.move_to_end(url)
                return found[1]  # type: ignore[no-any-return]
        text = _read(url)
        if text is None:
            return None
        parsed = parse(text, url)
        with self._lock:
            self._entries[url] = (version, parsed)
            while len(self._entries) > _CACHE_SIZE:
                self._entries.popitem(last=False)
        return parsed


def version_of(url: str) -> tuple[int, ...] | None:
    """The file's (size, mtime in ns, inode, ctime in ns; the size alone on object storage); None: no file."""
    return _version(url)


def _version(url: str) -> tuple[int, ...] | None:
    path = local_path(url)
    if path is not None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        # The batch writes a manifest under a temporary name and renames it: two writes within one
        # tick of the file system's clock share size and mtime, never the inode.
        return (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
    from airflow_provider_mindvideo.outputs import storage

    target = _storage_path(url)
    size = storage.size_of(target)
    return None if size is None else (size,)


def _read(url: str) -> str | None:
    path = local_path(url)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as file:
                return file.read()
        except OSError:
            return None
    from airflow_provider_mindvideo.outputs import storage

    return storage.read_text(_storage_path(url))


def _storage_path(url: str) -> Any:
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url)


_manifests = _Parsed()
_work_lists = _Parsed()


def manifest_rows(url: str) -> list[ItemResult] | None:
    """The rows of the manifest at ``url``; None when there is none. :raises CorruptRecordError:."""
    return _manifests.get(url, load_manifest)


def prompts(manifest_url: str) -> dict[int, str]:
    """The prompt of each item (by position) from the work list beside the manifest, where it is still there."""
    items: list[WorkItem] | None = _work_lists.get(work_list_url(manifest_url), load_work_list)
    found: dict[int, str] = {}
    for item in items or ():
        prompt = item.input.get("prompt")
        if isinstance(prompt, str):
            found[item.position] = prompt
    return found

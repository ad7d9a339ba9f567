"""Where downloads land: object stores get the final name directly, and lineage names the final file.

An object store is played by an in-memory filesystem registered for ``s3://`` that behaves as
s3fs does where it matters: an upload becomes visible only when its file is closed (also when
it is closed by ``with`` on an exception, or by garbage collection), ``discard()`` abandons
it, mode ``"xb"`` is a conditional write (``If-None-Match: *``) that fails at commit when
the key exists, and a rename is a copy and a delete.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.sdk import Asset, ObjectStoragePath
from airflow.sdk.io.store import _STORE_CACHE, attach
from airflow.sdk.lineage import HookLineageCollector, HookLineageReader
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem
from fsspec.spec import AbstractBufferedFile

from airflow_provider_mindvideo.client.errors import OutputDownloadError, OutputExistsError
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.outputs.downloads import StoredFile, download_client, store_outputs
from tests.test_downloads import PNG, HeldBody, finished_task


class Upload(AbstractBufferedFile):  # type: ignore[misc]
    """A multipart upload: parts are sent as the buffer fills, the object appears at commit."""

    def _initiate_upload(self) -> None:
        self.parts: list[bytes] = []

    def _upload_chunk(self, final: bool = False) -> bool:
        self.buffer.seek(0)
        self.parts.append(self.buffer.read())
        if final:
            self.fs.commit(self.path, b"".join(self.parts), exclusive="x" in self.mode)
        return True

    def discard(self) -> None:
        self.fs.discarded.append(self.path)
        self.buffer = None  # as s3fs: the upload is aborted, the file object is unusable


class FakeObjectStore(MemoryFileSystem):  # type: ignore[misc]
    protocol = ("s3", "s3a")
    cachable = False  # a fresh store for each test

    def __init__(self) -> None:
        super().__init__(global_store=False)
        #: Every key opened for writing, every key whose upload was abandoned, every copy.
        self.uploads: list[str] = []
        self.discarded: list[str] = []
        self.copies: list[tuple[str, str]] = []

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, **kwargs: Any) -> Any:
        if "r" in mode:
            return super()._open(path, mode, **kwargs)
        self.uploads.append(path)
        return Upload(self, path, mode=mode, block_size=block_size if block_size not in (None, "default") else 5 << 20)

    def commit(self, path: str, data: bytes, exclusive: bool) -> None:
        if exclusive and path in self.store:
            raise FileExistsError(path)  # what s3fs raises for a failed If-None-Match
        self.store[path] = MemoryFile(self, path, data)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self.copies.append((path1, path2))
        super().cp_file(path1, path2, **kwargs)

    def content(self, path: str) -> bytes:
        return bytes(self.store[f"/{path}"].getvalue())


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeObjectStore]:
    store = FakeObjectStore()
    monkeypatch.delitem(_STORE_CACHE, "s3", raising=False)
    attach("s3", fs=store)
    yield store
    _STORE_CACHE.pop("s3", None)


@pytest.fixture
def bucket(s3: FakeObjectStore) -> ObjectStoragePath:
    return ObjectStoragePath("s3://bucket/media")


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with download_client(timeout=10, allow_private_urls=True) as client:
        yield client


def test_an_object_store_gets_the_final_name_directly(
    emulator: MindVideoEmulator, client: httpx.Client, s3: FakeObjectStore, bucket: ObjectStoragePath
) -> None:
    urls = finished_task(emulator, "a red fox", "a blue whale")
    files = store_outputs(client, urls, bucket, mindvideo_task_id="t", pattern="{index}/{mindvideo_task_id}{ext}")
    assert [f.path for f in files] == ["s3://bucket/media/0/t.png", "s3://bucket/media/1/t.png"]
    assert s3.uploads == ["/bucket/media/0/t.png", "/bucket/media/1/t.png"]  # no temporary object
    assert s3.copies == []  # no rename, which a store does as copy + delete
    for stored, url in zip(files, urls, strict=True):
        content = httpx.get(url).content
        assert s3.content(stored.path.removeprefix("s3://")) == content
        assert (stored.bytes, stored.sha256, stored.written) == (
            len(content),
            hashlib.sha256(content).hexdigest(),
            True,
        )
    again = store_outputs(client, urls, bucket, mindvideo_task_id="t", pattern="{index}/{mindvideo_task_id}{ext}")
    assert [f.written for f in again] == [False, False]
    assert len(s3.uploads) == 2


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_broken_transfer_commits_nothing_to_an_object_store(s3: FakeObjectStore, bucket: ObjectStoragePath) -> None:
    class Broken(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"\x89PNG" * 1000
            raise httpx.RemoteProtocolError("peer closed connection")

    transport = httpx.MockTransport(lambda request: httpx.Response(200, headers=PNG, stream=Broken()))
    with httpx.Client(transport=transport) as client, pytest.raises(OutputDownloadError, match="peer closed"):
        store_outputs(client, ["https://cdn.example/a.png"], bucket, mindvideo_task_id="t")
    assert s3.discarded == ["/bucket/media/t_0.png"]
    assert [key for key in s3.store if not key.endswith("/")] == []


def test_two_uploads_racing_for_one_key_cannot_both_write(s3: FakeObjectStore, bucket: ObjectStoragePath) -> None:
    contents = [b"\x89PNG first picture", b"\x89PNG second picture"]
    everyone_writing = threading.Barrier(2)
    outcomes: list[StoredFile | BaseException] = [RuntimeError("did not finish")] * 2

    def upload(index: int) -> None:
        body = HeldBody(contents[index], everyone_writing)
        transport = httpx.MockTransport(lambda request: httpx.Response(200, headers=PNG, stream=body))
        with httpx.Client(transport=transport) as client:
            try:
                [outcomes[index]] = store_outputs(client, [f"https://cdn.example/{index}.png"], bucket, pattern="x.png")
            except BaseException as exc:
                outcomes[index] = exc

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [winner] = [o for o in outcomes if isinstance(o, StoredFile)]
    [loser] = [o for o in outcomes if not isinstance(o, StoredFile)]
    assert isinstance(loser, OutputExistsError), loser
    assert "at the same time" in str(loser)
    assert hashlib.sha256(s3.content("bucket/media/x.png")).hexdigest() == winner.sha256


@pytest.fixture
def lineage(monkeypatch: pytest.MonkeyPatch) -> Iterator[HookLineageCollector]:
    """Airflow's real hook lineage collector, switched on as a lineage reader plugin (OpenLineage) does."""
    from airflow.sdk import lineage, plugins_manager

    monkeypatch.setattr(plugins_manager, "get_hook_lineage_readers_plugins", lambda: [HookLineageReader])
    lineage.get_hook_lineage_collector.cache_clear()
    collector = lineage.get_hook_lineage_collector()
    assert isinstance(collector, HookLineageCollector)
    yield collector
    lineage.get_hook_lineage_collector.cache_clear()


def recorded(collector: HookLineageCollector) -> tuple[list[str], list[str]]:
    assets = collector.collected_assets
    return [i.asset.uri for i in assets.inputs], [o.asset.uri for o in assets.outputs]


def test_lineage_names_the_final_local_files_never_a_temporary_one(
    emulator: MindVideoEmulator, client: httpx.Client, tmp_path: Path, lineage: HookLineageCollector
) -> None:
    urls = finished_task(emulator, "a red fox", "a blue whale")
    local = ObjectStoragePath(f"file://{tmp_path}/media")
    files = store_outputs(client, urls, local, mindvideo_task_id="t")
    finals = [Asset(uri=f.path).uri for f in files]
    assert recorded(lineage) == ([], finals)
    # A re-run keeps the files: still this task's outputs, and the comparison is no input.
    store_outputs(client, urls, local, mindvideo_task_id="t")
    assert recorded(lineage) == ([], finals)


def test_lineage_names_the_final_object(
    emulator: MindVideoEmulator, client: httpx.Client, bucket: ObjectStoragePath, lineage: HookLineageCollector
) -> None:
    urls = finished_task(emulator)
    store_outputs(client, urls, bucket, mindvideo_task_id="t")
    assert recorded(lineage) == ([], ["s3://bucket/media/t_0.png"])

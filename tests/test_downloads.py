"""Saving outputs: real downloads from the emulator's file links into local and in-memory stores."""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import attach
from fsspec.implementations.memory import MemoryFileSystem

from airflow_provider_mindvideo.client.deadlines import Deadline
from airflow_provider_mindvideo.client.errors import (
    InputValidationError,
    OutputDownloadError,
    OutputExistsError,
    OutputUnavailableError,
    PrivateAddressError,
)
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.outputs.downloads import (
    StoredFile,
    download_client,
    file_name,
    flatten_urls,
    store_outputs,
)
from airflow_provider_mindvideo.outputs.network import GuardedNetworkBackend
from tests.servers import FakeInternet, scripted_server, trickling_server

PNG = {"Content-Type": "image/png"}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    # The emulator serves its files on 127.0.0.1.
    with download_client(timeout=10, allow_private_urls=True) as client:
        yield client


def finished_task(emulator: MindVideoEmulator, *prompts: str) -> list[str]:
    """Output URLs of tasks (one per prompt) the emulator has already finished."""
    urls = []
    with MindVideoHook() as hook:
        for prompt in prompts or ("a red fox",):
            emulator.script(prompt, "succeeded", queued_seconds=0, processing_seconds=0)
            task = hook.create_task("gpt-image-2", {"prompt": prompt})
            urls += hook.get_task(task.task_id).output_urls
    return urls


@pytest.fixture
def local(tmp_path: Path) -> ObjectStoragePath:
    return ObjectStoragePath(f"file://{tmp_path}/media")


@pytest.fixture
def memory() -> ObjectStoragePath:
    attach("memory", fs=MemoryFileSystem())
    MemoryFileSystem.store.clear()
    return ObjectStoragePath("memory://bucket/media")


def test_downloads_into_a_local_folder_with_size_hash_and_type(
    emulator: MindVideoEmulator, client: httpx.Client, local: ObjectStoragePath
) -> None:
    urls = finished_task(emulator, "a red fox", "a blue whale")
    files = store_outputs(client, urls, local, mindvideo_task_id="task_1")
    assert [Path(f.path).name for f in files] == ["task_1_0.png", "task_1_1.png"]
    for stored, url in zip(files, urls, strict=True):
        content = httpx.get(url).content
        assert (local / Path(stored.path).name).read_bytes() == content
        assert stored == StoredFile(
            url, stored.path, len(content), hashlib.sha256(content).hexdigest(), "image/png", written=True
        )
    assert stored.path.startswith("file:///")
    assert sorted(p.name for p in local.iterdir()) == ["task_1_0.png", "task_1_1.png"]  # no temporary files left


def test_downloads_into_an_in_memory_filesystem(
    emulator: MindVideoEmulator, client: httpx.Client, memory: ObjectStoragePath
) -> None:
    [url] = finished_task(emulator)
    [stored] = store_outputs(client, [url], memory, mindvideo_task_id="t", pattern="{index}/{mindvideo_task_id}{ext}")
    assert stored.path == "memory://bucket/media/0/t.png"
    assert (memory / "0" / "t.png").read_bytes() == httpx.get(url).content


def test_a_rerun_keeps_identical_files_without_rewriting(
    emulator: MindVideoEmulator, client: httpx.Client, memory: ObjectStoragePath
) -> None:
    urls = finished_task(emulator, "a red fox", "a blue whale")
    first = store_outputs(client, urls, memory, mindvideo_task_id="t")
    before = {p.name: p.stat().st_mtime if hasattr(p.stat(), "st_mtime") else None for p in memory.iterdir()}
    MemoryFileSystem.store[str((memory / "t_0.png").path)].modified = "sentinel"  # would be replaced by a write
    second = store_outputs(client, urls, memory, mindvideo_task_id="t")
    assert [f.written for f in second] == [False, False]
    assert [(f.path, f.bytes, f.sha256) for f in second] == [(f.path, f.bytes, f.sha256) for f in first]
    assert MemoryFileSystem.store[str((memory / "t_0.png").path)].modified == "sentinel"
    assert set(before) == {p.name for p in memory.iterdir()}


def test_a_different_existing_file_is_refused_unless_overwrite(
    emulator: MindVideoEmulator, client: httpx.Client, local: ObjectStoragePath
) -> None:
    [url] = finished_task(emulator)
    local.mkdir(parents=True)
    (local / "t_0.png").write_bytes(b"somebody else's picture")
    with pytest.raises(OutputExistsError, match=r"t_0.png already exists \(23 bytes\).*overwrite=True"):
        store_outputs(client, [url], local, mindvideo_task_id="t")
    assert (local / "t_0.png").read_bytes() == b"somebody else's picture"
    [stored] = store_outputs(client, [url], local, mindvideo_task_id="t", overwrite=True)
    assert stored.written
    assert (local / "t_0.png").read_bytes() == httpx.get(url).content


def test_an_expired_link_fails_clearly_and_writes_nothing(
    emulator: MindVideoEmulator, client: httpx.Client, local: ObjectStoragePath
) -> None:
    url = f"{emulator.base_url}/files/task_gone/0.png"
    with pytest.raises(OutputUnavailableError, match=r"task_gone/0.png answered HTTP 404: the link is gone or has exp"):
        store_outputs(client, [url], local)
    assert list(local.iterdir()) == []


def test_an_html_page_is_not_saved_as_media(
    emulator: MindVideoEmulator, client: httpx.Client, local: ObjectStoragePath
) -> None:
    [url] = finished_task(emulator)
    emulator.add_fault("html", route="files", status=200)
    with pytest.raises(OutputUnavailableError, match="is text/html, not media"):
        store_outputs(client, [url], local)
    assert list(local.iterdir()) == []


def test_a_server_error_is_retryable(
    emulator: MindVideoEmulator, client: httpx.Client, local: ObjectStoragePath
) -> None:
    [url] = finished_task(emulator)
    emulator.add_fault("status", route="files", status=503)
    with pytest.raises(OutputDownloadError, match="answered HTTP 503") as raised:
        store_outputs(client, [url], local)
    assert raised.value.retryable
    assert store_outputs(client, [url], local)[0].written  # the fault has passed


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "not a url",
    ],
)
def test_only_http_urls_are_downloaded_and_nothing_is_fetched_otherwise(
    emulator: MindVideoEmulator, client: httpx.Client, local: ObjectStoragePath, url: str
) -> None:
    [good] = finished_task(emulator)
    with pytest.raises(InputValidationError, match="is not an http\\(s\\) URL"):
        store_outputs(client, [good, url], local)
    assert emulator.state.requests["files"] == 0
    assert not local.exists()


def test_a_large_video_is_streamed_with_bounded_memory(
    emulator: MindVideoEmulator, client: httpx.Client, local: ObjectStoragePath
) -> None:
    size = 48 * 1024 * 1024
    emulator.script("long take", "succeeded", queued_seconds=0, processing_seconds=0, output_bytes=size)
    with MindVideoHook() as hook:
        task = hook.create_task("veo3-1-fast", {"prompt": "a long take of the sea"})
        [url] = hook.get_task(task.task_id).output_urls
    tracemalloc.start()
    try:
        [stored] = store_outputs(client, [url], local, mindvideo_task_id=task.task_id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (stored.bytes, stored.content_type, Path(stored.path).suffix) == (size, "video/mp4", ".mp4")
    assert (local / f"{task.task_id}_0.mp4").stat().st_size == size
    # The emulator runs in this process too, so its chunks count here: a bound, not a tight figure.
    assert peak < size / 4, f"peak {peak} bytes of Python memory for a {size}-byte file"


def test_a_broken_transfer_leaves_no_partial_file(local: ObjectStoragePath) -> None:
    class Broken(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"\x89PNG" * 1000
            raise httpx.RemoteProtocolError("peer closed connection")

    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"Content-Type": "image/png"}, stream=Broken())
    )
    with httpx.Client(transport=transport) as client, pytest.raises(OutputDownloadError, match="peer closed"):
        store_outputs(client, ["https://cdn.example/a.png"], local, mindvideo_task_id="t")
    assert list(local.iterdir()) == []


def test_redirects_are_followed_without_credentials(local: ObjectStoragePath) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "api.mindvideo.example":
            return httpx.Response(302, headers={"Location": "https://storage.example/signed/a.png?sig=1"})
        return httpx.Response(200, headers={"Content-Type": "image/png"}, content=b"png")

    with download_client() as client:
        client._transport = httpx.MockTransport(answer)
        [stored] = store_outputs(client, ["https://api.mindvideo.example/files/t/0.png"], local, mindvideo_task_id="t")
    assert [r.url.host for r in seen] == ["api.mindvideo.example", "storage.example"]
    assert all("authorization" not in r.headers for r in seen)
    assert stored.bytes == 3


def test_flatten_urls_accepts_one_url_lists_and_mapped_lists() -> None:
    assert flatten_urls("https://a/0.png") == ["https://a/0.png"]
    assert flatten_urls([["https://a/0.png"], ["https://b/0.png", "https://b/1.png"]]) == [
        "https://a/0.png",
        "https://b/0.png",
        "https://b/1.png",
    ]


def test_file_names_from_the_pattern() -> None:
    url = "https://cdn.example/out/abc.webp?sig=1"
    assert (
        file_name(
            "{mindvideo_task_id}_{index}{ext}", mindvideo_task_id="t", index=2, url=url, content_type="image/webp"
        )
        == "t_2.webp"
    )
    assert file_name("{url_name}", mindvideo_task_id=None, index=0, url=url, content_type="image/webp") == "abc.webp"
    assert file_name(
        "{mindvideo_task_id}{ext}", mindvideo_task_id=None, index=0, url=url, content_type="application/octet-stream"
    ) == (f"url-{hashlib.sha256(url.encode()).hexdigest()[:12]}.webp")
    with pytest.raises(InputValidationError, match=r"file_name '\{task\}' is not a valid pattern"):
        file_name("{task}", mindvideo_task_id="t", index=0, url=url, content_type="image/png")
    with pytest.raises(InputValidationError, match="not a path inside the destination"):
        file_name("../{index}", mindvideo_task_id="t", index=0, url=url, content_type="image/png")


def test_an_output_url_into_this_machine_is_refused_by_default(local: ObjectStoragePath) -> None:
    with scripted_server() as server:
        server.routes["/out/0.png"] = (302, {"Location": server.url("/internal/secret")}, b"")
        server.routes["/internal/secret"] = (200, PNG, b"secret")
        with download_client(timeout=10) as client, pytest.raises(PrivateAddressError) as refused:
            store_outputs(client, [server.url("/out/0.png")], local, mindvideo_task_id="t")
        assert server.requests == []
    message = str(refused.value)
    assert f"Refused to download {server.url('/out/0.png')}: 127.0.0.1 is a loopback address" in message
    assert "allow_private_urls=True" in message
    assert "AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS" in message
    assert not refused.value.retryable
    assert list(local.iterdir()) == []


class HeldBody(httpx.SyncByteStream):
    """A body whose last chunk waits until every download in the race has started writing."""

    def __init__(self, content: bytes, everyone_writing: threading.Barrier) -> None:
        self.content = content
        self.everyone_writing = everyone_writing

    def __iter__(self) -> Iterator[bytes]:
        yield self.content[:1]
        self.everyone_writing.wait(timeout=30)
        yield self.content[1:]


def race(destination: ObjectStoragePath, contents: list[bytes]) -> list[StoredFile | BaseException]:
    """Download ``contents`` into the same file name at once, one thread each; what each one got."""
    everyone_writing = threading.Barrier(len(contents))
    outcomes: list[StoredFile | BaseException] = [RuntimeError("did not finish")] * len(contents)

    def download(index: int) -> None:
        transport = httpx.MockTransport(
            lambda request: httpx.Response(200, headers=PNG, stream=HeldBody(contents[index], everyone_writing))
        )
        with httpx.Client(transport=transport) as client:
            try:
                [outcomes[index]] = store_outputs(
                    client, [f"https://cdn.example/{index}.png"], destination, pattern="same.png"
                )
            except BaseException as exc:
                outcomes[index] = exc

    threads = [threading.Thread(target=download, args=(i,)) for i in range(len(contents))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def assert_one_winner(destination: ObjectStoragePath, outcomes: list[StoredFile | BaseException]) -> None:
    [winner] = [o for o in outcomes if isinstance(o, StoredFile)]
    [loser] = [o for o in outcomes if not isinstance(o, StoredFile)]
    assert winner.written
    assert isinstance(loser, OutputExistsError), loser
    assert "same.png" in str(loser) and "at the same time" in str(loser)
    stored = (destination / "same.png").read_bytes()
    assert (len(stored), hashlib.sha256(stored).hexdigest()) == (winner.bytes, winner.sha256)
    assert [p.name for p in destination.iterdir()] == ["same.png"]  # no partial file left


def test_two_downloads_racing_for_one_name_cannot_both_write(local: ObjectStoragePath) -> None:
    assert_one_winner(local, race(local, [b"\x89PNG first picture", b"\x89PNG second picture"]))


def test_without_hard_links_the_race_is_still_decided_once(
    local: ObjectStoragePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hard_links(src: str, dst: str) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", dst)

    monkeypatch.setattr(os, "link", no_hard_links)
    assert_one_winner(local, race(local, [b"\x89PNG first picture", b"\x89PNG second picture"]))


def test_two_downloads_of_the_same_content_keep_one_file(local: ObjectStoragePath) -> None:
    outcomes = race(local, [b"\x89PNG the same picture"] * 2)
    assert sorted(o.written for o in outcomes if isinstance(o, StoredFile)) == [False, True]
    assert (local / "same.png").read_bytes() == b"\x89PNG the same picture"


def test_a_rerun_over_a_gzip_served_file_keeps_it(client: httpx.Client, local: ObjectStoragePath) -> None:
    picture = b"\x89PNG" + bytes(range(256)) * 64
    gzipped = {"Content-Type": "image/png", "Content-Encoding": "gzip"}
    with scripted_server({"/a.png": (200, gzipped, gzip.compress(picture))}) as server:
        [first] = store_outputs(client, [server.url("/a.png")], local, mindvideo_task_id="t")
        # Content-Length is the compressed size; what was stored is the decoded picture.
        [again] = store_outputs(client, [server.url("/a.png")], local, mindvideo_task_id="t")
        server.routes["/a.png"] = (200, gzipped, gzip.compress(picture[::-1]))
        with pytest.raises(OutputExistsError, match=r"t_0\.png already exists"):
            store_outputs(client, [server.url("/a.png")], local, mindvideo_task_id="t")
    assert (first.written, again.written) == (True, False)
    assert (again.bytes, again.sha256) == (len(picture), hashlib.sha256(picture).hexdigest())
    assert (local / "t_0.png").read_bytes() == picture


def test_file_names_with_folders_create_them(
    emulator: MindVideoEmulator, client: httpx.Client, local: ObjectStoragePath
) -> None:
    urls = finished_task(emulator, "a red fox", "a blue whale")
    pattern = "{mindvideo_task_id}/{index}/picture{ext}"
    files = store_outputs(client, urls, local, mindvideo_task_id="t", pattern=pattern)
    assert [f.path for f in files] == [f"{local}/t/0/picture.png", f"{local}/t/1/picture.png"]
    assert (local / "t" / "1" / "picture.png").read_bytes() == httpx.get(urls[1]).content
    again = store_outputs(client, urls, local, mindvideo_task_id="t", pattern=pattern)
    assert [f.written for f in again] == [False, False]


@pytest.mark.parametrize(
    ("headers", "body"),
    [({}, b""), ({"Transfer-Encoding": "chunked"}, b"0\r\n\r\n")],
    ids=["content-length-0", "chunked"],
)
def test_an_empty_body_is_not_saved_as_media(
    client: httpx.Client, local: ObjectStoragePath, headers: dict[str, str], body: bytes
) -> None:
    with scripted_server({"/a.png": (200, {**PNG, **headers}, body)}) as server:
        with pytest.raises(OutputDownloadError, match=r"/a\.png answered HTTP 200 with an empty body") as raised:
            store_outputs(client, [server.url("/a.png")], local, mindvideo_task_id="t")
        assert raised.value.retryable  # a storage hiccup as far as we can tell: retries are free
        assert list(local.iterdir()) == []
        # Over an earlier, whole file: still the empty answer's fault, not a "different file".
        (local / "t_0.png").write_bytes(b"\x89PNG an earlier picture")
        with pytest.raises(OutputDownloadError, match="empty body"):
            store_outputs(client, [server.url("/a.png")], local, mindvideo_task_id="t")
    assert (local / "t_0.png").read_bytes() == b"\x89PNG an earlier picture"


def test_a_public_link_redirecting_into_this_machine_saves_nothing(local: ObjectStoragePath) -> None:
    # The case: a link on a public host whose redirect points at 127.0.0.1/internal/secret.
    with scripted_server() as server:
        server.routes["/out/0.png"] = (302, {"Location": server.url("/internal/secret")}, b"")
        server.routes["/internal/secret"] = (200, PNG, b"secret")
        internet = FakeInternet({"93.184.215.14": server.port})
        with download_client(timeout=10) as client:
            pool = client._transport._pool  # type: ignore[attr-defined]
            assert isinstance(pool._network_backend, GuardedNetworkBackend)  # the default client is guarded
            dns = {"cdn.example": ["93.184.215.14"]}
            pool._network_backend = GuardedNetworkBackend(internet, resolve=lambda host, port: dns.get(host, [host]))
            with pytest.raises(PrivateAddressError, match=r"Refused to download http://cdn\.example/out/0\.png: 127"):
                store_outputs(client, ["http://cdn.example/out/0.png"], local, mindvideo_task_id="t")
        assert server.requests == ["/out/0.png"]  # the redirect was never followed
    assert internet.connected == ["93.184.215.14"]
    assert list(local.iterdir()) == []


def test_a_redirect_to_a_data_url_is_a_clear_unavailable_output(local: ObjectStoragePath) -> None:
    # httpx's InvalidURL is no HTTPError: it used to escape as a bare error and fail a whole batch.
    routes = {"/a.png": (302, {"Location": "data:image/png;base64,iVBORw0KGgo="}, b"")}
    with (
        scripted_server(routes) as server,
        download_client(timeout=5, allow_private_urls=True) as client,
        pytest.raises(OutputUnavailableError, match=r"a\.png"),
    ):
        store_outputs(client, [server.url("/a.png")], local, mindvideo_task_id="t")
    assert not local.exists() or list(local.iterdir()) == []


def test_a_trickling_download_ends_by_its_deadline(local: ObjectStoragePath) -> None:
    # One byte every 0.1 s never trips the 5 s per-read timeout; the deadline bounds the whole file.
    # Unbounded, the file would take three hours: a download that ends at all, with the deadline's
    # timeout, is the proof (no wall-clock bound, which a busy machine would stretch).
    deadline = Deadline(time.monotonic() + 1.0)
    with (
        trickling_server(b"x" * 100_000, content_type="image/png") as url,
        download_client(timeout=5, allow_private_urls=True) as client,
        pytest.raises(OutputDownloadError, match="Timeout"),
    ):
        store_outputs(client, [f"{url}/a.png"], local, mindvideo_task_id="t", deadline=deadline)
    assert not [path for path in local.iterdir() if path.name.endswith(".png")]


def test_a_cancelled_deadline_stops_a_download_running_in_another_thread(local: ObjectStoragePath) -> None:
    deadline = Deadline(time.monotonic() + 3600)
    errors: list[BaseException] = []

    def save() -> None:
        try:
            store_outputs(client, [f"{url}/a.png"], local, mindvideo_task_id="t", deadline=deadline)
        except BaseException as exc:
            errors.append(exc)

    with (
        trickling_server(b"x" * 1000, byte_every=0.01, content_type="image/png") as url,
        download_client(timeout=5, allow_private_urls=True) as client,
    ):
        saver = threading.Thread(target=save)
        saver.start()
        # Cancelled while the body is being written (its partial file exists), not before it began.
        # (The 20 s and 30 s caps only stop a hang: the file appears and the thread ends in ms.)
        waited_until = time.monotonic() + 20
        while not (local.exists() and any(local.iterdir())) and time.monotonic() < waited_until:
            time.sleep(0.01)
        assert local.exists() and any(local.iterdir())
        deadline.cancel()
        saver.join(timeout=30)
        assert not saver.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], OutputDownloadError)

"""Save MindVideo outputs into object storage: streamed, written atomically where the store allows, idempotent.

Output URLs are public links that may expire, so pipelines copy the media into their own
storage. Everything here works on an ``httpx.Client`` and an ``ObjectStoragePath`` given by
the caller: the operator owns the client, tests can hand in any transport or filesystem.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from airflow_provider_mindvideo import __version__
from airflow_provider_mindvideo.client.deadlines import Deadline, enforce_deadlines, within
from airflow_provider_mindvideo.client.errors import (
    InputValidationError,
    OutputDownloadError,
    OutputExistsError,
    OutputUnavailableError,
    PrivateAddressError,
)
from airflow_provider_mindvideo.outputs import storage
from airflow_provider_mindvideo.outputs.network import guard_client

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

#: XCom key of the manifest: one entry per stored file.
XCOM_FILES_KEY = "mindvideo_files"
#: Default name of a stored file, relative to the destination folder.
DEFAULT_FILE_NAME = "{mindvideo_task_id}_{index}{ext}"
# Big enough to keep per-chunk overhead negligible, small enough that a video never sits in memory.
CHUNK_BYTES = storage.CHUNK_BYTES
# Media only: an expired link that answers 200 with an HTML or JSON error page must not be saved as a video.
_MEDIA_TYPES = ("image/", "video/", "audio/")
_GENERIC_TYPE = "application/octet-stream"
_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
}
_PERMANENT_STATUS = frozenset({401, 403, 404, 410})


@dataclass(frozen=True)
class StoredFile:
    """One downloaded output: where it came from, where it is, and what it is."""

    url: str
    path: str
    bytes: int
    sha256: str
    content_type: str
    #: False when an identical file was already there and was left untouched.
    written: bool

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


def flatten_urls(urls: str | Iterable[Any]) -> list[str]:
    """The URLs as one flat list: accepts a URL, a list, or a list of lists (mapped outputs)."""
    if isinstance(urls, str):
        return [urls]
    flat: list[str] = []
    for item in urls:
        flat.extend(flatten_urls(item) if not isinstance(item, str) else [item])
    return flat


def check_download_url(url: str) -> None:
    """Refuse anything but http(s): a ``file:`` or ``ftp:`` URL in a template must not read local files."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputValidationError(f"Output URL {url!r} is not an http(s) URL; only http(s) links are downloaded")


def file_name(pattern: str, *, mindvideo_task_id: str | None, index: int, url: str, content_type: str) -> str:
    """The stored file's name from ``pattern`` (``{mindvideo_task_id}``, ``{index}``, ``{ext}``, ``{url_name}``)."""
    url_name = posixpath.basename(urlsplit(url).path) or "output"
    try:
        name = pattern.format(
            mindvideo_task_id=mindvideo_task_id or f"url-{hashlib.sha256(url.encode()).hexdigest()[:12]}",
            index=index,
            ext=extension_for(content_type, url_name),
            url_name=url_name,
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise InputValidationError(
            f"file_name {pattern!r} is not a valid pattern: {exc!r}; "
            "use {mindvideo_task_id}, {index}, {ext} and {url_name}"
        ) from None
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts or parts[-1] in ("", ".") or "\0" in name:
        raise InputValidationError(f"file_name {pattern!r} gives {name!r}, which is not a path inside the destination")
    return name


def extension_for(content_type: str, url_name: str) -> str:
    if content_type in _EXTENSIONS:
        return _EXTENSIONS[content_type]
    if content_type != _GENERIC_TYPE:
        guessed = mimetypes.guess_extension(content_type)
        if guessed:
            return guessed
    return posixpath.splitext(url_name)[1]


#: How a refused download tells the user to allow one.
ALLOW_PRIVATE_URLS_HINT = (
    "downloads only go to public addresses; to allow this one, set allow_private_urls=True on the operator "
    "(download_allow_private_urls=True with download_to), or allow_private_urls = True in the [mindvideo] "
    "section of the Airflow config (AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS=true)"
)


def download_client(timeout: float = 60.0, *, allow_private_urls: bool = False) -> httpx.Client:
    """A client for output links: no MindVideo credentials (the links are public), redirects followed.

    Unless ``allow_private_urls``, every connection it opens -- the link's and each redirect's --
    refuses loopback, private, link-local and cloud-metadata addresses (see :mod:`.network`).
    """
    client = httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        headers={"User-Agent": f"airflow-provider-mindvideo/{__version__}"},
    )
    # Bounded as a whole only under a deadline (store_outputs' ``deadline``): ``timeout`` is per
    # socket operation, which a server trickling a byte a second never trips.
    client = enforce_deadlines(client)
    return client if allow_private_urls else guard_client(client)


def store_outputs(
    client: httpx.Client,
    urls: Sequence[str],
    destination: ObjectStoragePath,
    *,
    mindvideo_task_id: str | None = None,
    pattern: str = DEFAULT_FILE_NAME,
    overwrite: bool = False,
    record_lineage: bool = True,
    deadline: Deadline | None = None,
) -> list[StoredFile]:
    """Download every URL into ``destination``, in order; checks all URLs before the first byte moves.

    :param record_lineage: Report each stored file to Airflow's hook lineage. Off in the
        triggerer, whose collector belongs to no task and would keep every file to the end.
    :param deadline: When every download must have ended (a client from :func:`download_client`),
        however slowly the server sends; its owner may cancel it (a batch that stops).
    """
    for url in urls:
        check_download_url(url)
    # Through the store's filesystem: ObjectStoragePath.mkdir would build one of its own.
    destination.fs.makedirs(destination.path, exist_ok=True)
    stored = []
    for index, url in enumerate(urls):
        with within(deadline) if deadline is not None else contextlib.nullcontext():
            stored.append(store_output(client, url, destination, mindvideo_task_id, index, pattern, overwrite))
        if record_lineage:
            record_output(destination, stored[-1].path)
    return stored


def record_output(destination: ObjectStoragePath, path: str) -> None:
    """Report a stored file to Airflow's hook lineage as an output of the running task."""
    from airflow.sdk.lineage import get_hook_lineage_collector

    # The final file, whether written now or kept: never a temporary name, and the
    # comparison's read of a kept file is no input of this task.
    get_hook_lineage_collector().add_output_asset(context=destination, uri=path)


def store_output(
    client: httpx.Client,
    url: str,
    destination: ObjectStoragePath,
    mindvideo_task_id: str | None,
    index: int,
    pattern: str,
    overwrite: bool,
) -> StoredFile:
    """Stream one URL into ``destination``; keep an identical existing file, refuse a different one."""
    try:
        with client.stream("GET", url) as response:
            content_type = _media_type(response, url)
            target = destination / file_name(
                pattern, mindvideo_task_id=mindvideo_task_id, index=index, url=url, content_type=content_type
            )
            body = _non_empty(response, url)
            if not overwrite and storage.exists(target):
                return _compare(url, target, content_type, response, body)
            stored = storage.write_new(target, body, overwrite=overwrite)
    except httpx.HTTPError as exc:
        raise OutputDownloadError(f"Downloading {url} failed: {type(exc).__name__}: {exc}") from None
    except httpx.InvalidURL as exc:
        # A redirect to a link no client can follow (data:, a mangled URL): no retry fixes it.
        raise OutputUnavailableError(f"Downloading {url} failed: {type(exc).__name__}: {exc}") from None
    except PrivateAddressError as exc:
        # The guard names the host it refused (perhaps a redirect's); the user needs the link too.
        raise PrivateAddressError(f"Refused to download {url}: {exc.message}; {ALLOW_PRIVATE_URLS_HINT}") from None
    ours = stored.fingerprint
    if not stored.written:
        # Another writer took the name while this file downloaded (e.g. mapped tasks whose
        # file names collide). Its twin is as good as ours; anything else is a collision.
        theirs = storage.fingerprint_of(target)
        if theirs != ours:
            raise OutputExistsError(
                f"{target} was written by another download at the same time as {url} "
                f"({theirs.bytes} bytes, sha256 {theirs.sha256[:12]}..., not this one's {ours.bytes} bytes, "
                f"sha256 {ours.sha256[:12]}...); it was left as it is. Give each download its own file_name "
                "(e.g. with {mindvideo_task_id} and {index}), or set overwrite=True"
            )
    return StoredFile(url, str(target), ours.bytes, ours.sha256, content_type, written=stored.written)


def _media_type(response: httpx.Response, url: str) -> str:
    if response.status_code in _PERMANENT_STATUS:
        raise OutputUnavailableError(
            f"Output {url} answered HTTP {response.status_code}: the link is gone or has expired",
            http_status=response.status_code,
        )
    if response.status_code != 200:
        raise OutputDownloadError(
            f"Output {url} answered HTTP {response.status_code}", http_status=response.status_code
        )
    content_type: str = str(response.headers.get("Content-Type", "")).split(";")[0].strip().lower()
    if not (content_type.startswith(_MEDIA_TYPES) or content_type == _GENERIC_TYPE):
        raise OutputUnavailableError(
            f"Output {url} is {content_type or 'untyped'!s}, not media (an expired link's error page?); not saved"
        )
    return content_type


def _non_empty(response: httpx.Response, url: str) -> Iterator[bytes]:
    """The decoded body; raises at its end if there was nothing, so that nothing is stored.

    An empty 200 is no picture, whatever its Content-Type says. Retryable: as far as we can
    tell it is the storage's hiccup, and a download costs nothing to retry.
    """
    empty = True
    for chunk in response.iter_bytes(CHUNK_BYTES):
        empty = empty and not chunk
        yield chunk
    if empty:
        raise OutputDownloadError(f"Output {url} answered HTTP 200 with an empty body; not saved")


def _compare(
    url: str, target: ObjectStoragePath, content_type: str, response: httpx.Response, body: Iterator[bytes]
) -> StoredFile:
    # Compare what is stored -- the decoded bytes -- with what this answer decodes to.
    local = storage.fingerprint_of(target)
    announced = response.headers.get("Content-Length")
    encoded = response.headers.get("Content-Encoding", "identity").strip().lower() != "identity"
    if not encoded and announced not in (None, "0") and announced.isdigit() and int(announced) != local.bytes:
        # Different sizes: no need to read the rest of a video to know it differs. (With a
        # Content-Encoding, the length is the compressed one: it says nothing here.)
        raise _exists(target, url, local.bytes, f"{announced} bytes")
    remote = storage.fingerprint(body)
    if remote != local:
        raise _exists(target, url, local.bytes, f"{remote.bytes} bytes, sha256 {remote.sha256[:12]}...")
    return StoredFile(url, str(target), local.bytes, local.sha256, content_type, written=False)


def _exists(target: ObjectStoragePath, url: str, local_size: int, remote: str) -> OutputExistsError:
    return OutputExistsError(
        f"{target} already exists ({local_size} bytes) with other content than {url} ({remote}); "
        "set overwrite=True to replace it"
    )


def manifest_summary(files: Sequence[StoredFile]) -> Mapping[str, Any]:
    """What an asset event says about a download: counts only, the manifest is in XCom."""
    return {
        "files": len(files),
        "written": sum(f.written for f in files),
        "bytes": sum(f.bytes for f in files),
    }

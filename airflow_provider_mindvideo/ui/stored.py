"""A stored output file, opened for serving only when it is the file its manifest describes.

The manifest naming the file is written by DAG code on a worker, not by the API server: its
``path`` could name any file of the API server's disk (``airflow.cfg`` and its fernet key). A
file is served only when its size and SHA-256 are the ones the batch recorded when it saved it,
which nobody can write down for a file whose content they do not know; it is hashed through the
descriptor it is then served from (no swap of a link in between), once per version of the file.
An object in storage (any other scheme: ``local://`` is the disk too) is copied while hashed and
served from the copy only when it matches.

Its type is the manifest's only when it is media a browser shows without running anything:
anything else (HTML, SVG, XML) goes out as an attachment of ``application/octet-stream``, and
every answer says ``nosniff`` and sandboxes itself: no stored file runs script on Airflow's origin.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import IO, Any

_CHUNK = 1 << 16
#: Shown inline as they are: they carry no script. SVG is an image that does.
_INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "image/avif"})
_INLINE_PREFIXES = ("video/", "audio/")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}

_verified_lock = threading.Lock()
_verified: OrderedDict[tuple[Any, ...], str] = OrderedDict()  # (path, dev, ino, size, mtime, ctime) -> sha256


def served_type(content_type: Any) -> tuple[str, dict[str, str]]:
    """The type a stored file is served as, and the headers that go with it."""
    declared = str(content_type or "").split(";")[0].strip().lower()
    # A type and a subtype, nothing else: a line break in the manifest's text would start a header.
    if _MEDIA_TYPE.fullmatch(declared) and (declared in _INLINE_TYPES or declared.startswith(_INLINE_PREFIXES)):
        return declared, dict(HEADERS)
    return "application/octet-stream", HEADERS | {"Content-Disposition": "attachment"}


def open_verified(path: str, described: Mapping[str, Any]) -> tuple[IO[bytes], int] | None:
    """The file at ``path`` opened for reading (and its size) if it is the one ``described``; else None."""
    sha256, size = described.get("sha256"), described.get("bytes")
    if not isinstance(sha256, str) or not isinstance(size, int) or isinstance(size, bool):
        return None
    try:
        file = open(path, "rb")  # noqa: SIM115  # handed to the response, closed when it is sent
    except OSError:
        return None
    stat = os.fstat(file.fileno())
    key = (path, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    with _verified_lock:
        known = _verified.get(key)
    if known is None and stat.st_size == size:
        digest = hashlib.sha256()
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
        known = digest.hexdigest()
        file.seek(0)
        with _verified_lock:
            _verified[key] = known
            while len(_verified) > 256:
                _verified.popitem(last=False)
    if stat.st_size != size or known != sha256.lower():
        file.close()
        return None
    return file, size


def fetch_verified(url: str, described: Mapping[str, Any]) -> tuple[IO[bytes], int] | None:
    """A copy of the object at ``url`` (any scheme ObjectStoragePath knows) if it is the one ``described``; else None.

    The manifest names the URL, and with it the scheme and even the connection (``s3://conn@bucket``):
    the object is copied while hashed (in memory up to 8 MB, then a temporary file) and nothing
    of it is sent unless it is the file the batch saved.
    """
    sha256, size = described.get("sha256"), described.get("bytes")
    if not isinstance(sha256, str) or not isinstance(size, int) or isinstance(size, bool):
        return None
    from airflow.sdk import ObjectStoragePath

    copy = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115  # handed to the response
    digest, length = hashlib.sha256(), 0
    try:
        with ObjectStoragePath(url).open("rb") as source:
            while (chunk := source.read(_CHUNK)) and length <= size:
                digest.update(chunk)
                copy.write(chunk)
                length += len(chunk)
    except Exception:  # unreachable, unknown scheme, no such object: nothing to serve
        copy.close()
        return None
    if length != size or digest.hexdigest() != sha256.lower():
        copy.close()
        return None
    copy.seek(0)
    return copy, size


def chunks(file: IO[bytes]) -> Iterator[bytes]:
    with file:
        while chunk := file.read(_CHUNK):
            yield chunk

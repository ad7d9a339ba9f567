"""Write a stream under its final name in any ``ObjectStoragePath`` store, whole or not at all, never clobbering.

Readers must never see half a file, and two writers racing for one name (mapped tasks with
colliding file names) must not both believe they wrote it. How to get both depends on the store:

- a local folder: write a hidden temporary file beside the target, then ``os.link`` it to the
  final name -- an atomic rename that fails if the name exists (where hard links are not
  supported: rename under a lock on the folder);
- an object store (S3, GCS, Azure Blob): upload under the final name directly. The object
  appears only when the upload completes, so there is nothing to rename -- which there would
  be a copy and a delete. On S3 and GCS the upload is a conditional write (mode ``"xb"``:
  ``If-None-Match: *`` / ``ifGenerationMatch=0``) that fails if the key exists; on Azure the
  check before writing is a best effort;
- any other store: write a temporary file, check the name is free, then rename. The check
  and the rename are two steps there: a best effort against races.

``fsspec`` calls go to the store directly, not through ``ObjectStoragePath.open``, whose
lineage tracking would record temporary names and our own comparison reads.
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

CHUNK_BYTES = 1 << 20
#: Stores whose uploads appear whole or not at all, under the name they are written to.
ATOMIC_UPLOADS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
#: ...and those whose fsspec filesystem (s3fs, gcsfs) makes mode "xb" a conditional write.
EXCLUSIVE_UPLOADS = frozenset({"s3", "s3a", "gs", "gcs"})
# link() answers these where a filesystem has no hard links (FAT, some FUSE and SMB mounts).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS})


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a stored file's content."""

    bytes: int
    sha256: str


@dataclass(frozen=True)
class Written:
    fingerprint: Fingerprint
    #: False when the name was taken (by another writer) before this file could take it.
    written: bool


class _Hashing:
    """Counts and hashes the chunks that pass through it."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self._digest = hashlib.sha256()
        self._size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._digest.update(chunk)
            self._size += len(chunk)
            yield chunk

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self._size, self._digest.hexdigest())


def exists(target: ObjectStoragePath) -> bool:
    return bool(target.fs.exists(target.path))


def size_of(target: ObjectStoragePath) -> int | None:
    """The stored file's size in bytes; None when there is none."""
    try:
        return int(target.fs.size(target.path))
    except FileNotFoundError:
        return None


def fingerprint(chunks: Iterable[bytes]) -> Fingerprint:
    """Size and sha256 of a stream, read to its end."""
    content = _Hashing(chunks)
    for _ in content:
        pass
    return content.fingerprint


def fingerprint_of(target: ObjectStoragePath) -> Fingerprint:
    """Size and sha256 of a stored file."""
    return fingerprint(_read(target))


def _read(target: ObjectStoragePath) -> Iterator[bytes]:
    with target.fs.open(target.path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def write_new(target: ObjectStoragePath, chunks: Iterable[bytes], *, overwrite: bool = False) -> Written:
    """Store ``chunks`` as ``target``, whole or not at all.

    Without ``overwrite``, an existing file under the name is left alone and the result says
    ``written=False``: the caller compares fingerprints to tell a twin from a collision. An
    exception while ``chunks`` are read leaves nothing behind.
    """
    # file_name patterns may contain "/": the folders below the destination may not exist yet.
    target.fs.makedirs(target.parent.path, exist_ok=True)
    content = _Hashing(chunks)
    if isinstance(target.fs, LocalFileSystem):
        written = _write_local(target.path, content, overwrite)
    elif target.protocol in ATOMIC_UPLOADS:
        written = _write_direct(target, content, overwrite)
    else:
        written = _write_renamed(target, content, overwrite)
    return Written(content.fingerprint, written)


def _partial_name(folder: str, name: str) -> str:
    return f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.partial"


def _write_local(path: str, content: Iterable[bytes], overwrite: bool) -> bool:
    partial = _partial_name(os.path.dirname(path), os.path.basename(path))
    try:
        with open(partial, "xb") as out:
            for chunk in content:
                out.write(chunk)
            out.flush()
            # On disk before it has its final name: a crash must not leave an empty "whole" file.
            os.fsync(out.fileno())
        if overwrite:
            os.replace(partial, path)
            return True
        try:
            os.link(partial, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            return _rename_unless_taken(partial, path)
        return True
    finally:
        with suppress(FileNotFoundError):
            os.unlink(partial)


def _rename_unless_taken(partial: str, path: str) -> bool:
    import fcntl  # POSIX only, as Airflow's workers are; only needed without hard links

    # Advisory, but every download of this provider takes it before looking and renaming.
    folder = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        if os.path.lexists(path):
            return False
        os.rename(partial, path)
        return True
    finally:
        os.close(folder)


def _write_direct(target: ObjectStoragePath, content: Iterable[bytes], overwrite: bool) -> bool:
    fs = target.fs
    exclusive = not overwrite and target.protocol in EXCLUSIVE_UPLOADS
    if not overwrite and not exclusive and fs.exists(target.path):
        return False
    upload = fs.open(target.path, "xb" if exclusive else "wb")
    try:
        for chunk in content:
            upload.write(chunk)
    except BaseException:
        _abandon(upload)
        raise
    try:
        upload.close()  # the commit: the object appears now
    except FileExistsError:
        return False  # the conditional write found the key taken
    return True


def _abandon(upload: Any) -> None:
    # Closing an upload -- as ``with`` would on an exception, or garbage collection -- commits
    # what was written so far: a truncated object under the final name. Abort it instead.
    discard = getattr(upload, "discard", None)
    if discard is not None:
        with suppress(Exception):
            discard()
    if not getattr(upload, "closed", True):
        with suppress(AttributeError):
            upload.closed = True


def _write_renamed(target: ObjectStoragePath, content: Iterable[bytes], overwrite: bool) -> bool:
    fs = target.fs
    partial = _partial_name(target.parent.path, target.name)
    try:
        with fs.open(partial, "wb") as out:
            for chunk in content:
                out.write(chunk)
        if not overwrite and fs.exists(target.path):
            return False
        fs.mv(partial, target.path)
        return True
    finally:
        with suppress(FileNotFoundError):
            fs.rm(partial)


def read_text(target: ObjectStoragePath) -> str | None:
    """A stored text file (UTF-8), or None when there is none."""
    if not exists(target):
        return None
    return b"".join(_read(target)).decode("utf-8")


def replace_text(target: ObjectStoragePath, text: str) -> None:
    """Store ``text`` as ``target``, replacing what is there, whole or not at all (a manifest, a work list)."""
    write_new(target, [text.encode("utf-8")], overwrite=True)

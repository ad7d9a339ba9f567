"""One run of a batch at a time: a lease beside the manifest, renewed while its holder works, fencing its journal.

Airflow may run one batch trigger twice at once: a triggerer that missed its heartbeats (a
loaded loop, a paused VM, a network split) has its triggers re-assigned while it still runs
them, and it cancels them only once it notices -- or never, if it lost the database. Both
runs would then walk the same items: the creates cost nothing twice (same keys), but two
writers would race on one manifest and one intents folder, each would judge ``max_cost`` from
what it alone saw, and each would fire its own event.

So a run first **claims** ``<name>.lease.json`` (its holder's token, try, host and pid, and a
heartbeat counter it renews every quarter of ``[mindvideo] batch_lease_seconds``). Whoever
finds it held by another run stands down: it sends nothing and writes nothing, and waits --
until the holder **releases** it, leaving the batch's final event in it, which the follower
fires as its own (same payload: Airflow takes the first and ignores the other), or until the
lease goes **stale** (not renewed for a whole lease period by the follower's own clock, or its
wall-clock time older than two periods): the holder died, and the follower takes the batch
over from its journal, as a restarted triggerer would. A run of a *later* try (Airflow moved on)
that finds an earlier try's run holding the batch marks the lease ``wanted_by`` its try: the
holder stands down at its next renewal or fenced write and releases the batch.

The holder checks the lease before each request it sends (in memory: renewed within half a
period) and **fences** every journal write: the lease is read and the write made under one
lock, so a holder that was frozen (SIGSTOP, a paused VM) and resumes after a take-over writes
nothing more -- and since a new create is sent only after its intent is stored (fenced), any
create it may still send was written down before the take-over, and the new holder counts it
against ``max_cost``. What that holds where:

- a local or network filesystem (``file://``): claim, renewal, release and fenced writes run
  under ``flock`` on ``<name>.lease.lock``, so they are atomic between processes of every host
  whose filesystem honours ``flock`` (local disks; NFS v4 and most SMB mounts);
- S3 and GCS: the first claim is a conditional write (only one run creates the lease); renewals,
  take-overs and fenced writes read then write -- a best effort: two runs could both hold the
  lease for a moment after a take-over. Creates stay free (same keys); the manifest is written
  whole by whichever writes last;
- any other store: every step is read-then-write, a best effort.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

from airflow_provider_mindvideo.client.errors import MindVideoError

T = TypeVar("T")

#: The default of ``[mindvideo] batch_lease_seconds``: how long a holder that stopped renewing
#: keeps the batch from another run. A take-over after a crash waits this long.
DEFAULT_LEASE_SECONDS = 20.0


def lease_seconds() -> float:
    from airflow.sdk import conf

    return max(1.0, conf.getfloat("mindvideo", "batch_lease_seconds", fallback=DEFAULT_LEASE_SECONDS))


def lease_path(result_path: str) -> str:
    """``<name>.lease.json`` beside the manifest ``<name>.jsonl``."""
    stem = result_path[: -len(".jsonl")] if result_path.endswith(".jsonl") else result_path
    return f"{stem}.lease.json"


def lock_file(lease_file: str) -> str:
    """The local lock beside a local lease file (``<name>.lease.lock``)."""
    return f"{lease_file.removesuffix('.json')}.lock"


class LeaseLost(Exception):
    """Another run holds the batch now: this one must send and write nothing more."""


class BatchSuperseded(LeaseLost):
    """A later try of the task instance holds the batch: this run (a stale try's) ends without working."""


class BatchLease:
    """A run's claim on its batch. Blocking calls go through one thread of its own, so that a
    busy default executor (manifest writes, the ledger) never delays a renewal.

    :param result_path: The batch's manifest URL; the lease lives beside it.
    :param try_number: The Airflow try: a released lease carries its final event for this try only.
    :param owner: The task instance (the trigger's ``creator``): a lease another one left (a
        ``result_path`` used again by a later DAG run) is free once released, whatever its try.
    """

    def __init__(
        self,
        result_path: str,
        conn_id: str | None,
        try_number: int,
        *,
        owner: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> None:
        from airflow.sdk import ObjectStoragePath

        self.url = lease_path(result_path)
        self.path = ObjectStoragePath(self.url, conn_id=conn_id)
        self.try_number = try_number
        self.owner = owner
        self.seconds = lease_seconds() if seconds is None else seconds
        self.token = uuid.uuid4().hex
        self._beat = 0
        self._confirmed_at: float | None = None
        # What the follower last saw the holder write, and when (its own monotonic clock).
        self._seen: tuple[Any, float] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mindvideo-batch-lease")
        self._renewal: asyncio.Future[None] | None = None
        self._local = isinstance(self.path.fs, LocalFileSystem)

    # -- the run's side, in the event loop ---------------------------------------------------------

    async def claim(self, log: Any) -> dict[str, Any] | None:
        """Hold the batch (None), or the final event the run that held it left for this try.

        Waits while another run holds a lease it renews.
        """
        told = False
        while True:
            try:
                outcome, record = await self._call(self._claim)
            except asyncio.CancelledError:
                # The claim goes on in its thread and may take the lease: let it go right after (the
                # same thread, in turn), or a run that waits for the batch would wait a whole period.
                self._pool.submit(self._release, None)
                raise
            if outcome == "held":
                return None
            if outcome == "taken":
                log.warning(
                    "MindVideo batch: the run that held this batch (%s) stopped renewing its lease for %g s: this one "
                    "takes the batch over from its journal",
                    _who(record),
                    self.seconds,
                )
                return None
            if outcome == "superseded":
                raise BatchSuperseded(f"{self.url}: a later try holds this batch now ({_who(record)})")
            if outcome == "finished":
                log.info("MindVideo batch: another run (%s) finished this batch; its event is this one's", _who(record))
                assert record is not None
                return dict(record["event"])
            if not told:
                log.warning(
                    "MindVideo batch: another run (%s) holds this batch (%s): this one sends nothing and waits for "
                    "it to finish, or to stop renewing its lease for %g s (then this one takes over)",
                    _who(record),
                    self.url,
                    self.seconds,
                )
                told = True
            await asyncio.sleep(self.seconds / 4)

    async def keep(self) -> None:
        """Renew the lease every quarter period until cancelled; raises :class:`LeaseLost` once another holds it."""
        while True:
            await asyncio.sleep(self.seconds / 4)
            try:
                await self._call(self._renew)
            except LeaseLost:
                raise
            except Exception:  # storage trouble: the holder's confirmations lapse on their own
                continue

    def valid(self) -> bool:
        """Renewed (found still this run's) within half a period: no one else may have taken it yet."""
        return self._confirmed_at is not None and time.monotonic() - self._confirmed_at < self.seconds / 2

    async def confirm(self) -> None:
        """Before a request: raises :class:`LeaseLost` if the batch is no longer this run's."""
        if self.valid():
            return
        # A hundred items meeting a lapsed confirmation wait for one renewal, not a hundred.
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.ensure_future(self._call(self._renew))
        try:
            await asyncio.shield(self._renewal)
        except LeaseLost:
            raise
        except Exception as exc:  # the store's trouble (OSError, botocore's, ...): this request is not sent
            raise MindVideoError(f"Could not renew the batch's lease {self.url}: {exc!r}; nothing was sent") from exc

    async def release(self, event: dict[str, Any] | None) -> bool:
        """Let go, leaving ``event`` (the batch's final event) for a run that waits; False if it was no longer held."""
        return await self._call(self._release, event)

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    # -- blocking: in a thread -----------------------------------------------------------------------

    def fenced(self, write: Callable[[], T]) -> T:
        """Make a journal write only while this run holds the batch (blocking). :raises LeaseLost: otherwise."""
        with self._locked():
            self._check(self._read())
            return write()

    def _claim(self) -> tuple[str, dict[str, Any] | None]:
        started = time.monotonic()
        with self._locked():
            record = self._read()
            state = self._state(record)
            if state in ("finished", "superseded", "busy"):
                return state, record
            if state == "wanted":
                # An earlier try's run holds it and renews: Airflow has moved on to this try. Ask it to
                # stand down (it sees this at its next renewal or journal write, and releases the batch).
                assert record is not None
                from airflow_provider_mindvideo.outputs import storage

                wanted = {**record, "wanted_by": self.try_number}
                storage.write_new(self.path, [json.dumps(wanted, sort_keys=True).encode("utf-8")], overwrite=True)
                return "busy", record
            # Created only if absent: a file there that names no holder (emptied, truncated or edited
            # from outside; whole writes never leave one) is overwritten, else the claim would fail forever.
            if not self._write(record is None and not self.path.exists()):
                return "busy", self._read()
        self._confirmed_at = started
        return ("taken", record) if state == "stale" else ("held", None)

    def _state(self, record: dict[str, Any] | None) -> str:
        """What ``record`` means to this run: free, mine, busy, stale, finished or superseded."""
        if record is None:
            return "free"
        ours = record.get("owner") == self.owner  # else a result_path used again by another task instance
        if ours and _later(record, self.try_number):
            return "superseded"  # a stale try's run: Airflow has moved on
        if record.get("released"):
            finished = ours and record.get("try_number") == self.try_number and record.get("event") is not None
            return "finished" if finished else "free"
        if record.get("holder") == self.token:
            return "mine"
        if self._stale(record):
            return "stale"
        earlier = ours and isinstance(record.get("try_number"), int) and record["try_number"] < self.try_number
        return "wanted" if earlier and record.get("wanted_by") != self.try_number else "busy"

    def _renew(self) -> None:
        started = time.monotonic()
        with self._locked():
            self._check(self._read())
            if not self._write(False):
                raise LeaseLost(f"{self.url}: another run wrote the lease at the same moment")
        self._confirmed_at = started

    def _release(self, event: dict[str, Any] | None) -> bool:
        with self._locked():
            record = self._read()
            if record is None or record.get("holder") != self.token or record.get("released"):
                return False  # a later try's wish (wanted_by) does not stop this run letting go
            self._write(False, released=True, event=event)
        self._confirmed_at = None
        return True

    def _check(self, record: dict[str, Any] | None) -> None:
        if record is None or record.get("holder") != self.token or record.get("released"):
            self._confirmed_at = None
            raise LeaseLost(f"{self.url}: the batch is held by {_who(record)} now")
        if _later(record, self.try_number):
            self._confirmed_at = None
            raise BatchSuperseded(f"{self.url}: a later try wants this batch now (try {record.get('wanted_by')})")

    def _stale(self, record: dict[str, Any]) -> bool:
        now = time.monotonic()
        mark = (record.get("holder"), record.get("beat"))
        if self._seen is None or self._seen[0] != mark:
            self._seen = (mark, now)
        unchanged = now - self._seen[1]
        renewed_at = record.get("renewed_at")
        old = isinstance(renewed_at, int | float) and time.time() - renewed_at > 2 * self.seconds
        return unchanged >= self.seconds or old

    def _read(self) -> dict[str, Any] | None:
        from airflow_provider_mindvideo.outputs import storage

        text = storage.read_text(self.path)
        if not text:
            return None
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            return None  # written whole (replace_text): damage from outside; claimed afresh
        return record if isinstance(record, dict) else None

    def _write(self, new: bool, *, released: bool = False, event: dict[str, Any] | None = None) -> bool:
        from airflow_provider_mindvideo.outputs import storage

        self._beat += 1  # any write is a sign of life to a follower, a re-claim too
        record = {
            "holder": self.token,
            "try_number": self.try_number,
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "beat": self._beat,
            "renewed_at": time.time(),
            "released": released,
            "event": event,
        }
        chunks = [json.dumps(record, sort_keys=True).encode("utf-8")]
        if new:  # a conditional create where the store has one (S3, GCS; under the lock here)
            return storage.write_new(self.path, chunks).written
        storage.write_new(self.path, chunks, overwrite=True)
        if not self._local:  # read-then-write elsewhere: at least see whether another run's write won
            with contextlib.suppress(LeaseLost):
                self._check(self._read())
                return True
            return False
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._local:
            yield
            return
        import fcntl  # POSIX, as Airflow's triggerers are

        lock = lock_file(self.path.path)
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)


def _later(record: dict[str, Any], try_number: int) -> bool:
    """The record is a later try's, or a later try asked its holder to stand down (``wanted_by``)."""
    tries = [record.get("try_number"), record.get("wanted_by")]
    return any(isinstance(later, int) and later > try_number for later in tries)


def _who(record: dict[str, Any] | None) -> str:
    if not record:
        return "no run"
    return f"try {record.get('try_number')}, pid {record.get('pid')} on {record.get('host')}"

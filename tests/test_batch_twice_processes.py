"""One batch trigger in two processes at once, as two triggerers run it: both alive, one killed,
or one frozen (SIGSTOP) until the other takes the batch over and then thawed (SIGCONT). The
emulator's books and the journal are the oracle; the remote tasks are held (outcome ``"never"``)
until the processes are where each scenario wants them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo.batch.lease import lease_path, lock_file
from airflow_provider_mindvideo.batch.trigger import DONE
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from tests.test_batch_trigger import Batch
from tests.test_batch_twice import check_the_journal, make_batch, wait_for

ROOT = Path(__file__).resolve().parents[1]
# Under load a process may miss a renewal or two; a take-over then is correct, but these
# scenarios want to choose when it happens.
LEASE_SECONDS = 8.0

RUNNER = """
import asyncio, json, sys
from airflow_provider_mindvideo.batch.trigger import MindVideoBatchTrigger

async def main():
    trigger = MindVideoBatchTrigger(**json.loads(sys.argv[1]))
    events = [event.payload async for event in trigger.run()]
    with open(sys.argv[2] + ".partial", "w") as out:
        json.dump(events, out)
    import os
    os.replace(sys.argv[2] + ".partial", sys.argv[2])

asyncio.run(main())
"""


class Triggerer:
    """A process running the batch trigger, as a triggerer would; its events land in a file."""

    def __init__(self, work: Batch, name: str, **options: Any) -> None:
        kwargs = work.trigger(max_active=3, **options).serialize()[1]
        self.out = work.folder / f"events-{name}.json"
        self.process = subprocess.Popen(
            [sys.executable, "-c", RUNNER, json.dumps(kwargs), str(self.out)],
            cwd=ROOT,
            env=os.environ.copy(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def events(self) -> list[dict[str, Any]]:
        try:
            _, stderr = self.process.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        assert self.process.returncode == 0, stderr.decode(errors="replace")[-3000:]
        return list(json.loads(self.out.read_text()))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def triggerers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Triggerer]]:
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__BATCH_LEASE_SECONDS", str(LEASE_SECONDS))
    started: list[Triggerer] = []

    def start(work: Batch, name: str, **options: Any) -> Triggerer:
        started.append(Triggerer(work, name, **options))
        return started[-1]

    yield start
    for triggerer in started:
        triggerer.stop()


@contextlib.contextmanager
def lease_lock(work: Batch) -> Iterator[None]:
    """The lease's lock, held here: no run is inside a claim, a renewal or a journal write meanwhile."""
    path = lock_file(lease_path(work.result_path).removeprefix("file://"))
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def holder_pid(work: Batch) -> int | None:
    path = Path(lease_path(work.result_path).removeprefix("file://"))
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return None if record.get("released") else record.get("pid")


def test_two_processes_at_once_create_pay_and_write_once(
    emulator: MindVideoEmulator, triggerers: Callable[..., Triggerer], tmp_path: Path
) -> None:
    work = make_batch(emulator, tmp_path, 6)
    emulator.script("item", "never")
    first, second = triggerers(work, "1"), triggerers(work, "2")
    wait_for(lambda: emulator.state.charged_tasks == 3, "the holder's first creates", timeout=180)
    assert holder_pid(work) in (first.pid, second.pid)
    emulator.state.scripts.clear()
    emulator.state.release("item")
    events = first.events() + second.events()
    assert emulator.state.charged_tasks == 6
    assert emulator.state.requests["create"] == 6  # the other process sent nothing
    assert events[0] == events[1] and events[0]["status"] == DONE
    check_the_journal(work, 6)


def test_the_holder_killed_mid_batch_is_taken_over_and_nothing_is_paid_twice(
    emulator: MindVideoEmulator, triggerers: Callable[..., Triggerer], tmp_path: Path
) -> None:
    work = make_batch(emulator, tmp_path, 6)
    emulator.script("item", "never")
    first = triggerers(work, "1")
    wait_for(lambda: emulator.state.charged_tasks == 3 and holder_pid(work) == first.pid, "the first process's creates")
    second = triggerers(work, "2")
    first.signal(signal.SIGKILL)  # kill -9: no release, the lease ages out
    first.process.wait(timeout=30)
    emulator.state.scripts.clear()
    emulator.state.release("item")
    (event,) = second.events()
    assert event["status"] == DONE and event["summary"]["counts"]["succeeded"] == 6
    assert emulator.state.charged_tasks == 6
    check_the_journal(work, 6)


def test_a_frozen_holder_thawed_after_the_take_over_stands_down_and_fires_the_same_event(
    emulator: MindVideoEmulator, triggerers: Callable[..., Triggerer], tmp_path: Path
) -> None:
    work = make_batch(emulator, tmp_path, 6)
    emulator.script("item", "never")
    first = triggerers(work, "1", progress_interval=0.05)
    wait_for(lambda: emulator.state.charged_tasks == 3 and holder_pid(work) == first.pid, "the first process's creates")
    with lease_lock(work):  # not frozen inside the lock: that would keep the batch until the thaw (docs)
        first.signal(signal.SIGSTOP)  # a lost heartbeat: Airflow gives the trigger to another triggerer
    second = triggerers(work, "2", progress_interval=0.05)
    wait_for(lambda: holder_pid(work) == second.pid, "the take-over", timeout=180)
    first.signal(signal.SIGCONT)  # it runs on, believing for a moment the batch is its own
    emulator.state.scripts.clear()
    emulator.state.release("item")
    events = first.events() + second.events()
    assert emulator.state.charged_tasks == 6
    assert events[0] == events[1] and events[0]["status"] == DONE
    assert events[0]["summary"]["counts"]["succeeded"] == 6
    check_the_journal(work, 6)

"""What a killed or cleared Airflow task leaves running at MindVideo.

MindVideo documents no cancel endpoint: once created, a remote task runs to its end and is
charged whatever happens to the Airflow task that waits for it. The operators, the sensor and
the trigger call :func:`log_still_running` when Airflow stops them (a worker's ``on_kill``, the
trigger's ``on_kill``) so that the log names what is still running and still charged. When the
API documents a cancel call, this is where it belongs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_mindvideo.client.models import TaskStatus


def is_unfinished(status: object) -> bool:
    """Whether a recorded status (as the API spelt it) may still be running, and so still charging."""
    return not TaskStatus(str(status)).is_terminal


def still_running_message(task_ids: Sequence[str], cause: str) -> str:
    """The warning for remote tasks that outlive their Airflow task."""
    one = len(task_ids) == 1
    return (
        f"{cause}, but MindVideo task{'' if one else 's'} {', '.join(task_ids)} "
        f"{'keeps' if one else 'keep'} running and {'is' if one else 'are'} charged: MindVideo has no cancel "
        "endpoint. Clearing the Airflow task waits for the same remote task again; it does not pay for a new one"
    )


def log_still_running(log: Any, task_ids: Sequence[str], cause: str) -> None:
    """Warn, in the task's (or the trigger's) log, which remote tasks keep running and charging."""
    if task_ids:
        log.warning(still_running_message(task_ids, cause))

"""``mindvideo-spend``: :mod:`airflow_provider_mindvideo.spend.cli` with what its room may not import.

``reconcile`` looks tasks up through the MindVideo connection a ledger row names (its account),
with the hook; the spend room imports only the client core, so the command is wired here.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_mindvideo.client.models import MindVideoTask


def look_up_task(account: str, task_id: str) -> MindVideoTask:
    """``GET /api/v1/tasks/{task_id}`` through MindVideo connection ``account``."""
    from airflow_provider_mindvideo.hooks import MindVideoHook

    with MindVideoHook(account) as hook:
        return hook.get_task(task_id)


def main(argv: Sequence[str] | None = None) -> int:
    from airflow_provider_mindvideo.spend.cli import main as spend_main

    return spend_main(argv, lookup=look_up_task)


if __name__ == "__main__":
    raise SystemExit(main())

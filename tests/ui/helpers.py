"""An auth manager with per-DAG read access for two users, and a ledger and manifests to show."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

from airflow_provider_mindvideo.spend.budgets import budgets_from_extras
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.ledger import Ledger
from airflow_provider_mindvideo.spend.records import CreateRecord
from airflow_provider_mindvideo.spend.schema import ensure_schema

#: Who may read which DAG; ``None``: every DAG.
ACCESS: dict[str, set[str] | None] = {"alice": {"images"}, "bob": {"videos"}, "boss": None, "nobody": set()}


class PerDagAuthManager(SimpleAuthManager):
    """Simple's tokens and users, with read access per DAG as FAB's roles would give it."""

    def init(self) -> None:  # no password file: users exist by their tokens alone
        pass

    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        dags = ACCESS.get(user.username, set())
        if method != "GET":
            return False
        if details is None or getattr(details, "id", None) is None:
            return dags is None
        return dags is None or details.id in dags


def token_of(name: str) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    return str(get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=name, role="viewer")))


@contextmanager
def installed_auth_manager() -> Iterator[PerDagAuthManager]:
    from airflow.api_fastapi import app as airflow_app

    before = airflow_app._AuthManagerState.instance
    manager = PerDagAuthManager()
    airflow_app._AuthManagerState.instance = manager
    try:
        yield manager
    finally:
        airflow_app._AuthManagerState.instance = before


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def filled_ledger(path: str, now: dt.datetime) -> Ledger:
    """Creates over the last days in DAGs ``images`` and ``videos`` (and one outside any DAG)."""
    engine = engine_for_url(f"sqlite:///{path}")
    ensure_schema(engine)
    clock = Clock(now)
    ledger = Ledger(engine, clock=clock)
    config = budgets_from_extras({"budgets": {"account": {"day": 1000, "month": 10000}}}, "mindvideo_default")
    plan = [
        # days ago, dag, run, task, model, reserved, actual (None: released), settle?
        (3, "images", "run_1", "make", "flux-1", 0.5, 0.37, True),
        (3, "images", "run_1", "make", "flux-1", 0.5, 0.41, True),
        (1, "images", "run_2", "make", "flux-1", 0.5, None, False),  # released: refused by the API
        (1, "videos", "run_9", "clip", "kling-2", 4.0, 3.333333, True),
        (0, "videos", "run_9", "clip", "kling-2", 4.0, None, None),  # still reserved
        (0, None, None, None, "flux-1", 0.25, 0.25, True),
    ]
    for number, (days_ago, dag, run, task, model, reserved, actual, settle) in enumerate(plan):
        clock.now = now - dt.timedelta(days=days_ago)
        key = f"key-{number}"
        ledger.reserve(CreateRecord(key, model, dag, run, task, None, 1), reserved, config)
        if settle:
            ledger.settle(key, estimated=actual, actual=actual, mindvideo_task_id=f"mv_{number}")
        elif settle is False:
            ledger.release(key)
    clock.now = now
    return ledger

"""Where the ledger lives and the books an operator writes to: the one module here that reads Airflow's settings.

``[mindvideo] ledger_conn_id`` names an Airflow connection to a SQL database (``postgres`` for a
deployment on several machines); empty, the ledger is a SQLite file,
``$AIRFLOW_HOME/mindvideo_ledger.db``, which only processes on this machine can share. Never
Airflow's metadata database: Airflow 3 gives task code no session to it.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from airflow.sdk import BaseHook, conf
from airflow.sdk.exceptions import AirflowFailException
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from airflow_provider_mindvideo.client.errors import MindVideoError
from airflow_provider_mindvideo.client.models import MindVideoTask
from airflow_provider_mindvideo.spend.budgets import BudgetConfig, budgets_from_extras
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.ledger import Ledger
from airflow_provider_mindvideo.spend.records import (
    BudgetRefusal,
    BudgetWindowExceededError,
    CreateRecord,
    ModelPriceUnknownError,
    PriceUnknownWait,
    Settlement,
    SpendRow,
)

T = TypeVar("T")

# Executors whose tasks all run on the scheduler's machine; any other may run them elsewhere.
_LOCAL_EXECUTORS = {"LocalExecutor", "SequentialExecutor", "DebugExecutor"}


class LedgerUnavailableError(MindVideoError):
    """The spend ledger could not be reached or written; a budget depends on it, so nothing was sent."""


class LedgerMisconfiguredError(MindVideoError, AirflowFailException):
    """The ledger cannot keep this budget: a machine-local SQLite file under a distributed executor, or a bad URL."""

    retryable = False


def is_distributed(executor: str) -> bool:
    """Whether ``[core] executor`` may run tasks on other machines (anything but the local executors)."""
    names = [part.strip().split(":")[-1].rsplit(".", 1)[-1] for part in executor.split(",") if part.strip()]
    return any(name not in _LOCAL_EXECUTORS for name in names)


def ledger_url() -> str:
    """The SQLAlchemy URL of the ledger, from ``[mindvideo] ledger_conn_id`` (default: SQLite under $AIRFLOW_HOME)."""
    conn_id = conf.get("mindvideo", "ledger_conn_id", fallback="") or ""
    if not conn_id.strip():
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        return f"sqlite:///{os.path.abspath(os.path.join(home, 'mindvideo_ledger.db'))}"
    conn = BaseHook.get_connection(conn_id.strip())
    return url_from_connection(
        conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema, conn.extra_dejson
    )


def url_from_connection(
    conn_type: str | None,
    host: str | None,
    login: str | None,
    password: str | None,
    port: int | None,
    schema: str | None,
    extras: Mapping[str, Any] | None = None,
) -> str:
    """An Airflow connection's fields as a SQLAlchemy URL: ``postgres`` -> ``postgresql+psycopg2``, ``sqlite``."""
    if conn_type in ("postgres", "postgresql"):
        driver = "postgresql+psycopg2" if importlib.util.find_spec("psycopg2") else "postgresql+psycopg"
        # libpq options (sslmode, sslrootcert, ...) come from the connection's extras.
        query = {
            str(k): str(v) for k, v in (extras or {}).items() if isinstance(v, str | int) and not isinstance(v, bool)
        }
        url = URL.create(driver, login, password, host, port, schema or "postgres", query)
        return url.render_as_string(hide_password=False)
    if conn_type == "sqlite":
        if not host:
            raise LedgerMisconfiguredError(
                "The ledger's sqlite connection has no host: set it to the database file's path"
            )
        return f"sqlite:///{os.path.abspath(host)}"
    raise LedgerMisconfiguredError(
        f"[mindvideo] ledger_conn_id names a connection of type {conn_type!r}: the ledger runs on postgres or sqlite"
    )


@dataclass
class SpendBooks:
    """The ledger as one operator sees it: one MindVideo connection's budgets and its own named budget.

    Without budgets it does nothing and touches no database (``counting`` is False).
    """

    config: BudgetConfig
    budget: str | None = None
    ledger: Ledger | None = None
    #: How long a create waits in this process for its model's lone create in flight to tell the price.
    price_wait: float = 60.0
    price_poll: float = 0.5
    #: Reads a task through this connection within so many seconds (the hook's ``get_task``): a create
    #: waiting for its model's lone create looks that create's task up and settles it once it ended --
    #: a Submit never sees its own task end, and its DAG may be gone.
    look_up: Callable[[str, float], MindVideoTask] | None = None

    @property
    def counting(self) -> bool:
        return self.ledger is not None

    def reserve(self, create: CreateRecord, amount: float) -> SpendRow | None:
        """Reserve before sending; ``BudgetWindowExceededError`` (an ``AirflowFailException``) when it does not fit.

        :raises ModelPriceUnknownError: its model, whose price is not known, goes alone and another
            create of it stayed in flight for ``price_wait`` seconds (retried by Airflow).
        """
        outcome = self.try_reserve(create, amount)
        if isinstance(outcome, BudgetRefusal):
            raise BudgetWindowExceededError(outcome)
        return outcome

    def try_reserve(self, create: CreateRecord, amount: float) -> SpendRow | BudgetRefusal | None:
        """As :meth:`reserve`, returning the :class:`BudgetRefusal` instead of raising it (a review's regenerations).

        While another create of the model is in flight and its price is not known, waits for it (polling
        the ledger every ``price_poll`` s, ``price_wait`` s at most, look-ups included) and looks its task
        up meanwhile (:class:`HolderLookups`): the price is known once that task tells its ``actual``, when it ends.
        """
        if self.ledger is None:
            return None
        started = time.monotonic()
        lookups = HolderLookups()
        while True:
            outcome = self._guarded(self.ledger.try_reserve, create, amount, self.config, self.budget)
            if not isinstance(outcome, PriceUnknownWait):
                return outcome
            waited = time.monotonic() - started
            if waited >= self.price_wait:
                raise ModelPriceUnknownError(outcome, round(waited, 1))
            task_id = lookups.due(outcome)
            if self.look_up is not None and task_id is not None:
                try:
                    task = self.look_up(task_id, self.price_wait - waited)
                except MindVideoError:
                    task = None  # unreadable now: the wait goes on, and says so if it ends
                if task is not None and task.is_terminal:  # a running task's actual is not its last word
                    self.settle_many([Settlement.told_by(outcome.holder, task, task_id)])
            time.sleep(self.price_poll)

    def reserve_many(
        self, creates: Sequence[tuple[CreateRecord, float]]
    ) -> list[SpendRow | BudgetRefusal | PriceUnknownWait]:
        """Reserve a group in one transaction, each accepted, refused or told to wait on its own (a batch's items)."""
        if self.ledger is None:
            return []
        return self._guarded(
            self.ledger.reserve_many, [(create, amount, self.budget) for create, amount in creates], self.config
        )

    def settle(
        self,
        idempotency_key: str,
        *,
        estimated: float | None = None,
        actual: float | None = None,
        mindvideo_task_id: str | None = None,
        ended: bool = False,
    ) -> SpendRow | None:
        """The answer told its cost (:meth:`Ledger.settle`); idempotent, by key. ``ended``: its task ended."""
        if self.ledger is None:
            return None
        return self._guarded(
            self.ledger.settle,
            idempotency_key,
            estimated=estimated,
            actual=actual,
            mindvideo_task_id=mindvideo_task_id,
            ended=ended,
        )

    def release(self, idempotency_key: str) -> SpendRow | None:
        """The API refused the create: nothing was charged, its reservation is given back."""
        return None if self.ledger is None else self._guarded(self.ledger.release, idempotency_key)

    def settle_many(self, settlements: Sequence[Settlement]) -> list[SpendRow | None]:
        """Settles and releases of a group (a batch's answers) in one transaction, in order."""
        if self.ledger is None:
            return [None] * len(settlements)
        return self._guarded(self.ledger.settle_many, settlements)

    def _guarded(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return call(*args, **kwargs)
        except (DBAPIError, SQLAlchemyError) as error:
            assert self.ledger is not None
            where = self.ledger.engine.url.render_as_string(hide_password=True)
            raise LedgerUnavailableError(
                f"The MindVideo spend ledger at {where} could not be written ({type(error).__name__}): budgets of "
                f"connection {self.config.account!r} depend on it, so nothing was sent"
            ) from error


class HolderLookups:
    """When a create waiting for its model's lone create in flight looks that create's task up.

    At once, then 1, 2, 4 ... s apart, at most :attr:`CAP` (a video may take minutes): the task's
    status is one GET, and only a task that ended settles anything (a running task's ``actual``, if
    any, is not its last word). One entry per lone create (a model has one per account at a time):
    it grows with nothing else.
    """

    CAP = 30.0

    def __init__(self) -> None:
        self._next: dict[str, tuple[float, float]] = {}

    def due(self, wait: PriceUnknownWait) -> str | None:
        """The task id of ``wait``'s lone create, if it is time to look it up (and its answer told one)."""
        if wait.holder_task is None:
            return None  # its answer is not in (or was lost): only its own create's replay can tell
        now = time.monotonic()
        at, gap = self._next.get(wait.holder_task, (now, 1.0))
        if now < at:
            return None
        self._next[wait.holder_task] = (now + gap, min(gap * 2, self.CAP))
        return wait.holder_task


def spend_books(
    account: str,
    extras: Mapping[str, Any] | None,
    budget: str | None = None,
    look_up: Callable[[str, float], MindVideoTask] | None = None,
) -> SpendBooks:
    """The books for creates through MindVideo connection ``account`` (its ``extras`` hold the budgets).

    ``look_up`` reads a task through that connection (:attr:`SpendBooks.look_up`).

    No budgets on the connection: books that do nothing (and ``budget`` must then be None).
    Blocking (reads a connection, opens the database): from a trigger, call it in a thread.

    :raises InputValidationError: the extras' budgets are malformed, or ``budget`` is not one of them.
    :raises LedgerMisconfiguredError: budgets are configured, the executor is distributed and the
        ledger is a machine-local SQLite file.
    """
    config = budgets_from_extras(extras, account)
    config.applicable(budget)
    if not config.budgets:
        return SpendBooks(config, budget)
    url = ledger_url()
    executor = conf.get("core", "executor", fallback="LocalExecutor") or "LocalExecutor"
    if url.startswith("sqlite") and is_distributed(executor):
        raise LedgerMisconfiguredError(
            f"MindVideo connection {account!r} has budgets, but the spend ledger is the SQLite file {url[10:]} on this "
            f"machine and [core] executor = {executor} runs tasks on several machines: each would count alone. "
            "Set [mindvideo] ledger_conn_id to a postgres connection that every worker and triggerer reaches."
        )
    try:
        ledger = Ledger(engine_for_url(url))
    except (DBAPIError, SQLAlchemyError) as error:
        raise LedgerUnavailableError(
            f"The MindVideo spend ledger at {make_url(url).render_as_string(hide_password=True)} could not be opened "
            f"({type(error).__name__}): budgets of connection {account!r} depend on it, so nothing was sent"
        ) from error
    price_wait = conf.getfloat("mindvideo", "ledger_price_wait", fallback=60.0)
    return SpendBooks(config, budget, ledger, price_wait=price_wait, look_up=look_up)

"""What the ledger reads and writes, as its callers see them: a create, its row, a refusal."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Row

from airflow_provider_mindvideo.client.errors import BudgetExceededError, MindVideoError
from airflow_provider_mindvideo.client.models import MindVideoTask, readable_cost
from airflow_provider_mindvideo.spend.budgets import from_micros
from airflow_provider_mindvideo.spend.windows import UTC, Window


@dataclass(frozen=True)
class CreateRecord:
    """What a create is for: the ledger row's identity. Only the key and the model are required."""

    idempotency_key: str
    model: str
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None

    @classmethod
    def of(cls, ti: Any, idempotency_key: str, model: str) -> CreateRecord:
        """The create a task instance (``context["ti"]``) makes under ``idempotency_key``."""
        map_index = getattr(ti, "map_index", None)
        return cls(
            idempotency_key,
            model,
            dag_id=getattr(ti, "dag_id", None),
            run_id=getattr(ti, "run_id", None),
            task_id=getattr(ti, "task_id", None),
            map_index=map_index if isinstance(map_index, int) else None,
            try_number=getattr(ti, "try_number", None),
        )


@dataclass(frozen=True)
class SpendRow:
    """One create as the ledger knows it; amounts in the API's cost unit, times in UTC."""

    idempotency_key: str
    account: str
    model: str
    state: str  # reserved | settled | released | refused (by a budget: never sent, counted nowhere)
    reserved: float
    estimated: float | None
    actual: float | None
    cost: float
    budgets: tuple[str, ...]
    mindvideo_task_id: str | None
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    map_index: int | None
    try_number: int | None
    created_at: dt.datetime
    settled_at: dt.datetime | None


@dataclass(frozen=True)
class Settlement:
    """What a create's answer told (its cost, its task), or that the API refused it (``released``)."""

    idempotency_key: str
    estimated: float | None = None
    actual: float | None = None
    mindvideo_task_id: str | None = None
    #: The API refused the create: nothing was charged, its reservation is given back.
    released: bool = False
    #: Its task ended (succeeded, failed, cancelled): a cost it did not tell now, it never will.
    ended: bool = False

    @classmethod
    def told_by(cls, idempotency_key: str, task: MindVideoTask, task_id: str | None = None) -> Settlement:
        """What ``task`` (an answer to the create, or the task looked up by ``task_id``) tells of its cost."""
        estimated, actual = readable_cost(task.cost_estimate), readable_cost(task.cost_actual)
        return cls(idempotency_key, estimated, actual, task_id or task.task_id, ended=task.is_terminal)


@dataclass(frozen=True)
class BudgetRefusal:
    """Why a reservation was refused: the first budget window it would have passed."""

    account: str
    budget: str
    window: Window
    timezone: str
    limit: float
    spent: float
    reserved: float
    amount: float
    #: Refused not for room but because its model's price is untold for good: why (see ``pricing``).
    untold: str | None = None
    model: str | None = None

    @property
    def could_ever_fit(self) -> bool:
        """Whether the create fits an empty window of this budget (waiting for the reset may help)."""
        return self.untold is None and self.amount <= self.limit

    def message(self) -> str:
        if self.untold is not None:
            # An SQL string literal (quotes doubled): a slug sent with allow_unknown_model may be any text,
            # and whoever pastes the statement must run that UPDATE and nothing else.
            literal = "'" + str(self.model).replace("'", "''") + "'"
            return (
                f"Budget {self.budget!r} of MindVideo connection {self.account!r} cannot count a create of model "
                f"{self.model!r}: the server never told what its tasks are charged ({self.untold}), and a create "
                "of a model whose price is not known is counted at no more than its reservation. Nothing was "
                "sent. A settled create of the model that tells a readable cost_actual lifts this; or tell the "
                "ledger its price, in micro-units (1.0 = 1000000): UPDATE mindvideo_model_price SET charged = "
                f"<price>, highest = <price> WHERE model = {literal} (docs/spend.md)."
            )
        local_reset = self.window.resets_at.astimezone(ZoneInfo(self.timezone))
        return (
            f"Budget {self.budget!r} of MindVideo connection {self.account!r} for {self.window.period.value} "
            f"{self.window.first_date.isoformat()} ({self.timezone}) would pass its limit: spent {self.spent:g}, "
            f"reserved for creates in flight {self.reserved:g}, this create {self.amount:g}, limit {self.limit:g}. "
            f"The window resets at {local_reset:%Y-%m-%d %H:%M} {self.timezone} "
            f"({self.window.resets_at:%Y-%m-%dT%H:%MZ}). Nothing was sent."
        )


class BudgetWindowExceededError(BudgetExceededError):
    """A create was not sent: it would pass a budget window's limit. ``refusal`` says which and when it resets."""

    def __init__(self, refusal: BudgetRefusal) -> None:
        self.refusal = refusal
        super().__init__(refusal.message())

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.refusal,))


@dataclass(frozen=True)
class PriceUnknownWait:
    """A create not reserved yet: another create of its model, whose price is not known, is in flight.

    Under a budget a model whose price no settled create told goes alone (per account), so that
    a true price above its reservation passes a limit at most once. It fits once ``holder`` settles.
    """

    account: str
    model: str
    holder: str
    #: The lone create's MindVideo task, once its answer told it: the waiter looks it up.
    holder_task: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None

    def message(self) -> str:
        where = ", ".join(
            f"{name} {value}"
            for name, value in (("DAG", self.dag_id), ("task", self.task_id), ("map index", self.map_index))
            if value not in (None, -1)
        )
        return (
            f"No task of model {self.model!r} was created yet: its price is not known (no create of it has told "
            f"a readable cost_actual), and under MindVideo connection {self.account!r}'s budgets such a model goes "
            f"alone. The create under key {self.holder!r}"
            + (f" ({where})" if where else "")
            + (f", task {self.holder_task}," if self.holder_task else "")
            + " is in flight and has not told its price. Nothing was sent."
        )


class ModelPriceUnknownError(MindVideoError):
    """A create waited for its model's lone create in flight to tell the price, in vain; retried by Airflow."""

    def __init__(self, wait: PriceUnknownWait, waited: float) -> None:
        self.wait = wait
        self.waited = waited
        super().__init__(f"{wait.message()} Waited {waited:g} s; the next try waits again.")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.wait, self.waited))


def spend_row(found: Row[Any] | Any) -> SpendRow:
    """A ``mindvideo_spend`` row (or anything with its columns as attributes), in the API's cost unit."""
    return SpendRow(
        idempotency_key=found.idempotency_key,
        account=found.account,
        model=found.model,
        state=found.state,
        reserved=from_micros(found.reserved),
        estimated=None if found.estimated is None else from_micros(found.estimated),
        actual=None if found.actual is None else from_micros(found.actual),
        cost=from_micros(found.cost),
        budgets=tuple(found.budgets.split()),
        mindvideo_task_id=found.mindvideo_task_id,
        dag_id=found.dag_id,
        run_id=found.run_id,
        task_id=found.task_id,
        map_index=found.map_index,
        try_number=found.try_number,
        created_at=found.created_at.replace(tzinfo=UTC),
        settled_at=None if found.settled_at is None else found.settled_at.replace(tzinfo=UTC),
    )

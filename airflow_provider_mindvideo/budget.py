"""The spend ceiling (``max_cost``): predict what a create may cost, reserve it before sending, settle it after. Pure.

Charges happen when a task is created, so a ceiling has to act before creating. The rule:

- every create is treated as possibly charged until its answer says what it cost: before it
  is sent, its predicted cost is *reserved*, and it may be sent only while
  ``committed + reserved + predicted <= max_cost``;
- an answer *settles* the reservation with the answer's ``cost_estimate`` (a replay of an
  earlier try's task counts just as a new task does: ``max_cost`` bounds all the tries of a
  task instance together, and replays are how a try learns what earlier tries spent);
- a create that surely charged nothing (the API refused it: a 4xx answer) *releases* it;
  one whose answer was lost keeps its reservation: it may have been charged.

The prediction for a model is the mean ``cost_estimate`` of the create answers seen so far for
it, else the model's documented example price from the catalogue. A model with neither (one
newer than the catalogue, before its first answer) reserves everything that is left, so that
only one such create is ever in flight and its answer teaches the price.

:class:`Budget` is plain arithmetic with no locks: the batch trigger calls it from one event
loop, the single-task operators from one thread.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_provider_mindvideo.catalog import known_models
from airflow_provider_mindvideo.errors import BudgetExceededError

# Float sums of prices such as 0.0135 must not refuse a create that fits exactly.
_SLACK = 1e-9


def catalogue_price(model: str) -> float | None:
    """The model's documented example price, or None for a model the catalogue does not know."""
    spec = known_models().get(model)
    return None if spec is None else spec.cost_estimate


@dataclass(frozen=True)
class Reservation:
    """Money held for one create in flight, until its answer settles it."""

    number: int
    model: str
    amount: float


@dataclass
class Budget:
    """What one task instance (all its tries) may still spend.

    :param max_cost: the ceiling, in the API's cost unit; None for no ceiling (the budget then
        only adds up what was spent).
    :param price_of: a model's documented price (default: the catalogue's example price).
    """

    max_cost: float | None
    price_of: Callable[[str], float | None] = catalogue_price
    #: Settled costs: the cost estimates of every task created or replayed so far.
    committed: float = 0.0
    _reservations: dict[int, Reservation] = field(default_factory=dict, repr=False)
    _seen: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)
    _numbers: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def __post_init__(self) -> None:
        if self.max_cost is not None and (isinstance(self.max_cost, bool) or not self.max_cost >= 0):
            raise ValueError(f"max_cost = {self.max_cost!r}: must be a number >= 0, or None for no ceiling")

    @property
    def reserved(self) -> float:
        """Held for creates whose answers are not in yet."""
        return sum(r.amount for r in self._reservations.values())

    @property
    def left(self) -> float | None:
        """What may still be reserved; None without a ceiling."""
        if self.max_cost is None:
            return None
        return max(0.0, self.max_cost - self.committed - self.reserved)

    def predict(self, model: str) -> float | None:
        """What a create for ``model`` is expected to cost: the mean of its answers so far, else its price."""
        if model in self._seen:
            total, count = self._seen[model]
            return total / count
        return self.price_of(model)

    def try_reserve(self, model: str) -> Reservation | None:
        """Hold the predicted cost of one create, or None when it might pass ``max_cost``."""
        predicted = self.predict(model)
        left = self.left
        if left is None:
            amount = predicted or 0.0
        elif predicted is None:
            # Unknown price: everything left, so that nothing else is created until the answer says.
            if left <= _SLACK or any(r.model == model for r in self._reservations.values()):
                return None
            amount = left
        elif predicted > left + _SLACK:
            return None
        else:
            amount = predicted
        reservation = Reservation(next(self._numbers), model, amount)
        self._reservations[reservation.number] = reservation
        return reservation

    def reserve(self, model: str) -> Reservation:
        """:meth:`try_reserve`, raising :class:`BudgetExceededError` (naming the ceiling and the prediction)."""
        reservation = self.try_reserve(model)
        if reservation is None:
            raise BudgetExceededError(self.refusal(model))
        return reservation

    def settle(self, reservation: Reservation, cost_estimate: float | None) -> float:
        """The answer came: count its cost (the reservation's amount when it named none); returns it."""
        self._reservations.pop(reservation.number, None)
        cost = reservation.amount if cost_estimate is None else cost_estimate
        if cost_estimate is not None:
            total, count = self._seen.get(reservation.model, (0.0, 0))
            self._seen[reservation.model] = (total + cost_estimate, count + 1)
        self.committed += cost
        return cost

    def release(self, reservation: Reservation) -> None:
        """The create surely charged nothing (the API refused it): hand the money back."""
        self._reservations.pop(reservation.number, None)

    def refusal(self, model: str) -> str:
        """Why a create for ``model`` is not sent, in words naming ``max_cost`` and the prediction."""
        predicted = self.predict(model)
        prediction = (
            f"its cost is unknown (model {model!r} has no documented price and no answer told it yet)"
            if predicted is None
            else f"it is predicted to cost {predicted:g}"
        )
        held = f" and {self.reserved:g} held for creates in flight" if self._reservations else ""
        return (
            f"max_cost = {self.max_cost!r}: a task for {model!r} was not created: {prediction}, and this task "
            f"instance has already spent {self.committed:g} (its tries together){held}. Nothing was charged for it"
        )

"""The spend ceiling (``max_cost``): what a create may cost is learnt from what is charged. Pure.

Charges happen when a task is created, so a ceiling has to act before creating. One price
model serves Submit, Generate, the batch and review regenerations:

- **A cost the server sends** (``cost_estimate``, ``cost_actual``) is read by
  :func:`readable_cost`: a finite number >= 0 (or a plain numeric string such as ``"0.5"``);
  anything else -- missing, null, NaN, infinite, negative, a bool, ``"0.50 USD"`` -- is
  *unknown*, never an error.
- **A model's bound** is the most one of its creates can cost as far as anything seen says:
  the highest of its catalogue price, every readable ``cost_estimate`` and every readable
  ``cost_actual`` seen (this run's answers and every earlier record). A model's price is
  **known** once a readable ``cost_actual`` was seen for one of its tasks: only what was
  charged is trusted, an estimate may be below it.
- **Every create counts** from the moment it is reserved: at the model's *current* bound (so a
  price learnt later raises every create counted at a lower one), or, once its task finished
  with a readable ``cost_actual``, at ``max(cost_estimate, cost_actual)`` of that task. Creates
  of earlier runs and tries (:meth:`Budget.adopt`) always count at ``max(recorded, bound)``.
  A model with no bound at all holds everything left while its create is unanswered.
- **Under a ceiling, a model whose price is not known goes alone**: no create of it is sent
  while another of its tasks is open (created, or maybe created, and not seen finished). If
  that task ends without a readable ``cost_actual`` (or its answer is lost), the server never
  told the model's price: later creates of it are refused
  (:meth:`Budget.unpriced`). So the ceiling holds to within one create's true price per model
  whose price was not yet known.
- **What no client can see**: a price that depends on the input (a longer video) or rises after
  it was learnt is counted at the old bound until a task tells it, so it can pass the ceiling by
  that rise times the creates in flight (``max_active`` in a batch, one for Submit/Generate).

A create that does not fit only because money is held for unanswered creates, or because its
model goes alone, *waits* (:meth:`Budget.try_reserve` gives None, :meth:`Budget.refuses`
False); it is refused when it would not fit even once the unanswered creates are released.
Without a ceiling nothing waits and nothing is refused: the budget only adds up.

:class:`Budget` is plain arithmetic with no locks: the batch trigger calls it from one event
loop, the single-task operators from one thread. Nothing here runs per poll.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_provider_mindvideo.client.catalog import known_models
from airflow_provider_mindvideo.client.errors import BudgetExceededError
from airflow_provider_mindvideo.client.models import readable_cost as readable_cost

# Float sums of prices such as 0.0135 must not refuse a create that fits exactly.
_SLACK = 1e-9
# What a charge is: waiting for its create's answer, held for good (answer lost), or counted.
_HELD, _ABANDONED, _COUNTED = "held", "abandoned", "counted"


def catalogue_price(model: str) -> float | None:
    """The model's documented example price, or None for a model the catalogue does not know."""
    spec = known_models().get(model)
    return None if spec is None else spec.cost_estimate


def check_max_cost(max_cost: object) -> None:
    """Refuse a ``max_cost`` that is no finite amount >= 0 (None is no ceiling), when the DAG is parsed."""
    if max_cost is None:
        return
    if isinstance(max_cost, bool) or not isinstance(max_cost, int | float) or not math.isfinite(max_cost):
        raise ValueError(f"max_cost = {max_cost!r}: must be a finite number >= 0, or None for no ceiling")
    if max_cost < 0:
        raise ValueError(f"max_cost = {max_cost!r}: must be a number >= 0, or None for no ceiling")


@dataclass(eq=False)
class Charge:
    """One create counted against the ceiling, from its reservation until (and after) its task ends."""

    number: int
    model: str
    #: The most its own records say it costs (what was held, then its answers' costs); None: nothing.
    floor: float | None
    state: str = _HELD
    #: What it counts once its task ended with a readable ``cost_actual``; None: it counts at the bound.
    settled: float | None = None
    #: Created (or maybe created) and not seen finished: its model's price may still be untold.
    open: bool = True
    #: An earlier run's or try's create: counted at ``max(recorded, bound)`` whatever it ends as.
    earlier: bool = False

    @property
    def amount(self) -> float:
        """What was held for it when it was reserved (kept for callers that record it)."""
        return self.floor or 0.0


#: The name the callers have used for a charge that waits for its answer.
Reservation = Charge


@dataclass
class _Book:
    """One model's prices and the charges counted at its bound."""

    bound: float | None
    #: The highest readable ``cost_actual`` seen: the price is known once there is one.
    charged: float | None = None
    #: Why its price is untold for good (a task ended without a readable ``cost_actual``).
    untold: str | None = None
    #: Charges counted at the bound, by state.
    at_bound: Counter[str] = field(default_factory=Counter)
    #: Charges whose own floor is above the bound (held "everything left" for an unknown price).
    above: list[Charge] = field(default_factory=list)
    open: int = 0


@dataclass
class Budget:
    """What one task instance (all its tries) may still spend.

    :param max_cost: the ceiling, in the API's cost unit; None for no ceiling (the budget then
        only adds up what was spent).
    :param price_of: a model's documented price (default: the catalogue's example price).
    """

    max_cost: float | None
    price_of: Callable[[str], float | None] = catalogue_price
    #: Counted: every create answered, or made by an earlier run or try (regenerations of earlier
    #: review rounds, passed in here), at what it counts now.
    committed: float = 0.0
    #: Held for good: creates whose answers were lost (they may have charged).
    abandoned: float = 0.0
    _held: float = field(default=0.0, repr=False)
    _books: dict[str, _Book] = field(default_factory=dict, repr=False)
    _numbers: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def __post_init__(self) -> None:
        check_max_cost(self.max_cost)

    # -- what is known -----------------------------------------------------------------------

    def _book(self, model: str) -> _Book:
        book = self._books.get(model)
        if book is None:
            book = self._books[model] = _Book(readable_cost(self.price_of(model)))
        return book

    @property
    def reserved(self) -> float:
        """Held: for creates whose answers are not in yet, and for good for those whose answers were lost."""
        return self._held + self.abandoned

    @property
    def left(self) -> float | None:
        """What may still be reserved; None without a ceiling."""
        if self.max_cost is None:
            return None
        return max(0.0, self.max_cost - self.committed - self.reserved)

    def predict(self, model: str) -> float | None:
        """The model's bound: the most one of its creates can cost as far as anything seen says."""
        return self._book(model).bound

    def price_known(self, model: str) -> bool:
        """Whether a readable ``cost_actual`` told what a task of ``model`` is charged."""
        return self.price_seen(model) is not None

    def price_seen(self, model: str) -> float | None:
        """The highest readable ``cost_actual`` seen for ``model``: None while its price is not known."""
        return self._book(model).charged

    def unpriced(self, model: str) -> str | None:
        """Why ``model``'s price is untold for good (its lone task ended without one), else None."""
        book = self._book(model)
        return None if book.charged is not None else book.untold

    def learn(self, model: str, cost_estimate: object = None, cost_actual: object = None) -> None:
        """An answer or a record told costs of a task of ``model``: raise its bound (and every charge at it)."""
        book = self._book(model)
        estimate, actual = readable_cost(cost_estimate), readable_cost(cost_actual)
        if actual is not None:
            book.charged = max(actual, book.charged or 0.0)
        highest = max((c for c in (estimate, actual) if c is not None), default=None)
        if highest is None or (book.bound is not None and highest <= book.bound):
            return
        old = book.bound or 0.0
        for state, count in book.at_bound.items():
            self._add(state, count * (highest - old))
        book.bound = highest
        for charge in [c for c in book.above if (c.floor or 0.0) <= highest]:
            book.above.remove(charge)
            book.at_bound[charge.state] += 1
            self._add(charge.state, highest - (charge.floor or 0.0))

    def in_flight(self, model: str | None = None) -> bool:
        """Whether tasks (of ``model``, or any) are open: created, or maybe created, and not seen finished."""
        books = self._books.values() if model is None else [self._book(model)]
        return any(book.open for book in books)

    # -- charges ------------------------------------------------------------------------------

    def _add(self, state: str, amount: float) -> None:
        if state == _HELD:
            self._held += amount
        elif state == _ABANDONED:
            self.abandoned += amount
        elif state == _COUNTED:
            self.committed += amount

    def _count(self, charge: Charge, sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) what ``charge`` counts now."""
        book = self._book(charge.model)
        if charge.settled is not None:
            self._add(charge.state, sign * charge.settled)
            return
        above = charge.floor is not None and (book.bound is None or charge.floor > book.bound)
        if above:
            if sign > 0:
                book.above.append(charge)
            else:
                book.above.remove(charge)
            self._add(charge.state, sign * (charge.floor or 0.0))
        else:
            book.at_bound[charge.state] += sign
            self._add(charge.state, sign * (book.bound or 0.0))

    def _change(self, charge: Charge, **changes: object) -> None:
        self._count(charge, -1)
        for name, value in changes.items():
            setattr(charge, name, value)
        self._count(charge, 1)

    def counted(self, charge: Charge) -> float:
        """What ``charge`` counts now."""
        if charge.settled is not None:
            return charge.settled
        return max(charge.floor or 0.0, self._book(charge.model).bound or 0.0)

    def try_reserve(self, model: str) -> Charge | None:
        """Hold what one create of ``model`` may cost, or None when it does not fit now.

        None and :meth:`refuses` False: it may fit once creates in flight are answered, or
        once the model's lone task (its price not known yet) has finished.
        """
        book = self._book(model)
        if self.max_cost is None:
            return self._new(model, book.bound, _HELD)
        if self.unpriced(model) is not None or (book.charged is None and book.open):
            return None
        left = self.max_cost - self.committed - self.reserved
        if book.bound is None:
            # Unknown price: everything left, so that nothing else is created until the answer says.
            return None if left <= _SLACK else self._new(model, left, _HELD)
        if book.bound > left + _SLACK:
            return None
        return self._new(model, book.bound, _HELD)

    def _new(self, model: str, floor: float | None, state: str, *, earlier: bool = False) -> Charge:
        charge = Charge(next(self._numbers), model, floor, state, earlier=earlier)
        self._count(charge, 1)
        self._book(model).open += 1
        return charge

    def reserve(self, model: str) -> Charge:
        """:meth:`try_reserve`, raising :class:`BudgetExceededError` (naming the ceiling and the prediction)."""
        reservation = self.try_reserve(model)
        if reservation is None:
            raise BudgetExceededError(self.refusal(model))
        return reservation

    def settle(
        self, charge: Charge, cost_estimate: object, cost_actual: object = None, *, earlier: bool = False
    ) -> float:
        """The create's answer came: count it by what it says; returns what it counts.

        :param earlier: the answer may be a replay of an earlier try's task: it counts as
            earlier creates do, at ``max(recorded, bound)`` whatever it ends as.
        """
        charge.earlier = charge.earlier or earlier
        self.learn(charge.model, cost_estimate, cost_actual)
        costs = [c for c in (readable_cost(cost_estimate), readable_cost(cost_actual)) if c is not None]
        # An answer without a readable cost leaves an earlier record's own figure standing.
        floor = max(costs) if costs else (charge.floor if charge.earlier else None)
        self._change(charge, state=_COUNTED, floor=floor)
        return self.counted(charge)

    def finish(
        self, charge: Charge, cost_estimate: object, cost_actual: object, *, task: str, seen_ending: bool = True
    ) -> None:
        """The task ended (``task``: its id): it settles at ``max(estimate, actual)``.

        Ended without a readable ``cost_actual``, or not seen ending at all (``seen_ending``
        False: this run stops watching it), while its model's price is not known: the server
        never told the price, and later creates of the model are refused under a ceiling.
        """
        self.learn(charge.model, cost_estimate, cost_actual)
        self._close(charge)
        actual = readable_cost(cost_actual)
        if actual is None:
            ending = "ended without a readable cost_actual" if seen_ending else "was not seen ending"
            self._untold(charge.model, f"its task {task} {ending}")
            return
        if not charge.earlier and charge.state == _COUNTED:
            estimate = readable_cost(cost_estimate)
            self._change(charge, settled=max(actual, estimate or 0.0, charge.settled or 0.0))

    def adopt(self, model: str, *, recorded: object = None, open: bool, untold: str | None = None) -> Charge:
        """Count an earlier run's or try's create at ``max(recorded, bound)``; learn every record's costs first.

        :param recorded: the most its record says it cost (its costs, or what was held for it).
        :param open: it was not seen finished (its answer lost, or its task still running): under
            a ceiling, its model goes alone until it is (:meth:`finish`).
        :param untold: why its model's price is untold if no other record tells it (it was seen to
            end without a readable ``cost_actual``, or will not be seen ending), for refusals.
        """
        charge = self._new(model, readable_cost(recorded), _COUNTED, earlier=True)
        if not open:
            self._close(charge)
        if untold is not None:
            self._untold(model, untold)
        return charge

    def _untold(self, model: str, reason: str) -> None:
        book = self._book(model)
        if book.charged is None and book.untold is None:
            book.untold = reason

    def _close(self, charge: Charge) -> None:
        if charge.open:
            charge.open = False
            self._book(charge.model).open -= 1

    def release(self, charge: Charge) -> None:
        """The create surely charged nothing (the API refused it): hand the money back."""
        if charge.state == _HELD:
            self._count(charge, -1)
            charge.state = "released"
            self._close(charge)

    def abandon(self, charge: Charge, *, key: str = "") -> None:
        """The create's answer is lost: it may have charged, so its money stays held, and its price is untold."""
        if charge.state == _HELD:
            self._change(charge, state=_ABANDONED)
            self._close(charge)
            self._untold(charge.model, f"the answer to its create {key} was lost".replace("  ", " "))

    # -- refusals -----------------------------------------------------------------------------

    def refuses(self, model: str) -> bool:
        """Whether a create for ``model`` would not fit even once every unanswered create were released."""
        if self.max_cost is None:
            return False
        if self.unpriced(model) is not None:
            return True
        predicted = self.predict(model)
        spent = self.committed + self.abandoned
        if predicted is None:
            return spent >= self.max_cost - _SLACK
        return spent + predicted > self.max_cost + _SLACK

    def refusal(self, model: str) -> str:
        """Why a create for ``model`` is not sent, in words naming ``max_cost`` and the prediction."""
        untold = self.unpriced(model)
        if untold is not None:
            return (
                f"max_cost = {self.max_cost!r}: a task for {model!r} was not created: the server never told what a "
                f"task of {model!r} is charged ({untold}), so no create of it can be "
                f"counted against the ceiling. This task instance has spent {self.committed:g} so far (its tries "
                "together). Nothing was charged for it"
            )
        predicted = self.predict(model)
        prediction = (
            f"its cost is unknown (model {model!r} has no documented price and no answer told it yet)"
            if predicted is None
            else f"it is predicted to cost {predicted:g}"
        )
        held = f" and {self.reserved:g} held for creates in flight" if self.reserved > _SLACK else ""
        return (
            f"max_cost = {self.max_cost!r}: a task for {model!r} was not created: {prediction}, and this task "
            f"instance has already spent {self.committed:g} (its tries together){held}. Nothing was charged for it"
        )

"""A stateful hypothesis test of the ledger: reservations, replays, settlements, releases, crashes, window
rollovers and concurrent reservers, checked against a model and against the books' own sums.

Invariants after every step, per budget window:
- the counters equal the model's (exact micro-units), and equal the sums of the rows holding in
  the window: ``spent`` = settled costs, ``reserved`` = open reservations (the totals are the rows);
- ``spent + reserved <= limit``, except by what settlements above their reservation added (a
  price rising past what anything had shown): money is never held past a limit by the ledger;
- a create is held at no less than its model's bound (every cost a settle told), and never at 0
  while nothing priced its model;
- while no settle told a model's ``actual``, at most one create of it is in flight (reserved, or
  settled without any cost) per account: the others wait (:class:`PriceUnknownWait`);
- once a create of such a model *ended* without telling its ``actual``, its price is untold for
  good: every new create of it is refused (``BudgetRefusal.untold``), until a settle tells one;
- ``reserve_many`` accepts, refuses and defers exactly what the same reservations one by one would.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
from sqlalchemy import select

from airflow_provider_mindvideo.spend.budgets import budgets_from_extras, to_micros
from airflow_provider_mindvideo.spend.engines import engine_for_url
from airflow_provider_mindvideo.spend.ledger import Ledger, _Refused, _reserve
from airflow_provider_mindvideo.spend.pricing import UNKNOWN_PRICE_HOLD
from airflow_provider_mindvideo.spend.records import BudgetRefusal, CreateRecord, PriceUnknownWait, Settlement, SpendRow
from airflow_provider_mindvideo.spend.schema import budget_window, spend, spend_hold
from airflow_provider_mindvideo.spend.windows import UTC, window_at
from tests.spend.helpers import know_price

EXTRAS = {
    "budgets": {"account": {"day": 3, "week": 8}, "marketing": {"month": 5}},
    "budget_timezone": "Europe/Berlin",
}
# Two days before Berlin's spring clock change and the month's end: rollovers come early.
START = dt.datetime(2026, 3, 27, 20, 0, tzinfo=UTC)

amounts = st.sampled_from([0, 0.25, 0.5, 1, 1.5, 2.5, 0.0135])
costs = st.one_of(st.none(), amounts, st.sampled_from([0.1, 3.2]))
budget_names = st.sampled_from([None, "marketing"])
# A model priced from the start (at 0: it holds what is asked until a settle tells more), and one
# no catalogue or settle priced: it goes alone until a settle tells its actual.
PRICED, UNPRICED = "priced-model", "new-model"
models = st.sampled_from([PRICED, PRICED, UNPRICED])

WindowKey = tuple[str, str, dt.datetime]  # budget, period, window start (naive UTC)


@dataclass
class ModelRow:
    model: str
    state: str
    reserved: int
    cost: int
    estimated: int | None = None
    actual: int | None = None
    windows: list[WindowKey] = field(default_factory=list)
    held: int = 0  # what the ledger held for it in its windows (0 once released)


class LedgerMachine(RuleBasedStateMachine):
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="ledger-stateful-")
        self.url = f"sqlite:///{Path(self.folder) / 'ledger.db'}"
        self.now = START
        self.ledger = Ledger(engine_for_url(self.url), clock=lambda: self.now)
        self.config = budgets_from_extras(EXTRAS, "acct")
        self.rows: dict[str, ModelRow] = {}
        self.refused: set[str] = set()  # keys a budget refused and nothing reserved since: a 'refused' row
        self.counters: dict[WindowKey, list[int]] = defaultdict(lambda: [0, 0])  # spent, reserved
        self.overrun: dict[WindowKey, int] = defaultdict(int)
        self.numbers = iter(range(10**9))
        know_price(self.ledger, PRICED, 0)
        self.prices: dict[str, list[int | None]] = {PRICED: [0, 0], UNPRICED: [None, None]}  # highest, charged
        self.untold: set[str] = set()  # models a create of which ended without an actual while unpriced

    # -- the model ------------------------------------------------------------------------------

    def _windows(self, budget: str | None) -> list[tuple[WindowKey, int]]:
        found = []
        for b in sorted(self.config.applicable(budget), key=lambda b: (b.name, b.period.value)):
            window = window_at(b.period, self.now, self.config.timezone)
            found.append(((b.name, b.period.value, window.start.replace(tzinfo=None)), b.limit))
        return found

    def _first_full(self, budget: str | None, micros: int) -> WindowKey | None:
        for key, limit in self._windows(budget):
            spent, reserved = self.counters[key]
            if spent + reserved + micros > limit:
                return key
        return None

    def _model_reserve(self, key: str, micros: int, budget: str | None, model: str = PRICED) -> None:
        windows = [w for w, _ in self._windows(budget)]
        for window in windows:
            self.counters[window][1] += micros
        self.refused.discard(key)
        self.rows[key] = ModelRow(model, "reserved", micros, micros, windows=windows, held=micros)

    def _holding(self, model: str, amount: float) -> int:
        highest, charged = self.prices[model]
        micros = max(to_micros(amount), highest or 0)
        return max(micros, UNKNOWN_PRICE_HOLD) if highest is None and charged is None else micros

    def _in_flight(self, model: str, key: str) -> list[str]:
        return [
            k
            for k, r in self.rows.items()
            if r.model == model and k != key and (r.state == "reserved" or (r.state == "settled" and r.actual is None))
        ]

    def _check(self, key: str, amount: float, budget: str | None, model: str, outcome: object) -> None:
        """What one reservation must have come to, given the model; the model follows it."""
        existing = self.rows.get(key)
        if existing is not None and existing.state != "released":
            assert not isinstance(outcome, BudgetRefusal | PriceUnknownWait), f"a replay was refused: {outcome}"
            return
        if self.prices[model][1] is None and model in self.untold:
            assert isinstance(outcome, BudgetRefusal) and outcome.untold, f"{model}'s untold price passed: {outcome}"
            assert not outcome.could_ever_fit and outcome.budget == self._windows(budget)[0][0][0]
            if existing is None:
                self.refused.add(key)
            return
        if self.prices[model][1] is None and self._in_flight(model, key):
            assert isinstance(outcome, PriceUnknownWait), f"{model} did not go alone: {outcome}"
            assert outcome.holder in self._in_flight(model, key)
            return
        micros = self._holding(model, amount)
        full = self._first_full(budget, micros)
        if full is None:
            assert not isinstance(outcome, BudgetRefusal | PriceUnknownWait), f"refused though it fits: {outcome}"
            assert to_micros(outcome.reserved) == micros  # type: ignore[union-attr]
            self._model_reserve(key, micros, budget, model)
        else:
            assert isinstance(outcome, BudgetRefusal), f"reserved past the limit of {full}: {outcome}"
            if existing is None:  # a create the API refused stays released
                self.refused.add(key)
            assert (outcome.budget, outcome.window.period.value) == full[:2]
            assert outcome.window.start <= self.now < outcome.window.resets_at

    def _reserve(self, key: str, amount: float, budget: str | None, model: str = PRICED) -> None:
        model = self.rows[key].model if key in self.rows else model
        outcome = self.ledger.try_reserve(CreateRecord(key, model), amount, self.config, budget)
        self._check(key, amount, budget, model, outcome)

    # -- rules ----------------------------------------------------------------------------------

    @rule(target=keys, amount=amounts, budget=budget_names, model=models)
    def reserve(self, amount: float, budget: str | None, model: str) -> str:
        key = f"k{next(self.numbers)}"
        self._reserve(key, amount, budget, model)
        return key

    @rule(group=st.lists(st.tuples(amounts, budget_names, models, st.booleans()), min_size=1, max_size=6))
    def reserve_many(self, group: list[tuple[float, str | None, str, bool]]) -> None:
        """One transaction, each create on its own against the totals the ones before it left (replays included)."""
        known = list(self.rows)
        keys = [
            known[n % len(known)] if replay and known else f"k{next(self.numbers)}"
            for n, (_, _, _, replay) in enumerate(group)
        ]
        keys = list(dict.fromkeys(keys))[: len(group)]
        group = group[: len(keys)]
        models_of = [self.rows[k].model if k in self.rows else m for k, (_, _, m, _) in zip(keys, group, strict=True)]
        creates = [(CreateRecord(k, m), a, b) for k, m, (a, b, _, _) in zip(keys, models_of, group, strict=True)]
        # One reserve_many per budget set is what BatchBooks sends; mixed budgets must work too.
        outcomes = self.ledger.reserve_many(creates, self.config)
        for (create, amount, budget), outcome in zip(creates, outcomes, strict=True):
            self._check(create.idempotency_key, amount, budget, create.model, outcome)

    @rule(key=keys, amount=amounts, budget=budget_names)
    def replay(self, key: str, amount: float, budget: str | None) -> None:
        self._reserve(key, amount, budget)

    def _model_settle(self, key: str, estimated: float | None, actual: float | None, ended: bool = False) -> None:
        row = self.rows.get(key)
        if row is None:
            return
        self._model_settle_row(row, estimated, actual)
        if ended and row.state == "settled" and row.actual is None and self.prices[row.model][1] is None:
            self.untold.add(row.model)

    def _model_settle_row(self, row: ModelRow, estimated: float | None, actual: float | None) -> None:
        row.estimated = row.estimated if estimated is None else to_micros(estimated)
        row.actual = row.actual if actual is None else to_micros(actual)
        known = [m for m in (row.estimated, row.actual) if m is not None]
        if row.state == "released" and not known:
            return
        price = self.prices[row.model]
        if known:
            price[0] = max(price[0] or 0, *known)
        if row.actual is not None:
            price[1] = max(price[1] or 0, row.actual)
        # Only a told actual is a cost; until one is, an estimate may raise the count, never lower it.
        cost = max(known) if row.actual is not None else max(row.reserved, row.estimated or 0)
        held = row.reserved if row.state == "reserved" else 0
        was = row.cost if row.state == "settled" else 0
        # Money a settle adds past what the create counted for until now (its hold, its earlier
        # cost, or 0 once the API refused it) is not checked against the limit: a cost above its
        # reservation, a cost raised after a lower one freed room that others took.
        for window in row.windows:
            self.counters[window][0] += cost - was
            self.counters[window][1] -= held
            self.overrun[window] += max(0, cost - held - was)
        row.state, row.cost = "settled", cost

    def _model_release(self, key: str) -> None:
        row = self.rows.get(key)
        if row is not None and row.state == "reserved":
            for window in row.windows:
                self.counters[window][1] -= row.reserved
            row.state, row.cost, row.held = "released", 0, 0

    def _check_row(self, key: str, found: SpendRow | None) -> None:
        row = self.rows.get(key)
        if row is None:
            assert found is None, f"{key}: the ledger settled a create it never reserved"
            return
        assert found is not None and (found.state, to_micros(found.cost)) == (row.state, row.cost)

    @rule(key=keys, estimated=costs, actual=costs, ended=st.booleans())
    def settle(self, key: str, estimated: float | None, actual: float | None, ended: bool) -> None:
        found = self.ledger.settle(key, estimated=estimated, actual=actual, ended=ended)
        self._model_settle(key, estimated, actual, ended)
        self._check_row(key, found)

    @rule(key=keys)
    def release(self, key: str) -> None:
        found = self.ledger.release(key)
        self._model_release(key)
        self._check_row(key, found)

    @rule(
        group=st.lists(
            st.tuples(keys, costs, costs, st.sampled_from(["answer", "ended", "released"])), min_size=1, max_size=6
        )
    )
    def settle_many(self, group: list[tuple[str, float | None, float | None, str]]) -> None:
        """A batch's answers: settles (of an answer, of an ended task) and releases of one group (a key may come
        twice) in one transaction. What the group tells of a model's price is learnt before any end marks it untold."""
        settlements = [
            Settlement(key, released=True)
            if how == "released"
            else Settlement(key, estimated, actual, ended=how == "ended")
            for key, estimated, actual, how in group
        ]
        found = self.ledger.settle_many(settlements)
        ended = []
        for settlement in settlements:
            if settlement.released:
                self._model_release(settlement.idempotency_key)
            else:
                self._model_settle(settlement.idempotency_key, settlement.estimated, settlement.actual)
                row = self.rows.get(settlement.idempotency_key)
                if settlement.ended and row is not None and row.state == "settled" and row.actual is None:
                    ended.append(row.model)
        self.untold |= {model for model in ended if self.prices[model][1] is None}
        for settlement, row in zip(settlements, found, strict=True):
            self._check_row(settlement.idempotency_key, row)

    @rule(amount=amounts)
    def crash_mid_reservation(self, amount: float) -> None:
        """A process killed inside its reservation's transaction leaves nothing behind."""

        class Killed(Exception):
            pass

        engine = self.ledger.engine
        try:
            with engine.begin() as connection:
                windows = [
                    (b, window_at(b.period, self.now, self.config.timezone)) for b in self.config.applicable(None)
                ]
                _reserve(connection, CreateRecord("killed", PRICED), to_micros(amount), self.config, windows, self.now)
                raise Killed
        except (Killed, _Refused):
            pass
        assert self.ledger.row("killed") is None

    @rule(hours=st.integers(min_value=1, max_value=200))
    def time_passes(self, hours: int) -> None:
        self.now += dt.timedelta(hours=hours)

    @rule(count=st.integers(min_value=2, max_value=6), amount=st.sampled_from([0.5, 1, 1.5]), budget=budget_names)
    def concurrent_reservers(self, count: int, amount: float, budget: str | None) -> None:
        micros = self._holding(PRICED, amount)
        fitting = min((limit - sum(self.counters[key])) // micros for key, limit in self._windows(budget))
        keys = [f"k{next(self.numbers)}" for _ in range(count)]
        barrier = threading.Barrier(count)

        def reserve(key: str) -> bool:
            barrier.wait()
            outcome = self.ledger.try_reserve(CreateRecord(key, PRICED), amount, self.config, budget)
            return not isinstance(outcome, BudgetRefusal)

        with ThreadPoolExecutor(count) as pool:
            accepted = [key for key, ok in zip(keys, pool.map(reserve, keys), strict=True) if ok]
        assert len(accepted) == max(0, min(count, fitting))
        for key in accepted:
            self._model_reserve(key, micros, budget)
        self.refused |= set(keys) - set(accepted)

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def books_match_the_model_and_their_rows(self) -> None:
        with self.ledger.engine.connect() as connection:
            counters = {
                (r.budget, r.period, r.window_start): (r.spent, r.reserved, r.limit_amount)
                for r in connection.execute(select(budget_window))
            }
            rows = {r.id: r for r in connection.execute(select(spend))}
            holds = connection.execute(select(spend_hold)).all()
        sums: dict[WindowKey, list[int]] = defaultdict(lambda: [0, 0])
        for hold in holds:
            row = rows[hold.spend_id]
            window = (hold.budget, hold.period, hold.window_start)
            if row.state == "settled":
                sums[window][0] += row.cost
            elif row.state == "reserved":
                sums[window][1] += row.reserved
        for window, (spent, reserved, limit) in counters.items():
            assert [spent, reserved] == self.counters[window], window
            assert [spent, reserved] == sums[window], window
            assert spent + reserved <= limit + self.overrun[window], window
        assert set(self.rows) == {r.idempotency_key for r in rows.values() if r.state != "refused"}
        refused = [r for r in rows.values() if r.state == "refused"]
        assert self.refused == {r.idempotency_key for r in refused}
        assert all(r.cost == 0 for r in refused)
        assert not {r.id for r in refused} & {hold.spend_id for hold in holds}
        if self.prices[UNPRICED][1] is None:  # goes alone: one in flight at most
            assert len(self._in_flight(UNPRICED, "")) <= 1


LedgerMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("LEDGER_EXAMPLES", "30")),
    stateful_step_count=25,
    deadline=None,
    # The explain phase traces every line SQLAlchemy runs: minutes, for little.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
TestLedger = LedgerMachine.TestCase

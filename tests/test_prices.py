"""What a create costs is learnt from what is charged: answers that lie about costs, against the server's own books.

The oracle is the emulator's charge list, never the provider's belief: charges stay within
``max_cost`` plus at most one create's true price per model whose price was not yet known.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse

import airflow_provider_mindvideo.emulator.app as emulated_app
import airflow_provider_mindvideo.emulator.state as emulated_state
from airflow_provider_mindvideo.batch.plan import OVER_BUDGET, SUCCEEDED
from airflow_provider_mindvideo.client.catalog import known_models
from airflow_provider_mindvideo.client.errors import BudgetExceededError, RemoteTaskFailedError
from airflow_provider_mindvideo.client.models import MindVideoTask
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.operators import MindVideoSubmitOperator
from airflow_provider_mindvideo.spend.ceiling import Budget, readable_cost
from tests.test_batch_trigger import _events, batch  # noqa: F401  (the fixture)
from tests.test_max_cost import Ti as SubmitTi

TRUE = object()  # the answer says the true price
Said = Any  # a value, TRUE, or a function of the task giving one


class _LaxJson(JSONResponse):
    """Sends NaN and Infinity as Python's json does: what a sloppy server sends."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content).encode()


@pytest.fixture
def server(emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> Callable[..., MindVideoEmulator]:
    """The emulator charging ``price`` per gpt-image-2 task, its answers saying ``estimate`` and ``actual``."""

    def priced(price: float, *, estimate: Said = TRUE, actual: Said = TRUE) -> MindVideoEmulator:
        models = {slug: dataclasses.replace(spec, cost_estimate=price) for slug, spec in known_models().items()}
        monkeypatch.setattr(emulated_state, "known_models", lambda: models)
        real_body = emulated_app.task_body

        def said(value: Said, task: Any) -> Any:
            value = value(task) if callable(value) else value
            return task.cost if value is TRUE else value

        def body(task: Any, now: float, base_url: str) -> dict[str, Any]:
            answer = real_body(task, now, base_url)
            answer["cost_estimate"] = said(estimate, task)
            if answer["cost_actual"] is not None:
                answer["cost_actual"] = said(actual, task)
            return answer

        monkeypatch.setattr(emulated_app, "task_body", body)
        monkeypatch.setattr(emulated_app, "JSONResponse", _LaxJson)
        emulator.script("", "succeeded", queued_seconds=0.0, processing_seconds=0.05)
        return emulator

    return priced


# -- the price model, alone ---------------------------------------------------------------------


@given(st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=20), st.lists(st.integers())))
def test_a_cost_is_a_finite_number_at_least_zero_or_unknown(value: Any) -> None:
    cost = readable_cost(value)
    assert cost is None or (math.isfinite(cost) and cost >= 0)
    if isinstance(value, bool) or value is None:
        assert cost is None
    task = MindVideoTask.model_validate({"task_id": "t", "status": "succeeded", "cost_actual": value})
    assert task.cost_actual == cost  # never unreadable


@pytest.mark.parametrize(
    ("sent", "read"),
    [("0.5", 0.5), (" 2 ", 2.0), ("0.50 USD", None), ("NaN", None), ("-1", None), ("1e400", None), (-50, None)],
)
def test_only_plain_amounts_are_read(sent: Any, read: float | None) -> None:
    assert readable_cost(sent) == read


def test_a_model_s_first_create_goes_alone_until_a_task_ends_with_what_it_charged() -> None:
    budget = Budget(10.0)
    first = budget.reserve("gpt-image-2")
    budget.settle(first, 0.5)  # an estimate is no price: the next create still waits
    assert budget.try_reserve("gpt-image-2") is None and not budget.refuses("gpt-image-2")
    budget.finish(first, 0.5, 2.0, task="t1")
    assert budget.committed == pytest.approx(2.0)  # the actual, above the estimate, is what counts
    assert budget.predict("gpt-image-2") == 2.0
    assert budget.try_reserve("gpt-image-2") is not None and budget.try_reserve("gpt-image-2") is not None


def test_a_lone_task_ending_without_a_price_refuses_the_model_naming_the_task() -> None:
    budget = Budget(10.0)
    first = budget.reserve("gpt-image-2")
    budget.settle(first, None)
    budget.finish(first, None, "0.50 USD", task="task_abc")
    assert budget.refuses("gpt-image-2")
    with pytest.raises(BudgetExceededError, match=r"never told.*task_abc"):
        budget.reserve("gpt-image-2")
    assert budget.try_reserve("kling-v3") is not None  # another model is untouched
    free = Budget(None)  # without a ceiling nothing is refused, nothing waits
    lone = free.reserve("gpt-image-2")
    assert free.try_reserve("gpt-image-2") is not None
    free.finish(lone, None, None, task="x")
    assert free.try_reserve("gpt-image-2") is not None


def test_a_price_learnt_later_raises_every_create_counted_below_it() -> None:
    budget = Budget(100.0)
    budget.learn("gpt-image-2", None, 1.0)
    charges = [budget.reserve("gpt-image-2") for _ in range(3)]
    for charge in charges[:2]:
        budget.settle(charge, None)
    assert budget.committed + budget.reserved == pytest.approx(3.0)
    budget.learn("gpt-image-2", 4.0)
    assert budget.committed + budget.reserved == pytest.approx(12.0)
    earlier = budget.adopt("gpt-image-2", recorded=0.1, open=False)
    assert budget.counted(earlier) == 4.0  # an earlier create counts at max(recorded, bound)


@settings(max_examples=300, deadline=None)
@given(
    max_cost=st.floats(0, 5, allow_nan=False),
    price=st.floats(0.01, 2, allow_nan=False),
    said=st.lists(
        st.tuples(
            st.one_of(st.none(), st.just(math.nan), st.just(-50.0), st.floats(0, 3), st.just("0.50 USD")),
            st.one_of(st.none(), st.just(TRUE)),
            st.booleans(),
        ),
        max_size=40,
    ),
    in_flight=st.integers(1, 8),
)
def test_true_charges_stay_within_the_ceiling_and_one_unknown_price(
    max_cost: float, price: float, said: list[tuple[Any, Any, bool]], in_flight: int
) -> None:
    """A simulated server charging ``price`` per create, its estimates anything, its actuals true or absent."""
    budget = Budget(max_cost)
    charged = 0.0
    open_: list[tuple[Any, Any, Any]] = []
    for estimate, actual, finish_first in said:
        if finish_first or len(open_) >= in_flight:
            while open_:
                charge, est, act = open_.pop(0)
                budget.finish(charge, est, price if act is TRUE else act, task="t")
        charge = budget.try_reserve("gpt-image-2")
        if charge is None:
            continue
        charged += price
        budget.settle(charge, estimate)
        open_.append((charge, estimate, actual))
        assert charged <= max_cost + price + 1e-9


# -- the batch, against a server that lies about costs -------------------------------------------


def _spent(emulator: MindVideoEmulator) -> float:
    return float(emulator.state.total_charged)


def test_an_unknown_estimate_does_not_let_a_batch_create_past_the_ceiling(batch: Any, server: Any) -> None:  # noqa: F811
    emulator = server(0.5, estimate=None)
    run = batch(40).run(max_active=10, max_cost=1.0)
    assert _spent(emulator) <= 1.0, f"{emulator.state.charged_tasks} tasks charged"
    assert run.statuses() == {SUCCEEDED: 2, OVER_BUDGET: 38}
    assert run.event["summary"]["cost_estimate"] == pytest.approx(1.0)


def test_an_actual_cost_above_the_estimate_is_what_counts(batch: Any, server: Any) -> None:  # noqa: F811
    emulator = server(2.0, estimate=1.0)
    run = batch(10).run(max_active=1, max_cost=5.0)
    assert _spent(emulator) <= 5.0
    assert run.statuses() == {SUCCEEDED: 2, OVER_BUDGET: 8}


@pytest.mark.parametrize("lie", [-50.0, math.nan, math.inf, "0.50 USD", True])
def test_one_absurd_estimate_neither_credits_money_nor_stalls_the_batch(
    batch: Any,  # noqa: F811
    server: Any,
    lie: Any,
) -> None:
    told: list[int] = []

    def estimate(task: Any) -> Any:
        if not told or told[0] == id(task):
            told[:] = [id(task)]
            return lie
        return TRUE

    emulator = server(1.0, estimate=estimate)
    run = batch(20).run(max_active=4, max_cost=3.0, deadline=__import__("time").time() + 120)
    assert _spent(emulator) <= 3.0 + 1.0
    assert run.statuses()[SUCCEEDED] + run.statuses()[OVER_BUDGET] == 20  # none waited to the deadline


def test_an_unreadable_actual_cost_never_makes_a_task_unreadable(batch: Any, server: Any) -> None:  # noqa: F811
    server(0.5, actual="0.50 USD")
    assert batch(6).run(max_active=3).statuses() == {SUCCEEDED: 6}  # no ceiling: as before


def test_under_a_ceiling_a_model_whose_lone_task_never_told_its_price_is_refused(
    batch: Any,  # noqa: F811
    server: Any,
) -> None:
    emulator = server(0.5, actual="0.50 USD")
    run = batch(6).run(max_active=3, max_cost=100.0)
    assert run.statuses() == {SUCCEEDED: 1, OVER_BUDGET: 5}  # the lone task never told its price
    refused = next(row for row in run.rows if row.status == OVER_BUDGET)
    lone = next(row for row in run.rows if row.status == SUCCEEDED)
    assert "never told" in (refused.error or "") and str(lone.task_id) in (refused.error or "")
    assert emulator.state.charged_tasks == 1


def _kill_at(trigger: Any, emulator: MindVideoEmulator, requests: int) -> None:
    """Run ``trigger`` until the server has seen ``requests`` more API requests, then cancel it (a dead triggerer)."""

    async def run() -> None:
        start = sum(emulator.state.requests.values())
        runner = asyncio.ensure_future(_events(trigger))
        while sum(emulator.state.requests.values()) < start + requests and not runner.done():
            await asyncio.sleep(0.002)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # or it had ended by itself
            await runner

    asyncio.run(run())


@pytest.mark.parametrize("seed", range(6))
def test_triggerers_killed_at_random_points_never_spend_past_the_ceiling(
    batch: Any,  # noqa: F811
    server: Any,
    seed: int,
) -> None:
    """Real price 1.0 (the catalogue says 0.0135), no checkpoint between kills, restarts of the same try."""
    emulator = server(1.0)
    work = batch(12)
    rng = random.Random(seed)
    options: dict[str, Any] = {"max_active": 4, "max_cost": 5.0, "progress_interval": 3600}
    for _ in range(4):
        _kill_at(work.trigger(try_number=1, **options), emulator, rng.randint(1, 12))
    run = work.run(try_number=1, **options)
    assert _spent(emulator) <= 5.0, f"{emulator.state.charged_tasks} charged where 5 fit"
    assert run.statuses()[SUCCEEDED] == emulator.state.charged_tasks


def test_a_restart_counts_the_dead_run_s_creates_at_the_price_it_had_learnt(batch: Any, server: Any) -> None:  # noqa: F811
    emulator = server(1.0)
    work = batch(8)
    options: dict[str, Any] = {"max_active": 4, "max_cost": 3.5, "progress_interval": 3600}

    async def until_three_are_charged() -> None:
        runner = asyncio.ensure_future(_events(work.trigger(**options)))
        while emulator.state.charged_tasks < 3:
            await asyncio.sleep(0.002)
        runner.cancel()  # before any checkpoint
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(until_three_are_charged())
    run = work.run(**options)
    assert _spent(emulator) <= 3.5
    assert run.statuses() == {SUCCEEDED: 3, OVER_BUDGET: 5}


# -- one task, over its tries ----------------------------------------------------------------------


@pytest.mark.parametrize("estimate", [None, math.nan, -50.0, "0.50 USD"])
def test_an_unknown_estimate_does_not_let_tries_create_past_the_ceiling(server: Any, estimate: Any) -> None:
    emulator = server(0.5, estimate=estimate)
    emulator.script("", "failed", queued_seconds=0.0, processing_seconds=0.0)  # each try's task fails at once
    ti = SubmitTi()
    refusals = 0
    for try_number in range(1, 6):
        ti.try_number = try_number
        operator = MindVideoSubmitOperator(
            task_id="submit", model="gpt-image-2", input={"prompt": "dear"}, max_cost=1.2, max_generations=5
        )
        try:
            operator.execute({"ti": ti})  # type: ignore[arg-type]
        except RemoteTaskFailedError:
            pass
        except BudgetExceededError:
            refusals += 1
    assert _spent(emulator) <= 1.2, f"{emulator.state.charged_tasks} tasks charged"
    assert emulator.state.charged_tasks == 2 and refusals == 3


def test_tries_of_a_model_whose_tasks_end_without_a_price_are_refused(server: Any) -> None:
    emulator = server(0.5, estimate=None, actual=None)
    emulator.script("", "failed", queued_seconds=0.0, processing_seconds=0.0)
    ti = SubmitTi()
    operator = MindVideoSubmitOperator(
        task_id="submit", model="gpt-image-2", input={"prompt": "silent"}, max_cost=10.0, max_generations=5
    )
    with pytest.raises(RemoteTaskFailedError):
        operator.execute({"ti": ti})  # type: ignore[arg-type]
    ti.try_number = 2
    with pytest.raises(BudgetExceededError, match="never told"):
        operator.execute({"ti": ti})  # type: ignore[arg-type]
    assert emulator.state.charged_tasks == 1


@pytest.fixture(autouse=True)
def _no_leftover_scripts(emulator: MindVideoEmulator) -> Iterator[None]:
    yield
    emulator.state.reset()

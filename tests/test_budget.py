"""The spend ceiling's arithmetic: predictions are reservations, and the ceiling is hard."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_mindvideo.client.errors import BudgetExceededError
from airflow_provider_mindvideo.spend.ceiling import Budget, catalogue_price


def test_the_first_prediction_is_the_catalogue_price_then_the_highest_answer() -> None:
    budget = Budget(None)
    assert budget.predict("gpt-image-2") == catalogue_price("gpt-image-2") == 0.0135
    budget.settle(budget.reserve("gpt-image-2"), 0.02)
    budget.settle(budget.reserve("gpt-image-2"), 0.04)
    budget.settle(budget.reserve("gpt-image-2"), 0.01)
    assert budget.predict("gpt-image-2") == pytest.approx(0.04)  # never under-predicts a price already seen
    assert budget.predict("kling-v3") == catalogue_price("kling-v3")  # per model


def test_a_create_that_fits_exactly_is_allowed_and_the_next_is_refused() -> None:
    budget = Budget(0.0405)  # three gpt-image-2 images, a sum that floats do not hit exactly
    budget.learn("gpt-image-2", 0.0135, 0.0135)  # a finished task told what it was charged
    for _ in range(3):
        assert budget.try_reserve("gpt-image-2") is not None
    assert budget.try_reserve("gpt-image-2") is None


def test_reservations_in_flight_count_until_settled() -> None:
    budget = Budget(0.03)
    budget.learn("gpt-image-2", None, 0.0135)  # a charge told the price: creates need not go alone
    first = budget.reserve("gpt-image-2")
    second = budget.reserve("gpt-image-2")
    assert budget.try_reserve("gpt-image-2") is None  # 0.027 held, 0.0135 more would pass 0.03
    budget.release(first)  # refused by the API: charged nothing
    assert budget.try_reserve("gpt-image-2") is not None
    budget.settle(second, 0.0135)
    assert budget.committed == pytest.approx(0.0135)


def test_an_answer_without_a_cost_counts_the_prediction() -> None:
    budget = Budget(1.0)
    assert budget.settle(budget.reserve("gpt-image-2"), None) == 0.0135
    assert budget.committed == 0.0135


def test_a_model_without_a_price_holds_everything_left_until_its_first_answer() -> None:
    budget = Budget(0.1)
    first = budget.reserve("brand-new-model")
    assert first.amount == pytest.approx(0.1)
    assert budget.try_reserve("brand-new-model") is None
    assert budget.try_reserve("gpt-image-2") is None
    budget.settle(first, 0.01)
    assert budget.predict("brand-new-model") == 0.01
    assert budget.try_reserve("gpt-image-2") is not None  # the others go on once it is answered
    budget.finish(first, 0.01, 0.01, task="t")
    assert budget.try_reserve("brand-new-model") is not None


def test_the_refusal_names_max_cost_the_prediction_and_the_spending() -> None:
    budget = Budget(0.02)
    budget.settle(budget.reserve("gpt-image-2"), 0.0135)
    with pytest.raises(BudgetExceededError) as refused:
        budget.reserve("gpt-image-2")
    message = str(refused.value)
    assert "max_cost = 0.02" in message
    assert "predicted to cost 0.0135" in message
    assert "already spent 0.0135" in message
    assert refused.value.retryable is False


def test_with_a_ceiling_a_model_s_first_create_goes_alone_until_its_task_ends_charged() -> None:
    budget = Budget(1.0)
    first = budget.reserve("gpt-image-2")
    assert budget.try_reserve("gpt-image-2") is None  # waits...
    assert not budget.refuses("gpt-image-2")  # ...but is not refused
    assert budget.try_reserve("kling-v3") is not None  # another model has its own first create
    budget.settle(first, 0.05)
    assert budget.try_reserve("gpt-image-2") is None  # an estimate is no charge: still alone
    budget.finish(first, 0.05, 0.05, task="t")
    assert budget.try_reserve("gpt-image-2").amount == 0.05  # type: ignore[union-attr]
    assert budget.try_reserve("gpt-image-2") is not None


def test_money_held_in_flight_makes_a_create_wait_and_only_what_is_spent_refuses_it() -> None:
    budget = Budget(10.0)
    unknown = budget.reserve("brand-new-model")  # holds everything left
    assert budget.try_reserve("gpt-image-2") is None and not budget.refuses("gpt-image-2")
    budget.settle(unknown, 9.99)
    assert budget.refuses("gpt-image-2")  # 9.99 + 0.0135 > 10, whatever settles
    lost = Budget(0.02)
    lost.abandon(lost.reserve("gpt-image-2"))  # its answer was lost: it may have charged, for good
    assert lost.try_reserve("gpt-image-2") is None and lost.refuses("gpt-image-2")


@pytest.mark.parametrize("bad", [-1, float("nan"), True, float("inf"), "5"])
def test_a_ceiling_that_is_no_number_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="max_cost"):
        Budget(bad)


@settings(max_examples=200, deadline=None)
@given(
    max_cost=st.floats(0, 2, allow_nan=False),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["gpt-image-2", "kling-v3", "veo3-1-quality", "new-model"]),
            st.sampled_from(["settle", "release", "lost"]),
            st.none() | st.floats(0, 0.7, allow_nan=False),
        ),
        max_size=60,
    ),
)
def test_while_answers_cost_what_was_predicted_spending_never_passes_the_ceiling(
    max_cost: float, steps: list[tuple[str, str, float | None]]
) -> None:
    """Whatever the order of creates, refusals and lost answers: committed + held <= max_cost."""
    budget = Budget(max_cost, price_of=lambda model: None if model == "new-model" else catalogue_price(model))
    for model, fate, _ in steps:
        reservation = budget.try_reserve(model)
        if reservation is None:
            continue
        if fate == "settle":
            budget.settle(reservation, reservation.amount)  # the answer said what was predicted
        elif fate == "release":
            budget.release(reservation)
        else:
            budget.abandon(reservation)  # the answer never came; the money stays held
        assert budget.committed + budget.reserved <= max_cost + 1e-6

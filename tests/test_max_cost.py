"""``max_cost`` on MindVideoSubmitOperator / MindVideoGenerateOperator: refused before any charge, across tries."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_mindvideo.client.errors import BudgetExceededError, RemoteTaskFailedError
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.operators import MindVideoGenerateOperator, MindVideoSubmitOperator
from tests.helpers import Ti

IMAGE_COST = 0.0135


def test_a_ceiling_below_the_price_refuses_before_anything_is_sent(emulator: MindVideoEmulator) -> None:
    operator = MindVideoSubmitOperator(
        task_id="submit", model="gpt-image-2", input={"prompt": "too dear"}, max_cost=0.01
    )
    with pytest.raises(BudgetExceededError) as refused:
        operator.execute({"ti": Ti()})  # type: ignore[arg-type]
    assert "max_cost = 0.01" in str(refused.value) and "predicted to cost 0.0135" in str(refused.value)
    assert emulator.state.requests["create"] == 0 and emulator.state.charged_tasks == 0


def test_a_ceiling_counts_what_earlier_tries_paid(emulator: MindVideoEmulator) -> None:
    """Try 1's task failed (charged); try 2 would pay a second one: 0.027 > 0.02, so it is not created."""
    emulator.script("lighthouse", "failed", times=1)
    ti = Ti()

    def generate() -> Any:
        return MindVideoGenerateOperator(
            task_id="submit",
            model="gpt-image-2",
            input={"prompt": "a lighthouse"},
            max_cost=0.02,
            retries=3,
            deferrable=False,
            poll_interval=0.05,
            max_poll_interval=0.1,
            timeout=10,
        ).execute({"ti": ti})  # type: ignore[arg-type]

    with pytest.raises(RemoteTaskFailedError):
        generate()
    ti.try_number = 2
    with pytest.raises(BudgetExceededError, match=r"already spent 0.0135"):
        generate()
    assert emulator.state.charged_tasks == 1
    assert emulator.state.total_charged <= 0.02


def test_a_replay_after_success_fits_a_ceiling_of_one_task(emulator: MindVideoEmulator) -> None:
    ti = Ti()
    for try_number in (1, 2, 3):  # a retry, then a clear: the same task, paid once
        ti.try_number = try_number
        MindVideoSubmitOperator(
            task_id="submit", model="gpt-image-2", input={"prompt": "once"}, max_cost=IMAGE_COST
        ).execute({"ti": ti})  # type: ignore[arg-type]
    assert emulator.state.charged_tasks == 1


@pytest.mark.parametrize("bad", [-0.5, True])
def test_a_ceiling_that_is_no_amount_fails_at_parse_time(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_cost"):
        MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input={"prompt": "x"}, max_cost=bad)


def _operator(kind: str, max_cost: Any) -> Any:
    from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator

    if kind == "batch":
        return MindVideoBatchGenerateOperator(
            task_id="b", model="gpt-image-2", inputs=[{"prompt": "x"}], max_cost=max_cost
        )
    single = MindVideoSubmitOperator if kind == "submit" else MindVideoGenerateOperator
    return single(task_id="t", model="gpt-image-2", input={"prompt": "x"}, max_cost=max_cost)


@pytest.mark.parametrize("bad", [float("inf"), "5"])
@pytest.mark.parametrize("kind", ["submit", "generate", "batch"])
def test_a_ceiling_that_is_infinite_or_text_fails_at_parse_time_naming_it(kind: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=rf"max_cost = {bad!r}"):
        _operator(kind, bad)

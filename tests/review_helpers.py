"""What the review tests share: items, a task instance stand-in, and a round run through its real steps."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from airflow_provider_mindvideo.operators import MindVideoReviewOperator, MindVideoReviewResultOperator
from airflow_provider_mindvideo.review.items import ReviewItem, ReviewState, review_pages


def item(number: int, prompt: str = "a red fox", **changes: Any) -> ReviewItem:
    fields: dict[str, Any] = {
        "number": number,
        "model": "gpt-image-2",
        "input": {"prompt": prompt, "size": "1:1"},
        "mindvideo_task_id": f"task_{number}",
        "output_urls": [f"https://cdn.example/task_{number}/0.png"],
        "files": [f"file:///media/task_{number}_0.png"],
        "cost": 0.0135,
        "key_stem": f"af-{number:040x}",
        **changes,
    }
    return ReviewItem(**fields)


class FakeTI:
    """What the operators use of a task instance: identity and XCom (JSON only, as Airflow's)."""

    def __init__(self, xcoms: dict[tuple[str, str], Any] | None = None, task_id: str = "review") -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "dag", task_id, "run_1", -1
        self.xcoms = dict(xcoms or {})
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, *, task_ids: str, key: str = "return_value", map_indexes: Any = None) -> Any:
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, *, key: str, value: Any) -> None:
        self.pushed[key] = json.loads(json.dumps(value))


def answer(choices: dict[str, Any], user: str | None = "alice") -> dict[str, Any]:
    """A HITL response event, as Airflow resumes a page with it."""
    return {
        "chosen_options": ["Submit review"],
        "params_input": choices,
        "responded_at": datetime(2026, 1, 1, tzinfo=UTC),
        "responded_by_user": {"id": "u1", "name": user} if user else None,
    }


def run_round(
    state: ReviewState, choices: dict[str, Any], *, page_size: int = 12, **options: Any
) -> tuple[dict[str, Any], FakeTI]:
    """One round through its real steps: each page asked (and answered with ``choices``), then the result task.

    Returns the result task's state record and its task instance (``pushed`` has its XComs).
    """
    pages = review_pages(state.pending, round=state.round + 1, max_rounds=state.max_rounds, page_size=page_size)
    answers = []
    for page in pages:
        shown = [ReviewItem.from_xcom(record) for record in page["items"]]
        asked = MindVideoReviewOperator(task_id="review", page=page)
        decisions = asked.decisions(answer(choices), shown)
        answers.append({"round": page["round"], "page": page["page"], "decisions": [d.to_xcom() for d in decisions]})
    ti = FakeTI({("review", "return_value"): answers}, task_id="review_result")
    result = MindVideoReviewResultOperator(
        task_id="review_result", previous=state.to_xcom(), review_task_id="review", page_size=page_size, **options
    )
    result.execute({"ti": ti})  # type: ignore[arg-type]
    return ti.pushed["mindvideo_review"], ti

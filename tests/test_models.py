from __future__ import annotations

import pytest

from airflow_provider_mindvideo.client.models import MindVideoTask, TaskEvent, TaskStatus


@pytest.mark.parametrize(
    ("status", "terminal"),
    [("queued", False), ("processing", False), ("succeeded", True), ("failed", True), ("cancelled", True)],
)
def test_terminal_statuses(status: str, terminal: bool) -> None:
    assert TaskStatus(status).is_terminal is terminal


def test_a_status_added_later_is_unknown_not_terminal_and_kept() -> None:
    task = MindVideoTask.model_validate({"task_id": "t", "status": "moderating"})
    assert task.status is TaskStatus.UNKNOWN
    assert not task.is_terminal
    assert task.reported_status == "moderating"
    assert task.summary()["status"] == "moderating"


def test_unknown_fields_are_kept() -> None:
    task = MindVideoTask.model_validate({"task_id": "t", "status": "queued", "priority": 3})
    assert task.model_extra == {"priority": 3}


def test_numeric_ids_become_text() -> None:
    task = MindVideoTask.model_validate({"task_id": 12, "request_id": 7, "status": "queued"})
    assert (task.task_id, task.request_id) == ("12", "7")


@pytest.mark.parametrize("request_id", [[0.5], {"id": "r"}, 0.5, True, b"r"])
def test_a_request_id_that_is_no_text_is_unknown_not_a_reason_to_refuse_the_answer(request_id: object) -> None:
    # A hostile or broken server answering every create so would otherwise time the item out.
    task = MindVideoTask.model_validate({"task_id": "t", "request_id": request_id, "status": "queued"})
    assert (task.task_id, task.request_id) == ("t", None)


def test_output_urls_in_order_whatever_the_media_key() -> None:
    task = MindVideoTask.model_validate(
        {
            "task_id": "t",
            "status": "succeeded",
            "output": {
                "images": [{"url": "https://x/1.png"}, {"url": "https://x/2.png"}],
                "videos": [{"url": "https://x/3.mp4"}],
                "audios": ["https://x/4.mp3"],
                "thumbnail": {"url": "https://x/5.jpg"},
                "seed": 42,
                "empty": [{"url": ""}, {}],
            },
        }
    )
    assert task.output_urls == [
        "https://x/1.png",
        "https://x/2.png",
        "https://x/3.mp4",
        "https://x/4.mp3",
        "https://x/5.jpg",
    ]


def test_no_output_means_no_urls() -> None:
    assert MindVideoTask.model_validate({"task_id": "t", "status": "succeeded"}).output_urls == []


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (None, None),
        ("", None),
        ("boom", "boom"),
        ({"code": "nsfw", "message": "Refused by moderation"}, "Refused by moderation"),
        ({"detail": "quota"}, "quota"),
        ({"code": "E42"}, "E42"),
        ({"other": 1}, "{'other': 1}"),
    ],
)
def test_error_message_from_any_shape(error: object, message: str | None) -> None:
    task = MindVideoTask.model_validate({"task_id": "t", "status": "failed", "error": error})
    assert task.error_message == message


def test_summary_is_small_and_has_no_input() -> None:
    running = MindVideoTask.model_validate(
        {"task_id": "t", "request_id": "r", "status": "queued", "cost_estimate": 0.1, "input": {"prompt": "x" * 10_000}}
    )
    assert running.summary() == {"task_id": "t", "request_id": "r", "status": "queued", "cost_estimate": 0.1}
    failed = MindVideoTask.model_validate(
        {"task_id": "t", "status": "failed", "cost_actual": 0.1, "error": {"message": "no"}}
    )
    assert failed.summary()["error"] == "no"
    assert failed.summary()["output_urls"] == []


def test_event_description() -> None:
    assert TaskEvent(type="task.failed", message="nope", created_at="2026").describe() == "2026 task.failed nope"
    assert (
        TaskEvent.model_validate({"weird": 1}).describe()
        == '{"type":null,"status":null,"message":null,"created_at":null,"weird":1}'
    )

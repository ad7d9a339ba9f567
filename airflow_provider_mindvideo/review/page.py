"""The review page a person sees: its Markdown and its form. Pure.

A page of a review round shows items -- one generated output each, with its prompt, model and
cost -- on Airflow's "Required actions" page (a ``HITLOperator`` body, Markdown rendered by
react-markdown), and asks for one decision per item (approve or reject) and an optional
comment, as form fields.

Images are shown by their http(s) URL: the UI's Markdown renderer drops ``data:`` URIs, so the
page can only show what the reviewer's browser can fetch. A video is a link (MindVideo returns
no poster image).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

# The decisions' names are the decisions' own (review.py); kept importable from here.
from airflow_provider_mindvideo.review.items import APPROVE as APPROVE
from airflow_provider_mindvideo.review.items import REJECT as REJECT
from airflow_provider_mindvideo.review.items import ReviewItem
from airflow_provider_mindvideo.review.items import comment_field as comment_field
from airflow_provider_mindvideo.review.items import decision_field as decision_field

#: The one option of the HITL request: the per-item choices are its form fields.
SUBMIT = "Submit review"
#: What a round decides for everything when nobody answers within ``response_timeout``.
OnTimeout = Literal["approve_none", "approve_all"]
ON_TIMEOUT_VALUES: tuple[str, ...] = ("approve_none", "approve_all")
#: How many items one review page holds by default: about 570 px each in the real UI, so 12 is
#: some seven screens (see docs/operators/review.md for the measurement).
DEFAULT_PAGE_SIZE = 12
# MindVideo returns no poster for a video: a video is shown as a link; anything else as an image.
_VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".m4v", ".mkv")
# Markdown's active characters: a prompt is the reviewer's text to read, never markup to run
# (a prompt like "![x](http://tracker)" must not load an image in the reviewer's browser).
_MARKDOWN_ACTIVE = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")
_PROMPT_SHOWN = 500


def markdown_text(text: str, limit: int = _PROMPT_SHOWN) -> str:
    """``text`` as literal Markdown: markup, links and images in a prompt are shown, not run."""
    clipped = text if len(text) <= limit else f"{text[:limit]}…"
    return _MARKDOWN_ACTIVE.sub(r"\\\1", " ".join(clipped.split()))


def is_video_url(url: str) -> bool:
    path = url.split("?", 1)[0].split("#", 1)[0].lower()
    return path.endswith(_VIDEO_SUFFIXES)


def review_body(
    items: Sequence[ReviewItem],
    *,
    round: int,
    max_rounds: int,
    page: int = 1,
    pages: int = 1,
    intro: str | None = None,
) -> str:
    """The page's Markdown: a table, one row per item: its image(s) or link, prompt, model, cost and task id.

    A table keeps each item one image high (react-markdown renders no HTML, so images cannot be
    resized): the page stays scannable, and the form below lists the items in the same order.
    """
    lines = []
    if intro:
        lines += [intro, ""]
    where = f"Round {round} of {max_rounds}" + (f", page {page} of {pages}" if pages > 1 else "")
    lines += [
        f"{where}: {len(items)} item(s). Choose **approve** or **reject** for each "
        "in the form below (nothing is pre-set that would be generated again, and paid for), "
        "add a comment if you like, then submit.",
        "",
        "| # | Output | Prompt | Model | Cost | MindVideo task |",
        "|---|---|---|---|---|---|",
    ]
    for item in items:
        shown = " ".join(_output_cell(item, position, url) for position, url in enumerate(item.output_urls))
        prompt = markdown_text(item.prompt) or "(no prompt)"
        if item.round > 1:
            prompt += f" *(generated again for round {item.round})*"
        cost = "unknown" if item.cost is None else f"{item.cost:g}"
        task = markdown_text(item.mindvideo_task_id, 100)
        lines.append(f"| {item.number} | {shown} | {prompt} | {markdown_text(item.model, 100)} | {cost} | {task} |")
    return "\n".join(lines)


def _output_cell(item: ReviewItem, position: int, url: str) -> str:
    target = _url(url)
    if target is None:
        return f"(output {position + 1}: no http(s) URL to show)"
    if is_video_url(url):
        return f"[video {position + 1}]({target})"
    return f"![item {item.number}, output {position + 1}]({target})"


def _url(url: str) -> str | None:
    if not re.match(r"^https?://[^\s()<>]+$", url):
        return None  # only what a browser fetches by http(s), with nothing that closes the Markdown link
    return url


def review_params(
    items: Sequence[ReviewItem], on_timeout: OnTimeout, append_comment: bool = True
) -> dict[str, dict[str, Any]]:
    """The form: per item a choice and an optional comment.

    A choice is pre-set only when it costs nothing: "approve" under ``approve_all``. Otherwise
    the reviewer must choose each item (the field is required), so that pressing Submit alone
    never rejects, and so regenerates and pays for, anything. (A timeout still decides as
    ``on_timeout`` says: without a pre-set value, no choice is a rejection.) The comment's
    description says whether it reaches the regeneration (``append_comment``).

    Returned as keyword arguments of ``airflow.sdk.Param`` per field, so that this module stays
    free of Airflow.
    """
    default = APPROVE if on_timeout == "approve_all" else None
    if append_comment:
        comment_effect = "added to the prompt if the item is generated again"
    else:
        comment_effect = "kept in the review's manifest; not sent to the model"
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        title = f"{item.number}. {item.prompt[:60] or item.mindvideo_task_id}"
        params[decision_field(item)] = {
            "default": default,
            "type": "string",
            "enum": [APPROVE, REJECT],
            "title": title,
            "description": f"Approve or reject item {item.number}",
        }
        params[comment_field(item)] = {
            "default": None,
            "type": ["null", "string"],
            "title": f"{item.number}. comment (optional)",
            "description": f"Why, for item {item.number}: {comment_effect}",
        }
    return params

"""Human review of generated media: the page a reviewer sees, what they decided, what is made again. Pure.

A review round shows items -- one generated output each, with its prompt, model and cost -- on
Airflow's "Required actions" page (a ``HITLOperator`` body, Markdown rendered by react-markdown),
and asks for one decision per item (approve or reject) and an optional comment, as form fields.
Nothing here does I/O: :mod:`.review_operator` shows the page, waits, and regenerates.

Images are shown by their http(s) URL: the UI's Markdown renderer drops ``data:`` URIs, so the
page can only show what the reviewer's browser can fetch. A video is a link (MindVideo returns
no poster image).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from airflow_provider_mindvideo.errors import InputValidationError
from airflow_provider_mindvideo.idempotency import idempotency_key

APPROVE = "approve"
REJECT = "reject"
#: The one option of the HITL request: the per-item choices are its form fields.
SUBMIT = "Submit review"
#: What a round decides for everything when nobody answers within ``response_timeout``.
OnTimeout = Literal["approve_none", "approve_all"]
ON_TIMEOUT_VALUES: tuple[str, ...] = ("approve_none", "approve_all")
#: How many items one review page holds by default (see docs/operators/review.md for the measurement).
DEFAULT_PAGE_SIZE = 12
# MindVideo returns no poster for a video: a video is shown as a link; anything else as an image.
_VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".m4v", ".mkv")
# Markdown's active characters: a prompt is the reviewer's text to read, never markup to run
# (a prompt like "![x](http://tracker)" must not load an image in the reviewer's browser).
_MARKDOWN_ACTIVE = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")
_PROMPT_SHOWN = 500


@dataclass(frozen=True)
class KeySource:
    """The task instance whose idempotency keys an item's generations use (see :mod:`.idempotency`)."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int


@dataclass(frozen=True)
class ReviewItem:
    """One generated output under review, and what is needed to generate it again."""

    number: int
    model: str
    input: Mapping[str, Any]
    mindvideo_task_id: str
    output_urls: Sequence[str]
    files: Sequence[str] = ()
    cost: float | None = None
    key_source: KeySource | None = None
    key_generation: int = 0
    #: The round this output was made for review in (1: the upstream generation).
    round: int = 1

    @property
    def prompt(self) -> str:
        return str(self.input.get("prompt", ""))

    def to_xcom(self) -> dict[str, Any]:
        record = asdict(self)
        record["input"] = dict(self.input)
        record["output_urls"] = list(self.output_urls)
        record["files"] = list(self.files)
        return record

    @classmethod
    def from_xcom(cls, record: Mapping[str, Any]) -> ReviewItem:
        source = record.get("key_source")
        return cls(
            number=int(record["number"]),
            model=str(record["model"]),
            input=dict(record.get("input") or {}),
            mindvideo_task_id=str(record["mindvideo_task_id"]),
            output_urls=list(record.get("output_urls") or []),
            files=list(record.get("files") or []),
            cost=record.get("cost"),
            key_source=KeySource(**source) if source else None,
            key_generation=int(record.get("key_generation") or 0),
            round=int(record.get("round") or 1),
        )


@dataclass(frozen=True)
class Decision:
    """What the reviewer (or the timeout) decided about one item, and who and when."""

    item: ReviewItem
    approved: bool
    comment: str | None
    decided_by: str | None
    decided_at: str | None
    timed_out: bool


@dataclass
class ReviewState:
    """What a chain of review rounds knows: passed from one round's task to the next through XCom."""

    round: int
    max_rounds: int
    approved: list[ReviewItem] = field(default_factory=list)
    rejected: list[ReviewItem] = field(default_factory=list)
    #: Generated again after a rejection, waiting for the next round.
    pending: list[ReviewItem] = field(default_factory=list)
    manifest: list[dict[str, Any]] = field(default_factory=list)
    #: What regenerations cost so far, across rounds (cost estimates where no actual cost is known).
    spent: float = 0.0

    def to_xcom(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "max_rounds": self.max_rounds,
            "approved": [item.to_xcom() for item in self.approved],
            "rejected": [item.to_xcom() for item in self.rejected],
            "pending": [item.to_xcom() for item in self.pending],
            "manifest": list(self.manifest),
            "spent": self.spent,
            # The approved outputs in the shapes downstream tasks use.
            "approved_files": [path for item in self.approved for path in item.files],
            "approved_urls": [url for item in self.approved for url in item.output_urls],
            "approved_task_ids": [item.mindvideo_task_id for item in self.approved],
        }

    @classmethod
    def from_xcom(cls, record: Mapping[str, Any]) -> ReviewState:
        def items(name: str) -> list[ReviewItem]:
            return [ReviewItem.from_xcom(item) for item in record.get(name) or []]

        return cls(
            round=int(record["round"]),
            max_rounds=int(record["max_rounds"]),
            approved=items("approved"),
            rejected=items("rejected"),
            pending=items("pending"),
            manifest=list(record.get("manifest") or []),
            spent=float(record.get("spent") or 0.0),
        )

    @staticmethod
    def is_review_state(value: Any) -> bool:
        return isinstance(value, Mapping) and {"round", "max_rounds", "pending"} <= set(value)


# -- where items come from ------------------------------------------------------------------


def items_from_generated(
    inputs: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any] | None],
    files: Sequence[Sequence[Any] | None] | None,
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
) -> list[ReviewItem]:
    """Items from a mapped Generate (or Submit + Sensor) task: its inputs, its ``mindvideo_task`` records by map index.

    :param files: per map index, the stored paths or the download manifest (``mindvideo_files``)
        of the outputs; ``None`` when they were not saved.
    :param task_id: the task whose keys made the outputs (the Submit or Generate task): a
        rejected item is generated again under that task instance's next key generation.
    """
    if len(records) != len(inputs):
        raise InputValidationError(
            f"review: {len(inputs)} input(s) but {len(records)} generation record(s) from task {task_id!r}; "
            "pass the same list the generation was mapped over"
        )
    items: list[ReviewItem] = []
    for index, (request, record) in enumerate(zip(inputs, records, strict=True)):
        if not record or not record.get("output_urls"):
            continue  # nothing was generated: nothing to look at
        stored = files[index] if files is not None and index < len(files) else None
        items.append(
            ReviewItem(
                number=len(items) + 1,
                model=str(record.get("model") or ""),
                input=dict(request),
                mindvideo_task_id=str(record["task_id"]),
                output_urls=list(record["output_urls"]),
                files=stored_paths(stored),
                cost=_cost(record),
                key_source=KeySource(dag_id, task_id, run_id, index),
                key_generation=int(record.get("key_generation") or 0),
            )
        )
    return items


def items_from_batch_manifest(
    rows: Iterable[Mapping[str, Any]], *, dag_id: str, task_id: str, run_id: str
) -> list[ReviewItem]:
    """Items from a batch manifest's rows (``line``, ``model``, ``input``, ``mindvideo_task_id``, ``status``, ...).

    Only rows that succeeded with outputs are reviewed. A rejected row is generated again under
    the key of (``task_id``, its ``line``) at its ``key_generation`` + 1 (0 when the row has none).
    """
    items: list[ReviewItem] = []
    for row in rows:
        if row.get("status") != "succeeded" or not row.get("output_urls"):
            continue
        line = row.get("line")
        if isinstance(line, bool) or not isinstance(line, int):
            raise InputValidationError(f"review: batch manifest row has line = {line!r}; expected a whole number")
        items.append(
            ReviewItem(
                number=len(items) + 1,
                model=str(row.get("model") or ""),
                input=dict(row.get("input") or {}),
                mindvideo_task_id=str(row.get("mindvideo_task_id")),
                output_urls=list(row["output_urls"]),
                files=stored_paths(row.get("files")),
                cost=_cost(row),
                key_source=KeySource(dag_id, task_id, run_id, line),
                key_generation=int(row.get("key_generation") or 0),
            )
        )
    return items


def stored_paths(files: Any) -> list[str]:
    """Paths from a download manifest (``[{"path": ...}]``), a list of paths, or nested lists of either."""
    if files is None:
        return []
    if isinstance(files, str):
        return [files]
    if isinstance(files, Mapping):
        return [str(files["path"])] if files.get("path") else []
    return [path for entry in files for path in stored_paths(entry)]


def _cost(record: Mapping[str, Any]) -> float | None:
    for name in ("cost_actual", "cost", "cost_estimate"):
        value = record.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


# -- the page -------------------------------------------------------------------------------


def check_page_size(items: Sequence[ReviewItem], page_size: int) -> None:
    if len(items) > page_size:
        raise InputValidationError(
            f"review: {len(items)} items to review, more than page_size={page_size}; a longer page becomes hard "
            "to use in the Airflow UI. Review in several tasks (split the items), or raise page_size"
        )


def markdown_text(text: str, limit: int = _PROMPT_SHOWN) -> str:
    """``text`` as literal Markdown: markup, links and images in a prompt are shown, not run."""
    clipped = text if len(text) <= limit else f"{text[:limit]}…"
    return _MARKDOWN_ACTIVE.sub(r"\\\1", " ".join(clipped.split()))


def is_video_url(url: str) -> bool:
    path = url.split("?", 1)[0].split("#", 1)[0].lower()
    return path.endswith(_VIDEO_SUFFIXES)


def review_body(items: Sequence[ReviewItem], *, round: int, max_rounds: int, intro: str | None = None) -> str:
    """The page's Markdown: a table, one row per item: its image(s) or link, prompt, model, cost and task id.

    A table keeps each item one image high (react-markdown renders no HTML, so images cannot be
    resized): the page stays scannable, and the form below lists the items in the same order.
    """
    lines = []
    if intro:
        lines += [intro, ""]
    lines += [
        f"Round {round} of {max_rounds}: {len(items)} item(s). Choose **approve** or **reject** for each "
        "in the form below, add a comment if you like, then submit.",
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


def decision_field(item: ReviewItem) -> str:
    return f"item_{item.number}"


def comment_field(item: ReviewItem) -> str:
    return f"item_{item.number}_comment"


def review_params(items: Sequence[ReviewItem], on_timeout: OnTimeout) -> dict[str, dict[str, Any]]:
    """The form: per item a choice (pre-set to what a timeout decides) and an optional comment.

    Returned as keyword arguments of ``airflow.sdk.Param`` per field, so that this module stays
    free of Airflow.
    """
    default = APPROVE if on_timeout == "approve_all" else REJECT
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
            "description": f"Why, for item {item.number}",
        }
    return params


def decisions_from_response(
    items: Sequence[ReviewItem],
    params_input: Mapping[str, Any],
    *,
    decided_by: str | None,
    decided_at: str | None,
    timed_out: bool,
) -> list[Decision]:
    """One decision per item from the HITL response's form values; a missing or unknown choice is a rejection."""
    decisions = []
    for item in items:
        choice = params_input.get(decision_field(item))
        comment = params_input.get(comment_field(item))
        comment_text = str(comment).strip() if comment not in (None, "") else None
        decisions.append(
            Decision(
                item=item,
                approved=choice == APPROVE,
                comment=comment_text or None,
                decided_by=decided_by,
                decided_at=decided_at,
                timed_out=timed_out,
            )
        )
    return decisions


def responder_name(user: Any) -> str | None:
    """``responded_by_user`` of a HITL response (``{"id", "name"}``) as one name."""
    if not user:
        return None
    if isinstance(user, Mapping):
        return str(user.get("name") or user.get("id") or "") or None
    return str(user)


# -- regenerating -----------------------------------------------------------------------------


def regeneration_input(item: ReviewItem, comment: str | None, append_comment: bool) -> dict[str, Any]:
    """The input to generate a rejected item again: the same, or with the comment appended to its prompt."""
    request = dict(item.input)
    if append_comment and comment and isinstance(request.get("prompt"), str):
        request["prompt"] = f"{request['prompt']}\n\n{comment}"
    return request


def regeneration_key(item: ReviewItem, fallback: KeySource) -> tuple[str, int]:
    """The key (and generation) to generate ``item`` again: its key source's next generation.

    Keyed on the original input, so the key does not depend on the comment: a retried review
    task replays the same generation, free, whatever the comment said.
    """
    source = item.key_source or fallback
    generation = item.key_generation + 1
    key = idempotency_key(
        source.dag_id, source.task_id, source.run_id, source.map_index, item.model, item.input, generation
    )
    return key, generation


def within_ceiling(spent: float, predicted: float | None, max_cost: float | None) -> bool:
    """Whether one more generation predicted to cost ``predicted`` keeps the review's spend within ``max_cost``.

    The whole ceiling arithmetic of the review, in one place (to be :mod:`.budget`'s once it exists).
    An unknown prediction under a ceiling is refused: the ceiling is a promise.
    """
    if max_cost is None:
        return True
    if predicted is None:
        return False
    return spent + predicted <= max_cost + 1e-9


def manifest_row(
    decision: Decision, round: int, *, regenerated_as: str | None = None, note: str | None = None
) -> dict[str, Any]:
    """One row of the review manifest: the item, the decision, who made it and when."""
    item = decision.item
    return {
        "round": round,
        "number": item.number,
        "model": item.model,
        "prompt": item.prompt,
        "mindvideo_task_id": item.mindvideo_task_id,
        "output_urls": list(item.output_urls),
        "files": list(item.files),
        "cost": item.cost,
        "decision": APPROVE if decision.approved else REJECT,
        "comment": decision.comment,
        "decided_by": decision.decided_by,
        "decided_at": decision.decided_at,
        "timed_out": decision.timed_out,
        "regenerated_as": regenerated_as,
        "note": note,
    }


def regenerated_item(
    item: ReviewItem, *, mindvideo_task_id: str, input: Mapping[str, Any], output_urls: Sequence[str],
    files: Sequence[str], cost: float | None, key_generation: int, round: int,
) -> ReviewItem:  # fmt: skip
    """The item made again: same number and key source, the new task, outputs and generation."""
    return replace(
        item,
        mindvideo_task_id=mindvideo_task_id,
        input=dict(input) if input is not item.input else item.input,
        output_urls=list(output_urls),
        files=list(files),
        cost=cost,
        key_generation=key_generation,
        round=round,
    )

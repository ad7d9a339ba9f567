"""Human review of generated media: the items, their pages, what was decided, what is made again. Pure.

A review runs in rounds; a round shows the items to review on pages (one HITL task instance
each, :mod:`.review_page` draws them), and decides per item: approve or reject. With
regeneration, each rejected item is generated again under the **next generation of the key that
made it** -- the key its Generate / Submit task or its batch item used -- and shown in the next
round. Sharing that key means a retry of the generating task and the review never make two
tasks for one key generation, and a retried review replays its regenerations, free.

Nothing here does I/O: :mod:`airflow_provider_mindvideo.operators.review` reads the sources,
asks, and regenerates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from airflow_provider_mindvideo.client.catalog import input_problems, unknown_model_problem
from airflow_provider_mindvideo.client.errors import InputValidationError, MindVideoError
from airflow_provider_mindvideo.client.idempotency import key_of_generation

#: A reviewer's choice for one item: the value of its decision field on the page's form.
APPROVE = "approve"
REJECT = "reject"


@dataclass(frozen=True)
class ReviewItem:
    """One generated output under review, and what is needed to generate it again."""

    #: Its number in the whole review (from 1): the same on every page and in every round.
    number: int
    model: str
    input: Mapping[str, Any]
    mindvideo_task_id: str
    output_urls: Sequence[str]
    files: Sequence[str] = ()
    cost: float | None = None
    #: The stem of the keys that made it (see :func:`.idempotency.split_key`), and the
    #: generation of its current output: a regeneration uses ``key_generation + 1``.
    key_stem: str = ""
    key_generation: int = 0
    #: The round this output was made for review in (1: the upstream generation).
    round: int = 1
    #: Made with ``allow_unknown_model=True`` (a model newer than this provider's catalogue):
    #: its regenerations are sent likewise. Default: whether the catalogue does not know the
    #: model -- the provider sends such a model only when allowed, so the item was.
    allow_unknown_model: bool | None = None

    def __post_init__(self) -> None:
        if self.allow_unknown_model is None:
            object.__setattr__(self, "allow_unknown_model", unknown_model_problem(self.model) is not None)

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
        return cls(
            number=int(record["number"]),
            model=str(record["model"]),
            input=dict(record.get("input") or {}),
            mindvideo_task_id=str(record["mindvideo_task_id"]),
            output_urls=list(record.get("output_urls") or []),
            files=list(record.get("files") or []),
            cost=record.get("cost"),
            key_stem=str(record.get("key_stem") or ""),
            key_generation=int(record.get("key_generation") or 0),
            round=int(record.get("round") or 1),
            allow_unknown_model=record.get("allow_unknown_model"),
        )


# The page asks by these form fields and decisions_from_response reads the answer by them:
# they are the decisions' names, so they live here, beside the reading.
def decision_field(item: ReviewItem) -> str:
    return f"item_{item.number}"


def comment_field(item: ReviewItem) -> str:
    return f"item_{item.number}_comment"


@dataclass(frozen=True)
class Decision:
    """What the reviewer (or the timeout) decided about one item, and who and when."""

    item: ReviewItem
    approved: bool
    comment: str | None
    decided_by: str | None
    decided_at: str | None
    timed_out: bool

    def to_xcom(self) -> dict[str, Any]:
        return {**asdict(self), "item": self.item.to_xcom()}

    @classmethod
    def from_xcom(cls, record: Mapping[str, Any]) -> Decision:
        return cls(
            item=ReviewItem.from_xcom(record["item"]),
            approved=bool(record["approved"]),
            comment=record.get("comment"),
            decided_by=record.get("decided_by"),
            decided_at=record.get("decided_at"),
            timed_out=bool(record.get("timed_out")),
        )


@dataclass
class ReviewState:
    """What a review knows after a round (round 0: the items found): passed on through XCom."""

    round: int
    max_rounds: int
    approved: list[ReviewItem] = field(default_factory=list)
    rejected: list[ReviewItem] = field(default_factory=list)
    #: To be reviewed in the next round: the items found (round 0), or those generated again.
    pending: list[ReviewItem] = field(default_factory=list)
    manifest: list[dict[str, Any]] = field(default_factory=list)
    #: What regenerations cost so far, across rounds (their cost estimates).
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
        if not (isinstance(record, Mapping) and {"round", "max_rounds", "pending"} <= set(record)):
            raise InputValidationError(
                f"review: expected the previous review step's output, got {type(record).__name__}"
            )

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


# -- pages -----------------------------------------------------------------------------------


def review_pages(items: Sequence[ReviewItem], *, round: int, max_rounds: int, page_size: int) -> list[dict[str, Any]]:
    """The pages of a round, ``page_size`` items each: one HITL task instance (a map index) per page."""
    if isinstance(page_size, bool) or page_size < 1:
        raise InputValidationError(f"review: page_size = {page_size!r}: must be a whole number >= 1")
    chunks = [items[start : start + page_size] for start in range(0, len(items), page_size)]
    return [
        {
            "round": round,
            "max_rounds": max_rounds,
            "page": number,
            "pages": len(chunks),
            "items": [item.to_xcom() for item in chunk],
        }
        for number, chunk in enumerate(chunks, start=1)
    ]


def decisions_of_pages(items: Sequence[ReviewItem], answers: Sequence[Any]) -> list[Decision]:
    """Every item's decision from the pages' answers (one per page, by map index), in item order.

    :raises MindVideoError: an item no page decided (a page's answer is missing).
    """
    decided: dict[int, Decision] = {}
    for answer in answers:
        for record in (answer or {}).get("decisions") or []:
            decision = Decision.from_xcom(record)
            decided[decision.item.number] = decision
    missing = [item.number for item in items if item.number not in decided]
    if missing:
        raise MindVideoError(
            f"review: no decision for item(s) {missing[:20]}: the answer of their review page is missing"
        )
    # The decided item is the one the page showed; the pending list is the same, kept for its order.
    return [decided[item.number] for item in items]


# -- decisions -------------------------------------------------------------------------------


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


def regeneration_key(item: ReviewItem) -> tuple[str, int]:
    """The key (and generation) to generate ``item`` again: the next generation of the key that made it.

    The key does not depend on the comment: a retried review replays the same generation,
    free (MindVideo answers 409 if the same key comes with a different input, e.g. a changed
    comment with ``append_comment``: nothing is charged then either).
    """
    if not item.key_stem:
        raise InputValidationError(f"review: item {item.number} has no key stem to generate it again under")
    generation = item.key_generation + 1
    return key_of_generation(item.key_stem, generation), generation


def regeneration_problems(decisions: Sequence[Decision], append_comment: bool) -> list[str]:
    """What would stop generating the rejected of ``decisions`` again, all of them, before the first create.

    A round's regenerations are created one after the other: one refused midway would leave the
    ones before it created and paid for, recorded nowhere and never reviewed.
    """
    problems = []
    for decision in decisions:
        if decision.approved:
            continue
        item = decision.item
        if not item.key_stem:
            problems.append(f"item {item.number}: has no key stem to generate it again under")
            continue
        unknown = None if item.allow_unknown_model else unknown_model_problem(item.model)
        request = regeneration_input(item, decision.comment, append_comment)
        found = [unknown] if unknown else input_problems(item.model, request)
        problems.extend(f"item {item.number}: {problem}" for problem in found)
    return problems


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
    """The item made again: same number and key stem, the new task, outputs and generation."""
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

"""MindVideoReviewOperator: a person approves or rejects generated media in the Airflow UI, a page at a time.

A review is a few tasks, built by :func:`review_rounds`:

- ``<task_id>_items`` (:class:`MindVideoReviewItemsOperator`) finds the items and splits them into pages;
- ``<task_id>`` (:class:`MindVideoReviewOperator`, mapped: one task instance per page) asks a
  person about one page on the "Required actions" page -- Airflow keeps one HITL request per
  task instance, so a page is a task instance;
- ``<task_id>_result`` (:class:`MindVideoReviewResultOperator`) merges the pages' decisions
  into one result and manifest, and generates the rejected again for the next round
  (``<task_id>_round_2``, ``<task_id>_round_2_result``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param, XComArg

from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.operators.review_result import MindVideoReviewResultOperator
from airflow_provider_mindvideo.operators.review_steps import XCOM_REVIEW_STATE_KEY, MindVideoReviewItemsOperator
from airflow_provider_mindvideo.review.items import Decision, ReviewItem, decisions_from_response, responder_name
from airflow_provider_mindvideo.review.page import (
    APPROVE,
    DEFAULT_PAGE_SIZE,
    ON_TIMEOUT_VALUES,
    REJECT,
    SUBMIT,
    OnTimeout,
    decision_field,
    review_body,
    review_params,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.bases.notifier import BaseNotifier

#: XCom key of the page being reviewed: it must survive the wait, which resumes the task anew.
XCOM_REVIEW_PAGE_KEY = "mindvideo_review_page"
# review_rounds: which of its keyword arguments go to which step (the rest go to every task).
_SOURCE_ARGS = ("generate_task_id", "inputs", "save_task_id", "key_task_id", "batch_manifest", "storage_conn_id")
# append_comment goes to both: the page's comment field says what the result task does with it.
_PAGE_ARGS = ("response_timeout", "on_timeout", "notifiers", "assigned_users", "subject", "body", "append_comment")
_RESULT_ARGS = (
    "regenerate_rejected", "append_comment", "max_cost", "budget", "download_to", "download_conn_id",
    "download_allow_private_urls", "regeneration_timeout", "poll_interval", "mindvideo_conn_id",
)  # fmt: skip


class MindVideoReviewOperator(HITLOperator):
    """One page of a review round on Airflow's "Required actions" page; a person approves or rejects each item.

    Each item shows its image inline (a video as a link), its prompt, model, cost and MindVideo
    task; the form below has per item a choice, approve or reject, and an optional comment. The
    images are shown by their output URL, which the reviewer's browser must be able to open.
    Mapped over the pages :class:`MindVideoReviewItemsOperator` (or the previous round's
    :class:`MindVideoReviewResultOperator`) computes: build it with :func:`review_rounds`.

    :param page: One page (``round``, ``max_rounds``, ``page``, ``pages``, ``items``).
    :param response_timeout: How long to wait for the reviewer; then ``on_timeout`` decides.
    :param on_timeout: ``"approve_none"`` (default) or ``"approve_all"``. Under ``approve_all``
        the form's choices are pre-set to approve; otherwise nothing is pre-set and the reviewer
        chooses each item (Submit alone never rejects, and so never pays for, anything).
    :param append_comment: Whether the result task adds a comment to the prompt it generates
        again (as ``MindVideoReviewResultOperator``'s); the comment field says which.
    :param notifiers: HITL notifiers (e.g. to tell a reviewer), as for ``HITLOperator``.
    :param assigned_users: Who may respond, as for ``HITLOperator``.

    XCom: ``return_value`` is the page's answer: ``round``, ``page`` and ``decisions`` (per item:
    the item, ``approved``, ``comment``, ``decided_by``, ``decided_at``, ``timed_out``).
    It creates nothing: regenerating is the result task's, so a retried page only asks again.
    """

    ui_color = "#e8dcff"

    def __init__(
        self,
        *,
        page: Any = None,
        response_timeout: timedelta | None = None,
        on_timeout: OnTimeout = "approve_none",
        notifiers: Sequence[BaseNotifier] | BaseNotifier | None = None,
        subject: str = "Review generated media",
        append_comment: bool = True,
        **kwargs: Any,
    ) -> None:
        if on_timeout not in ON_TIMEOUT_VALUES:
            raise ValueError(f"on_timeout = {on_timeout!r}: must be one of {ON_TIMEOUT_VALUES}")
        # One option: the per-item choices are form fields. It is also the default, so that a
        # timeout resumes with the fields' pre-set values (on_timeout) on every Airflow version.
        super().__init__(
            subject=subject,
            options=[SUBMIT],
            defaults=[SUBMIT],
            multiple=False,
            notifiers=notifiers,
            response_timeout=response_timeout,
            **kwargs,
        )
        self.page = page
        self.on_timeout: OnTimeout = on_timeout
        self.append_comment = append_comment

    def execute(self, context: Context) -> Any:
        page = self.page
        if not isinstance(page, Mapping) or not isinstance(page.get("items"), list):
            raise InputValidationError(
                f"review: page must be one of the pages review_rounds computes, got {type(page).__name__}"
            )
        items = [ReviewItem.from_xcom(item) for item in page["items"]]
        context["ti"].xcom_push(key=XCOM_REVIEW_PAGE_KEY, value=dict(page))
        self.body = review_body(
            items,
            round=page["round"],
            max_rounds=page["max_rounds"],
            page=page["page"],
            pages=page["pages"],
            intro=self.body,
        )
        self.params = self._form(items)
        self.log.info("Round %d, page %d of %d: %d item(s)", page["round"], page["page"], page["pages"], len(items))
        return super().execute(context)

    def _form(self, items: Sequence[ReviewItem]) -> Any:
        from airflow.sdk.definitions.param import ParamsDict

        return ParamsDict(
            {
                name: Param(spec.pop("default"), **spec)
                for name, spec in review_params(items, self.on_timeout, self.append_comment).items()
            }
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        ti = context["ti"]
        page = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_REVIEW_PAGE_KEY, map_indexes=ti.map_index)
        items = [ReviewItem.from_xcom(item) for item in page["items"]]
        decisions = self.decisions(event, items)
        return {"round": page["round"], "page": page["page"], "decisions": [d.to_xcom() for d in decisions]}

    def decisions(self, event: dict[str, Any], items: Sequence[ReviewItem]) -> list[Decision]:
        """The reviewer's decisions; a timeout without an answer decides as ``on_timeout`` says."""
        if event.get("error_type") == "timeout":
            approve = APPROVE if self.on_timeout == "approve_all" else REJECT
            self.log.warning("No review within the response timeout: %s", self.on_timeout.replace("_", " "))
            return decisions_from_response(
                items,
                {decision_field(item): approve for item in items},
                decided_by=None,
                decided_at=datetime.now(UTC).isoformat(),
                timed_out=True,
            )
        # The form's values may differ from the fields the operator was parsed with (they are
        # built from the items at run time): only the chosen option is checked here.
        if "error" in event:
            self.process_trigger_event_error(event)
        self.validate_chosen_options(event["chosen_options"])
        responded_at = event.get("responded_at")
        timed_out = bool(event.get("timedout")) or event.get("responded_by_user") is None
        decided_by = responder_name(event.get("responded_by_user"))
        decisions = decisions_from_response(
            items,
            event.get("params_input") or {},
            decided_by=decided_by,
            decided_at=responded_at.isoformat() if isinstance(responded_at, datetime) else responded_at,
            timed_out=timed_out,
        )
        self.log.info(
            "%s approved %d and rejected %d item(s)%s",
            decided_by or "Nobody (timeout defaults)",
            sum(d.approved for d in decisions),
            sum(not d.approved for d in decisions),
            f" at {responded_at}" if responded_at else "",
        )
        return decisions


def review_rounds(
    *, task_id: str = "review", max_rounds: int = 1, page_size: int = DEFAULT_PAGE_SIZE, **kwargs: Any
) -> list[Any]:
    """The tasks of a review of ``max_rounds`` rounds, in order; downstream tasks read the last one's output.

    ``<task_id>_items`` finds the items (``generate_task_id`` + ``inputs``, or ``batch_manifest``,
    see :class:`MindVideoReviewItemsOperator`) and splits them into pages of ``page_size``. Per
    round: the pages (``<task_id>``, then ``<task_id>_round_<n>``; mapped, a task instance per
    page, computed at run time), and the round's result (``..._result``, see
    :class:`MindVideoReviewResultOperator`), which merges the pages' decisions and generates the
    rejected again for the next round. A round with nothing left to review asks nothing.

    Keyword arguments go to the step they belong to (sources, page, result); any other (e.g.
    ``retries``, ``pool``) to every task, but a page never retries: a retry would ask again.
    """
    if isinstance(max_rounds, bool) or max_rounds < 1:
        raise ValueError(f"max_rounds = {max_rounds!r}: must be a whole number >= 1")
    if isinstance(page_size, bool) or page_size < 1:
        raise ValueError(f"page_size = {page_size!r}: must be a whole number >= 1")
    source = {name: value for name, value in kwargs.items() if name in _SOURCE_ARGS}
    page = {name: value for name, value in kwargs.items() if name in _PAGE_ARGS}
    result = {name: value for name, value in kwargs.items() if name in _RESULT_ARGS}
    common = {name: value for name, value in kwargs.items() if name not in (*_SOURCE_ARGS, *_PAGE_ARGS, *_RESULT_ARGS)}
    page_common = {**common, "retries": 0}
    previous: Any = MindVideoReviewItemsOperator(
        task_id=f"{task_id}_items", max_rounds=max_rounds, page_size=page_size, **source, **common
    )
    tasks: list[Any] = [previous]
    for number in range(1, max_rounds + 1):
        name = task_id if number == 1 else f"{task_id}_round_{number}"
        pages = MindVideoReviewOperator.partial(task_id=name, **page, **page_common).expand(page=previous.output)
        merged = MindVideoReviewResultOperator(
            task_id=f"{name}_result",
            previous=XComArg(previous, key=XCOM_REVIEW_STATE_KEY),
            review_task_id=name,
            page_size=page_size,
            **result,
            **common,
        )
        pages >> merged
        tasks += [pages, merged]
        previous = merged
    return tasks

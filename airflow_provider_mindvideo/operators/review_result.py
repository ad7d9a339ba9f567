"""The result of a review round: its pages' decisions merged, the rejected generated again within ``max_cost``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_mindvideo import DEFAULT_CONN_ID
from airflow_provider_mindvideo.client.errors import InputValidationError, MindVideoError
from airflow_provider_mindvideo.client.polling import next_poll_delay
from airflow_provider_mindvideo.operators.generate import settle_in
from airflow_provider_mindvideo.operators.review_steps import XCOM_REVIEW_STATE_KEY, as_list
from airflow_provider_mindvideo.review.items import (
    Decision,
    ReviewState,
    decisions_of_pages,
    manifest_row,
    regenerated_item,
    regeneration_input,
    regeneration_key,
    regeneration_problems,
    review_pages,
)
from airflow_provider_mindvideo.review.page import DEFAULT_PAGE_SIZE
from airflow_provider_mindvideo.spend.arguments import check_budget_arguments
from airflow_provider_mindvideo.spend.ceiling import Budget, Charge
from airflow_provider_mindvideo.spend.records import BudgetRefusal, CreateRecord

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mindvideo.client.models import MindVideoTask
    from airflow_provider_mindvideo.hooks import MindVideoHook

#: XCom key of the review manifest: one row per decision, with who decided and when.
XCOM_REVIEW_MANIFEST_KEY = "mindvideo_review_manifest"


class MindVideoReviewResultOperator(BaseOperator):
    """Merge a round's pages into one result and manifest; generate the rejected again for the next round.

    Runs when the round's pages are done (``trigger_rule="none_failed"``: also when the round had
    no page, then passing the previous state on).

    :param previous: The previous step's state (its ``mindvideo_review`` XCom: the items step's, or
        the previous round's result's).
    :param review_task_id: The round's (mapped) page task.
    :param regenerate_rejected: Generate each rejected item again -- one new MindVideo task
        each, the next generation of the key that made it; nothing for the approved -- for the
        next round (not after the last round).
    :param append_comment: Append the reviewer's comment to the prompt of the new generation
        (default ``True``: a reviewer who writes "too dark" expects the next image to hear it).
    :param max_cost: The most that regenerations may cost across all rounds (see
        :class:`~airflow_provider_mindvideo.spend.ceiling.Budget`: predicted from the highest of the
        items' recorded costs and the model's price, and held before each create; while no
        regeneration of a model has ended with its ``cost_actual``, the model's next one waits for
        it). A rejected item that could pass it is not generated again, and the manifest says why.
    :param budget: A budget of the connection's ``budgets`` extra the regenerations count against,
        besides the account's (see :doc:`/spend`). Each regeneration is reserved in the spend ledger
        first; one a budget window refuses is not generated again, and the manifest says why.
    :param download_to: Save regenerated outputs into this folder (an ``ObjectStoragePath``
        URL), so that approved items of later rounds have files too. (templated)
    :param download_conn_id: The storage connection for ``download_to``.
    :param download_allow_private_urls: As :class:`MindVideoDownloadOperator`'s ``allow_private_urls``.
    :param regeneration_timeout: Seconds to wait for the regenerated outputs.
    :param page_size: The most items one page of the next round shows.

    XCom: ``mindvideo_review`` is the review's state: ``approved`` / ``rejected`` / ``pending``
    items, ``approved_files``, ``approved_urls``, ``approved_task_ids``, ``spent`` and the
    ``manifest`` (one row per decision: item, decision, comment, ``decided_by``, ``decided_at``,
    ``timed_out``, ``regenerated_as``, ``note``); ``mindvideo_review_manifest`` holds the
    manifest alone. ``return_value`` is the state after the last round, else the next round's
    pages (the next page task maps over them).
    """

    template_fields: Sequence[str] = ("previous", "download_to", "mindvideo_conn_id")
    ui_color = "#e8dcff"

    def __init__(
        self,
        *,
        previous: Any,
        review_task_id: str,
        regenerate_rejected: bool = False,
        append_comment: bool = True,
        max_cost: float | None = None,
        budget: str | None = None,
        download_to: str | None = None,
        download_conn_id: str | None = None,
        download_allow_private_urls: bool | None = None,
        regeneration_timeout: float = 3600.0,
        poll_interval: float = 2.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        mindvideo_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "none_failed")
        super().__init__(**kwargs)
        Budget(max_cost)  # refuses a bad ceiling when the DAG is parsed
        check_budget_arguments(budget, "fail")
        self.budget = budget
        self.previous = previous
        self.review_task_id = review_task_id
        self.regenerate_rejected = regenerate_rejected
        self.append_comment = append_comment
        self.max_cost = max_cost
        self.download_to = download_to
        self.download_conn_id = download_conn_id
        self.download_allow_private_urls = download_allow_private_urls
        self.regeneration_timeout = regeneration_timeout
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.mindvideo_conn_id = mindvideo_conn_id

    @cached_property
    def hook(self) -> MindVideoHook:
        # Imported when used: a DAG file naming this operator is parsed far more often than it runs.
        from airflow_provider_mindvideo.hooks import MindVideoHook

        return MindVideoHook(self.mindvideo_conn_id)

    # The task instance whose creates the ledger's rows name (set by execute).
    _ti: Any = None

    def execute(self, context: Context) -> Any:
        ti = self._ti = context["ti"]
        previous = ReviewState.from_xcom(self.previous)
        state = ReviewState(
            round=previous.round + 1,
            max_rounds=previous.max_rounds,
            approved=previous.approved,
            rejected=previous.rejected,
            manifest=previous.manifest,
            spent=previous.spent,
        )
        shown = previous.pending
        if shown:
            pages = len(review_pages(shown, round=state.round, max_rounds=state.max_rounds, page_size=self.page_size))
            answers = as_list(ti.xcom_pull(task_ids=self.review_task_id, map_indexes=list(range(pages))))
            state = self.apply(state, decisions_of_pages(shown, answers))
        record = state.to_xcom()
        ti.xcom_push(key=XCOM_REVIEW_STATE_KEY, value=record)
        ti.xcom_push(key=XCOM_REVIEW_MANIFEST_KEY, value=record["manifest"])
        self.log.info(
            "After round %d: %d approved, %d rejected, %d generated again for the next round; regenerations cost %g",
            state.round,
            len(state.approved),
            len(state.rejected),
            len(state.pending),
            state.spent,
        )
        if state.round >= state.max_rounds:
            return record
        return review_pages(state.pending, round=state.round + 1, max_rounds=state.max_rounds, page_size=self.page_size)

    def apply(self, state: ReviewState, decisions: Sequence[Decision]) -> ReviewState:
        """Keep the approved; generate the rejected again (while rounds and ``max_cost`` allow) for the next round."""
        again = self.regenerate_rejected and state.round < state.max_rounds
        problems = regeneration_problems(decisions, self.append_comment) if again else []
        if problems:
            raise InputValidationError(
                f"review round {state.round}: {len(problems)} rejected item(s) cannot be generated again; nothing "
                "was sent:\n" + "\n".join(problems)
            )
        # Regenerations of earlier rounds are committed already: max_cost holds across rounds.
        budget = Budget(self.max_cost, committed=state.spent)
        for decision in decisions:
            # An item's own cost predicts its regeneration (same model, same input) better than the
            # catalogue's example price, which knows nothing of a video's duration or an image's size.
            budget.learn(decision.item.model, decision.item.cost)
        created: list[tuple[Decision, MindVideoTask, dict[str, Any], int, Charge]] = []
        ended: dict[str, MindVideoTask] = {}
        books = self.hook.spend_books(self.budget) if again else None  # none: nothing to count
        for decision in decisions:
            item = decision.item
            if decision.approved or not again:
                (state.approved if decision.approved else state.rejected).append(item)
                state.manifest.append(manifest_row(decision, state.round))
                continue
            reservation = budget.try_reserve(item.model)
            if reservation is None and not budget.refuses(item.model):
                # The model's price is not known yet: its first regeneration goes alone, and tells it.
                for _, task, _, _, charge in created:
                    if charge.open and charge.model == item.model:
                        ended[task.task_id] = self._ended(budget, charge, task)
                reservation = budget.try_reserve(item.model)
            if reservation is None:
                state.rejected.append(item)
                note = f"not generated again: {budget.refusal(item.model)}"
                state.manifest.append(manifest_row(decision, state.round, note=note))
                continue
            request = regeneration_input(item, decision.comment, self.append_comment)
            key, generation = regeneration_key(item)
            assert books is not None
            refusal = books.try_reserve(CreateRecord.of(self._ti, key, item.model), budget.counted(reservation))
            if isinstance(refusal, BudgetRefusal):
                budget.release(reservation)
                state.rejected.append(item)
                note = f"not generated again: {refusal.message()}"
                state.manifest.append(manifest_row(decision, state.round, note=note))
                continue
            try:
                task = self.hook.create_task(
                    item.model, request, idempotency_key=key, allow_unknown_model=bool(item.allow_unknown_model)
                )
            except MindVideoError as exc:
                if exc.http_status is not None and 400 <= exc.http_status < 500 and exc.http_status != 429:
                    budget.release(reservation)  # refused: nothing was charged
                    books.release(key)
                raise
            budget.settle(reservation, task.cost_estimate, task.cost_actual, earlier=not task.created)
            settle_in(books, key, task)
            self.log.info(
                "Item %d rejected: generating it again as MindVideo task %s (key generation %d)",
                item.number,
                task.task_id,
                generation,
            )
            created.append((decision, task, request, generation, reservation))
        for decision, task, request, generation, charge in created:
            finished = ended.get(task.task_id) or self._ended(budget, charge, task)
            assert books is not None
            settle_in(books, regeneration_key(decision.item)[0], finished)
            self._collect(state, decision, finished, request, generation)
        state.spent = budget.committed + budget.abandoned
        return state

    def _ended(self, budget: Budget, charge: Charge, task: MindVideoTask) -> MindVideoTask:
        """Wait for ``task`` to end and settle what it cost."""
        finished = self._wait(task)
        budget.finish(charge, finished.cost_estimate, finished.cost_actual, task=finished.task_id)
        return finished

    def _collect(
        self, state: ReviewState, decision: Decision, finished: MindVideoTask, request: dict[str, Any], generation: int
    ) -> None:
        from airflow_provider_mindvideo.client.models import TaskStatus

        item = decision.item
        if finished.status is not TaskStatus.SUCCEEDED or not finished.output_urls:
            state.rejected.append(item)
            note = f"generating again ended {finished.reported_status}: {finished.error_message or ''}"
            state.manifest.append(manifest_row(decision, state.round, regenerated_as=finished.task_id, note=note))
            return
        state.pending.append(
            regenerated_item(
                item,
                mindvideo_task_id=finished.task_id,
                input=request,
                output_urls=finished.output_urls,
                files=self._save(finished),
                cost=finished.cost_actual if finished.cost_actual is not None else finished.cost_estimate,
                key_generation=generation,
                round=state.round + 1,
            )
        )
        state.manifest.append(manifest_row(decision, state.round, regenerated_as=finished.task_id))

    def _wait(self, task: MindVideoTask) -> MindVideoTask:
        started = time.monotonic()
        while not task.is_terminal:
            elapsed = time.monotonic() - started
            if elapsed >= self.regeneration_timeout:
                raise MindVideoError(
                    f"MindVideo task {task.task_id} (a rejected item generated again) did not finish within "
                    f"regeneration_timeout={self.regeneration_timeout:.0f} s"
                )
            time.sleep(min(next_poll_delay(elapsed, self.poll_interval, 30.0), self.regeneration_timeout - elapsed))
            task = self.hook.get_task(task.task_id)
        return task

    def _save(self, task: MindVideoTask) -> list[str]:
        if not self.download_to:
            return []
        from airflow_provider_mindvideo.operators.download import private_urls_allowed
        from airflow_provider_mindvideo.outputs.downloads import download_client, store_outputs

        folder = ObjectStoragePath(self.download_to, conn_id=self.download_conn_id)
        with download_client(allow_private_urls=private_urls_allowed(self.download_allow_private_urls)) as client:
            stored = store_outputs(client, task.output_urls, folder, mindvideo_task_id=task.task_id)
        return [file.path for file in stored]

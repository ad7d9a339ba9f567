"""MindVideoReviewOperator: a person approves or rejects generated media in the Airflow UI; rejects are made again."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import ObjectStoragePath, Param

from airflow_provider_mindvideo import DEFAULT_CONN_ID
from airflow_provider_mindvideo.downloads import XCOM_FILES_KEY, download_client, store_outputs
from airflow_provider_mindvideo.errors import InputValidationError, MindVideoError
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.models import MindVideoTask, TaskStatus
from airflow_provider_mindvideo.outcomes import XCOM_TASK_KEY
from airflow_provider_mindvideo.polling import next_poll_delay
from airflow_provider_mindvideo.review import (
    DEFAULT_PAGE_SIZE,
    ON_TIMEOUT_VALUES,
    SUBMIT,
    Decision,
    KeySource,
    OnTimeout,
    ReviewItem,
    ReviewState,
    check_page_size,
    decisions_from_response,
    items_from_batch_manifest,
    items_from_generated,
    manifest_row,
    regenerated_item,
    regeneration_input,
    regeneration_key,
    responder_name,
    review_body,
    review_params,
    within_ceiling,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.bases.notifier import BaseNotifier

#: XCom key of the round being reviewed (its items and what earlier rounds decided): it must
#: survive the wait, which resumes the task in a new process.
XCOM_REVIEW_ROUND_KEY = "mindvideo_review_round"
#: XCom key of the review manifest: one row per decision, with who decided and when.
XCOM_REVIEW_MANIFEST_KEY = "mindvideo_review_manifest"


class MindVideoReviewOperator(HITLOperator):
    """Show generated images and videos on Airflow's "Required actions" page; a person approves or rejects each.

    Each item shows its image inline (a video as a link), its prompt, model, cost and MindVideo
    task; the form below has per item a choice, approve or reject, and an optional comment. The
    images are shown by their output URL, which the reviewer's browser must be able to open.

    Where the items come from (one of):

    :param generate_task_id: A (mapped) :class:`MindVideoGenerateOperator`, or the sensor of a
        Submit + Sensor pair: its ``mindvideo_task`` records by map index. Needs ``inputs``.
    :param inputs: The inputs that task was mapped over (the prompts shown). (templated)
    :param save_task_id: The (mapped) task that saved the outputs (its ``mindvideo_files``);
        default: ``generate_task_id`` (a Generate operator with ``download_to``).
    :param key_task_id: The task whose idempotency keys made the outputs: a rejected item is
        generated again under that task instance's next key generation. Default:
        ``generate_task_id`` (for Submit + Sensor, pass the Submit task).
    :param batch_manifest: A JSONL batch manifest (rows with ``line``, ``model``, ``input``,
        ``mindvideo_task_id``, ``status``, ``cost_estimate``, ``output_urls``, ``files``,
        ``error``), as an ``ObjectStoragePath`` URL; only succeeded rows are reviewed. (templated)
    :param items: The previous review round's output (``review.output``): reviews what it
        generated again, keeping what it approved. :func:`review_rounds` wires this up.

    What happens to the rejected:

    :param regenerate_rejected: Generate each rejected item again -- one new MindVideo task
        each, under its next key generation; nothing for the approved -- for the next round.
    :param max_rounds: The most review rounds in the chain (round ``max_rounds`` rejects for good).
    :param append_comment: Append the reviewer's comment to the prompt of the new generation.
    :param max_cost: The most that regenerations may cost across all rounds (cost estimates of
        the rejected items); a rejected item that would pass it is not generated again.
    :param download_to: Save regenerated outputs into this folder (an ``ObjectStoragePath`` URL),
        so that approved items of later rounds have files too. (templated)
    :param download_conn_id: The storage connection for ``download_to``.
    :param download_allow_private_urls: As :class:`MindVideoDownloadOperator`'s ``allow_private_urls``.
    :param regeneration_timeout: Seconds to wait for the regenerated outputs.

    The wait:

    :param response_timeout: How long to wait for the reviewer; then ``on_timeout`` decides.
    :param on_timeout: ``"approve_none"`` (default) or ``"approve_all"``; also what the form's
        choices are pre-set to.
    :param notifiers: HITL notifiers (e.g. to tell a reviewer), as for ``HITLOperator``.
    :param assigned_users: Who may respond, as for ``HITLOperator``.
    :param page_size: The most items one review task shows (larger sets: split them).

    XCom: ``return_value`` is the review's state: ``approved`` / ``rejected`` / ``pending``
    items, ``approved_files``, ``approved_urls``, ``approved_task_ids``, ``spent`` and the
    ``manifest`` (one row per decision: item, decision, comment, ``decided_by``, ``decided_at``,
    ``timed_out``, ``regenerated_as``); ``mindvideo_review_manifest`` holds the manifest alone.
    """

    template_fields: Sequence[str] = (
        *HITLOperator.template_fields,
        "inputs",
        "items",
        "batch_manifest",
        "download_to",
        "mindvideo_conn_id",
    )
    ui_color = "#e8dcff"

    def __init__(
        self,
        *,
        generate_task_id: str | None = None,
        inputs: Any = None,
        save_task_id: str | None = None,
        key_task_id: str | None = None,
        batch_manifest: str | None = None,
        items: Any = None,
        regenerate_rejected: bool = False,
        max_rounds: int = 1,
        append_comment: bool = False,
        max_cost: float | None = None,
        download_to: str | None = None,
        download_conn_id: str | None = None,
        download_allow_private_urls: bool | None = None,
        regeneration_timeout: float = 3600.0,
        poll_interval: float = 2.0,
        response_timeout: timedelta | None = None,
        on_timeout: OnTimeout = "approve_none",
        notifiers: Sequence[BaseNotifier] | BaseNotifier | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        mindvideo_conn_id: str = DEFAULT_CONN_ID,
        subject: str = "Review generated media",
        **kwargs: Any,
    ) -> None:
        if sum(source is not None for source in (generate_task_id, batch_manifest, items)) != 1:
            raise ValueError("MindVideoReviewOperator needs exactly one of generate_task_id, batch_manifest, items")
        if generate_task_id is not None and inputs is None:
            raise ValueError("generate_task_id needs inputs: the list the generation was mapped over")
        if on_timeout not in ON_TIMEOUT_VALUES:
            raise ValueError(f"on_timeout = {on_timeout!r}: must be one of {ON_TIMEOUT_VALUES}")
        if isinstance(max_rounds, bool) or max_rounds < 1:
            raise ValueError(f"max_rounds = {max_rounds!r}: must be a whole number >= 1")
        if max_cost is not None and not max_cost >= 0:
            raise ValueError(f"max_cost = {max_cost!r}: must be a number >= 0, or None")
        if page_size < 1:
            raise ValueError(f"page_size = {page_size!r}: must be >= 1")
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
        self.generate_task_id = generate_task_id
        self.inputs = inputs
        self.save_task_id = save_task_id
        self.key_task_id = key_task_id
        self.batch_manifest = batch_manifest
        self.items = items
        self.regenerate_rejected = regenerate_rejected
        self.max_rounds = max_rounds
        self.append_comment = append_comment
        self.max_cost = max_cost
        self.download_to = download_to
        self.download_conn_id = download_conn_id
        self.download_allow_private_urls = download_allow_private_urls
        self.regeneration_timeout = regeneration_timeout
        self.poll_interval = poll_interval
        self.on_timeout: OnTimeout = on_timeout
        self.page_size = page_size
        self.mindvideo_conn_id = mindvideo_conn_id

    @cached_property
    def hook(self) -> MindVideoHook:
        return MindVideoHook(self.mindvideo_conn_id)

    # -- the round: what to show ----------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        state, items = self.round_items(context)
        if not items:
            self.log.info("Round %d of %d: nothing to review", state.round, state.max_rounds)
            return self._finish(context, state)
        check_page_size(items, self.page_size)
        context["ti"].xcom_push(
            key=XCOM_REVIEW_ROUND_KEY,
            value={"state": state.to_xcom(), "items": [item.to_xcom() for item in items]},
        )
        self.body = review_body(items, round=state.round, max_rounds=state.max_rounds, intro=self.body)
        self.params = self._form(items)
        self.log.info("Round %d of %d: %d item(s) to review", state.round, state.max_rounds, len(items))
        return super().execute(context)

    def _form(self, items: Sequence[ReviewItem]) -> Any:
        from airflow.sdk.definitions.param import ParamsDict

        return ParamsDict(
            {name: Param(spec.pop("default"), **spec) for name, spec in review_params(items, self.on_timeout).items()}
        )

    def round_items(self, context: Context) -> tuple[ReviewState, list[ReviewItem]]:
        """This round's state (what earlier rounds decided) and the items it shows."""
        ti = context["ti"]
        if self.items is not None:
            if not ReviewState.is_review_state(self.items):
                raise InputValidationError(
                    f"review: items must be a previous review's output (review.output), got {type(self.items).__name__}"
                )
            previous = ReviewState.from_xcom(self.items)
            state = ReviewState(
                round=previous.round + 1,
                max_rounds=self.max_rounds,
                approved=previous.approved,
                rejected=previous.rejected,
                manifest=previous.manifest,
                spent=previous.spent,
            )
            return state, previous.pending
        state = ReviewState(round=1, max_rounds=self.max_rounds)
        if self.batch_manifest is not None:
            rows = read_jsonl(self.batch_manifest)
            return state, items_from_batch_manifest(
                rows, dag_id=ti.dag_id, task_id=self.key_task_id or ti.task_id, run_id=ti.run_id
            )
        assert self.generate_task_id is not None
        inputs = list(self.inputs or [])
        indexes = list(range(len(inputs)))
        records = _as_list(ti.xcom_pull(task_ids=self.generate_task_id, key=XCOM_TASK_KEY, map_indexes=indexes))
        files = _as_list(
            ti.xcom_pull(task_ids=self.save_task_id or self.generate_task_id, key=XCOM_FILES_KEY, map_indexes=indexes)
        )
        if all(entry is None for entry in files):
            files = []  # nothing was saved
        key_task_id = self.key_task_id or self.generate_task_id
        return state, items_from_generated(
            inputs, records, files or None, dag_id=ti.dag_id, task_id=key_task_id, run_id=ti.run_id
        )

    # -- the answer ---------------------------------------------------------------------------

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        ti = context["ti"]
        saved = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_REVIEW_ROUND_KEY, map_indexes=ti.map_index)
        state = ReviewState.from_xcom(saved["state"])
        items = [ReviewItem.from_xcom(item) for item in saved["items"]]
        decisions = self.decisions(context, event, items)
        return self._finish(context, self.apply(context, state, decisions))

    def decisions(self, context: Context, event: dict[str, Any], items: Sequence[ReviewItem]) -> list[Decision]:
        """The reviewer's decisions; a timeout without an answer decides as ``on_timeout`` says."""
        if event.get("error_type") == "timeout":
            approve = "approve" if self.on_timeout == "approve_all" else "reject"
            self.log.warning("No review within the response timeout: %s", self.on_timeout.replace("_", " "))
            return decisions_from_response(
                items,
                {f"item_{item.number}": approve for item in items},
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

    def apply(self, context: Context, state: ReviewState, decisions: Sequence[Decision]) -> ReviewState:
        """Keep the approved; generate the rejected again (while rounds and the ceiling allow) for the next round."""
        again = self.regenerate_rejected and state.round < state.max_rounds
        created: list[tuple[Decision, MindVideoTask, dict[str, Any], int]] = []
        for decision in decisions:
            item = decision.item
            if decision.approved:
                state.approved.append(item)
                state.manifest.append(manifest_row(decision, state.round))
                continue
            if not again:
                state.rejected.append(item)
                state.manifest.append(manifest_row(decision, state.round))
                continue
            if not within_ceiling(state.spent, item.cost, self.max_cost):
                state.rejected.append(item)
                state.manifest.append(
                    manifest_row(decision, state.round, note=f"not generated again: max_cost={self.max_cost}")
                )
                continue
            request = regeneration_input(item, decision.comment, self.append_comment)
            key, generation = regeneration_key(item, self._own_key_source(context, item))
            task = self.hook.create_task(item.model, request, idempotency_key=key)
            self.log.info(
                "Item %d rejected: generating it again as MindVideo task %s (key generation %d)",
                item.number,
                task.task_id,
                generation,
            )
            state.spent += task.cost_estimate if task.cost_estimate is not None else (item.cost or 0.0)
            created.append((decision, task, request, generation))
        for decision, task, request, generation in created:
            finished = self._wait(task)
            item = decision.item
            if finished.status is not TaskStatus.SUCCEEDED or not finished.output_urls:
                state.rejected.append(item)
                state.manifest.append(
                    manifest_row(
                        decision,
                        state.round,
                        regenerated_as=finished.task_id,
                        note=f"generating again ended {finished.reported_status}: {finished.error_message or ''}",
                    )
                )
                continue
            files = self._save(finished)
            state.pending.append(
                regenerated_item(
                    item,
                    mindvideo_task_id=finished.task_id,
                    input=request,
                    output_urls=finished.output_urls,
                    files=files,
                    cost=finished.cost_actual if finished.cost_actual is not None else finished.cost_estimate,
                    key_generation=generation,
                    round=state.round + 1,
                )
            )
            state.manifest.append(manifest_row(decision, state.round, regenerated_as=finished.task_id))
        return state

    def _own_key_source(self, context: Context, item: ReviewItem) -> KeySource:
        ti = context["ti"]
        return KeySource(ti.dag_id, ti.task_id, ti.run_id, item.number)

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
        from airflow_provider_mindvideo.operators import private_urls_allowed

        folder = ObjectStoragePath(self.download_to, conn_id=self.download_conn_id)
        with download_client(allow_private_urls=private_urls_allowed(self.download_allow_private_urls)) as client:
            stored = store_outputs(client, task.output_urls, folder, mindvideo_task_id=task.task_id)
        return [file.path for file in stored]

    def _finish(self, context: Context, state: ReviewState) -> dict[str, Any]:
        record = state.to_xcom()
        context["ti"].xcom_push(key=XCOM_REVIEW_MANIFEST_KEY, value=record["manifest"])
        self.log.info(
            "After round %d: %d approved, %d rejected, %d generated again for the next round; regenerations cost %g",
            state.round,
            len(state.approved),
            len(state.rejected),
            len(state.pending),
            state.spent,
        )
        return record


def review_rounds(*, task_id: str = "review", max_rounds: int = 1, **kwargs: Any) -> list[MindVideoReviewOperator]:
    """A chain of ``max_rounds`` review tasks: each reviews what the one before generated again.

    The first takes the sources (``generate_task_id`` + ``inputs``, or ``batch_manifest``); the
    others are ``<task_id>_round_<n>``. A round with nothing left to review returns at once.
    Downstream tasks read the last one's output.
    """
    rounds = [MindVideoReviewOperator(task_id=task_id, max_rounds=max_rounds, **kwargs)]
    later = {
        name: value
        for name, value in kwargs.items()
        if name not in ("generate_task_id", "inputs", "save_task_id", "key_task_id", "batch_manifest")
    }
    for number in range(2, max_rounds + 1):
        rounds.append(
            MindVideoReviewOperator(
                task_id=f"{task_id}_round_{number}", max_rounds=max_rounds, items=rounds[-1].output, **later
            )
        )
    return rounds


def read_jsonl(location: str) -> list[dict[str, Any]]:
    """The rows of a JSONL file (a local path or an ``ObjectStoragePath`` URL)."""
    path = ObjectStoragePath(location)
    rows = []
    with path.open("r") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputValidationError(f"review: {location} line {number} is not JSON: {exc.msg}") from None
            if not isinstance(row, Mapping):
                raise InputValidationError(f"review: {location} line {number} is not a JSON object")
            rows.append(dict(row))
    return rows


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]

"""Typed records of what the MindVideo API returns. Pure data: no I/O, no Airflow state."""

from __future__ import annotations

import enum
import json
import logging
import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger(__name__)

#: The most of any text a server sends that goes into an error, a log line or a trigger event: a
#: hostile or broken server must not fill task logs and the metadata database.
SERVER_TEXT_LIMIT = 2000
#: The most JSON one task leaves where the provider stores it -- its trigger event, its XComs, its
#: batch manifest row -- whatever the server sent (see :meth:`MindVideoTask.within_stored_limit`).
STORED_ANSWER_LIMIT = 64 * 1024
_NAMED_LIMIT = f"cut at {STORED_ANSWER_LIMIT // 1024} KiB (STORED_ANSWER_LIMIT)"
# Room for the provider's own words around a task where it is stored (an event's message, ids).
_ROOM = 1024
# An answer this small is never measured: stored, each part of it appears at most four times,
# and escaping for storage makes no byte of it more than seven characters. Every normal poll
# answer (well under a kilobyte) takes this way.
_SURELY_FITS = (STORED_ANSWER_LIMIT - _ROOM) // 32


def clip(text: str, limit: int = SERVER_TEXT_LIMIT) -> str:
    """``text``, cut to ``limit`` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class AnswerTooLargeError(ValueError):
    """A task's answer does not fit ``STORED_ANSWER_LIMIT`` even with everything but its output URLs cut."""


def error_words(error: Any) -> str | None:
    """A remote error in words (capped), whatever shape the API gave it."""
    if error is None or error == "":
        return None
    if isinstance(error, dict):
        for key in ("message", "detail", "error", "code"):
            if error.get(key):
                return clip(str(error[key]))
    return clip(str(error))


def _json_size(value: Any) -> float:
    try:
        return len(json.dumps(value, default=str))
    except (ValueError, RecursionError):
        return float("inf")


def _urls_only(output: dict[str, Any] | None) -> dict[str, Any] | None:
    """``output`` with only its URLs, each item as the API shapes it (``{"url": ...}`` or the URL)."""
    if output is None:
        return None
    kept: dict[str, Any] = {}
    for media, items in output.items():
        urls = [
            {"url": item["url"]} if isinstance(item, dict) else item
            for item in (items if isinstance(items, list) else [items])
            if (isinstance(item, dict) and isinstance(item.get("url"), str) and item["url"])
            or (isinstance(item, str) and item)
        ]
        if urls:
            kept[media] = urls if isinstance(items, list) else urls[0]
    return kept


# A plain amount as text ("0.5"); anything else in a cost string ("0.50 USD", "1e5") is no amount.
_PLAIN_NUMBER = re.compile(r"\s*(\d+(\.\d*)?|\.\d+)\s*")


def readable_cost(value: object) -> float | None:
    """A cost as the server sent it, as a number; None (unknown) unless it is a finite number >= 0.

    A plain numeric string (``"0.5"``) is read as its number; ``"0.50 USD"``, ``"NaN"``, bools,
    negative and infinite numbers are unknown.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) > 64 or not _PLAIN_NUMBER.fullmatch(value):
            return None
        value = float(value)
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return number if math.isfinite(number) and number >= 0 else None


class TaskStatus(str, enum.Enum):
    """The normalized status of a MindVideo task."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: A status the API added after this provider was released. Not terminal: keep waiting.
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @classmethod
    def _missing_(cls, value: object) -> TaskStatus:
        return cls.UNKNOWN


_TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class _ApiRecord(BaseModel):
    # Fields the API adds later are kept, not rejected: a new field must never break a DAG.
    model_config = ConfigDict(extra="allow", frozen=True)


class MindVideoTask(_ApiRecord):
    """A MindVideo generation task, as returned by create and get."""

    task_id: str = Field(min_length=1)
    request_id: str | None = None
    status: TaskStatus
    #: The status string exactly as the API sent it (differs from ``status`` only for UNKNOWN).
    reported_status: str = ""
    cost_estimate: float | None = None
    cost_actual: float | None = None
    output: dict[str, Any] | None = None
    error: Any = None
    #: True when the create answer said this call made the task (HTTP 201); None when it could
    #: have been a replay. Never part of a dump: it describes one answer, not the task.
    created: bool | None = Field(default=None, exclude=True)
    #: What the provider left out of the server's answer to store it, naming the limit (None: nothing).
    cut: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _keep_reported_status(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("status"), str) and "reported_status" not in data:
            data = {**data, "reported_status": clip(data["status"], 100)}
        return data

    @model_validator(mode="before")
    @classmethod
    def _costs_as_numbers(cls, data: Any) -> Any:
        # A cost the server sends is a fact about money, not the task's shape: one that is no
        # readable amount is unknown (the ceiling then counts the highest bound it knows), and
        # never makes the task unreadable -- an unreadable task would be polled to its deadline.
        if not isinstance(data, dict):
            return data
        costs = {}
        for name in ("cost_estimate", "cost_actual"):
            value = data.get(name)
            if (
                value is None
                or (type(value) is float and 0 <= value < math.inf)
                or (type(value) is int and 0 <= value < 2**53)
            ):
                continue  # what every answer of a sound server holds: no more work on the poll path
            cost = readable_cost(value)
            if cost is None:
                _warn_unreadable_cost(name, value, data.get("model"))
            costs[name] = cost
        return {**data, **costs} if costs else data

    @field_validator("task_id", mode="before")
    @classmethod
    def _task_id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("request_id", mode="before")
    @classmethod
    def _request_id_or_nothing(cls, value: Any) -> Any:
        # Only a label for support: one that is no text (a list, an object) is unknown, never a reason
        # to call the whole answer unusable -- a create answered so every time would time its item out.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value if value is None or isinstance(value, str) else None

    @field_validator("request_id", "reported_status")
    @classmethod
    def _short(cls, value: str | None) -> str | None:
        return value if value is None else clip(value, 100)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def output_urls(self) -> list[str]:
        """Every output URL in order, whatever the media key (``images``, ``videos``, ...)."""
        urls: list[str] = []
        for items in (self.output or {}).values():
            for item in items if isinstance(items, list) else [items]:
                url = item.get("url") if isinstance(item, dict) else item
                if isinstance(url, str) and url:
                    urls.append(url)
        return urls

    @property
    def error_message(self) -> str | None:
        """The remote error in words, whatever shape the API gave it."""
        return error_words(self.error)

    def summary(self) -> dict[str, Any]:
        """A small JSON-safe record for XCom and logs: never the input, never a secret."""
        record: dict[str, Any] = {
            "task_id": self.task_id,
            "request_id": self.request_id,
            "status": self.reported_status or self.status.value,
            "cost_estimate": self.cost_estimate,
        }
        if self.is_terminal:
            record["cost_actual"] = self.cost_actual
            record["output"] = self.output
            record["output_urls"] = self.output_urls
            if self.error_message:
                record["error"] = self.error_message
        if self.cut:
            record["cut"] = self.cut
        return record

    def within_stored_limit(self, size: int) -> MindVideoTask:
        """This task as the provider may store it: within ``STORED_ANSWER_LIMIT``, whatever the server sent.

        Beyond the limit the answer loses, in this order and only as far as needed, its fields
        this provider does not know, its error's details (its words stay), and its output's
        fields other than the URLs; :attr:`cut` says what went. Output URLs are never cut: an
        answer whose URLs alone do not fit raises :class:`AnswerTooLargeError`.

        :param size: the bytes the answer took (small answers are not measured).
        """
        if size <= _SURELY_FITS or self._stored_size() <= STORED_ANSWER_LIMIT:
            return self
        task, cut = self, []
        for what, smaller in _CUTS:
            fields = smaller(task)
            if fields is not None:
                task = MindVideoTask.model_validate(fields)
                cut.append(what)
                if task._stored_size() <= STORED_ANSWER_LIMIT:
                    return task.model_copy(update={"cut": f"{_NAMED_LIMIT}: {', '.join(cut)} ({size:,} bytes sent)"})
        raise AnswerTooLargeError(
            f"MindVideo task {clip(task.task_id, 100)}: its answer ({size:,} bytes) does not fit what the provider "
            f"stores of one task even with everything but its {len(task.output_urls)} output URL(s) {_NAMED_LIMIT}"
        )

    def _stored_size(self) -> float:
        # The largest record a task is stored as: its fields, its output URLs again (the XCom record,
        # a manifest row), the task id and error words an event repeats; and what it holds unstored
        # (unknown fields, the error's details), which a task over the limit does not keep either.
        record = self.model_dump(mode="json", include=set(type(self).model_fields))
        words = self.error_message
        parts = (record, self.model_extra, self.output_urls, self.task_id, words, words)
        return sum(_json_size(part) for part in parts) + _ROOM

    def _fields(self, **changes: Any) -> dict[str, Any]:
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return {**fields, **changes}


def _without_unknown_fields(task: MindVideoTask) -> dict[str, Any] | None:
    return task._fields() if task.model_extra else None


def _with_urls_only(task: MindVideoTask) -> dict[str, Any] | None:
    output = _urls_only(task.output)
    return task._fields(output=output) if output != task.output else None


def _with_error_words(task: MindVideoTask) -> dict[str, Any] | None:
    words = task.error_message
    return task._fields(error=words) if words != task.error else None


# What an answer over the limit loses, in order: what is never stored, then all but the URLs.
_CUTS = (
    ("its fields this provider does not know", _without_unknown_fields),
    ("its error's details (its words stay)", _with_error_words),
    ("its output's fields other than the URLs", _with_urls_only),
)


_warned_about: set[tuple[str, str]] = set()
_WARNINGS_KEPT = 1000


def _warn_unreadable_cost(name: str, value: Any, model: Any) -> None:
    """Once per field and model (per process): a server sending ``"0.50 USD"`` sends it on every poll."""
    seen = (name, clip(str(model), 100))
    if seen in _warned_about:
        return
    if len(_warned_about) < _WARNINGS_KEPT:  # a server naming a new model on every answer fills no memory
        _warned_about.add(seen)
    log.warning(
        "MindVideo sent %s = %s for a task of model %s: no readable amount (a finite number >= 0); "
        "the cost is taken as unknown, and max_cost counts the highest price known for the model",
        name,
        clip(repr(value), 100),
        seen[1],
    )


class TaskEvent(_ApiRecord):
    """One entry of a task's event log. The format is not documented: every field is optional."""

    type: str | None = None
    status: str | None = None
    message: str | None = None
    created_at: str | None = None

    def describe(self) -> str:
        parts = [p for p in (self.created_at, self.type or self.status, self.message) if p]
        return clip(" ".join(parts) or self.model_dump_json(), 500)

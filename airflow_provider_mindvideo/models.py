"""Typed records of what the MindVideo API returns. Pure data: no I/O, no Airflow state."""

from __future__ import annotations

import enum
import logging
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger(__name__)

#: The most of any text a server sends that goes into an error, a log line or a trigger event: a
#: hostile or broken server must not fill task logs and the metadata database.
SERVER_TEXT_LIMIT = 2000


def clip(text: str, limit: int = SERVER_TEXT_LIMIT) -> str:
    """``text``, cut to ``limit`` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


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
            from airflow_provider_mindvideo.budget import readable_cost  # budget imports Airflow's errors

            cost = readable_cost(value)
            if cost is None:
                _warn_unreadable_cost(name, value, data.get("model"))
            costs[name] = cost
        return {**data, **costs} if costs else data

    @field_validator("task_id", "request_id", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

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
        if self.error is None or self.error == "":
            return None
        if isinstance(self.error, dict):
            for key in ("message", "detail", "error", "code"):
                if self.error.get(key):
                    return clip(str(self.error[key]))
        return clip(str(self.error))

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
        return record


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

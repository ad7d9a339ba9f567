"""A batch of generations in one task instance: its work list, keys, manifest rows and summary. Pure, no I/O.

The batch operator turns its inputs into a **work list** (:func:`work_list`): one
:class:`WorkItem` per input, with the line it came from, its model, its input and the stem of
its idempotency keys. The batch trigger reads it, and for every item writes one **manifest
row** (:class:`ItemResult`); the **summary** (:class:`BatchSummary`) counts them, and
:func:`too_many_failed` judges it against ``max_failed``.

Inputs are model inputs (``{"prompt": "...", "size": "16:9"}``). An item may name its own
model: a top-level ``"model"`` key (no MindVideo model has an input field of that name), or the
form ``{"model": "...", "input": {...}}``. In a CSV file each row is one input: the header
names the fields, a ``model`` column names the item's model, an empty cell leaves its field out,
and a cell of a field the model's schema types as a number, boolean, array or object is read
as JSON (``1``, ``true``, ``["https://..."]``).

An item's keys derive from the task instance, the item's position and its content (see
:func:`airflow_provider_mindvideo.client.idempotency.key_stem`): a retry, a clear or a restarted
triggerer sends the same keys and MindVideo answers with the tasks already created, free. The
generation suffix is walked as for a single task (:mod:`airflow_provider_mindvideo.client.submission`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_mindvideo.client import jsonl
from airflow_provider_mindvideo.client.catalog import input_problems, known_models, unknown_model_problem
from airflow_provider_mindvideo.client.errors import CorruptRecordError, InputValidationError
from airflow_provider_mindvideo.client.idempotency import TaskInstanceLike, key_of_generation, key_stem

#: Outcomes of an item, the ``status`` of its manifest row.
SUCCEEDED = "succeeded"
#: Its remote task ended failed or cancelled (or succeeded without any output).
FAILED = "failed"
#: Not created: it could have passed ``max_cost``. Nothing was charged for it.
OVER_BUDGET = "over_budget"
#: Its remote task did not finish before the batch's ``timeout`` (the next try waits for it again).
TIMED_OUT = "timed_out"
#: The API refused or kept failing its requests (after the hook's own retries).
ERROR = "error"
#: It succeeded, but saving its outputs (``download_to``) failed.
DOWNLOAD_FAILED = "download_failed"
OUTCOMES = (SUCCEEDED, FAILED, OVER_BUDGET, TIMED_OUT, ERROR, DOWNLOAD_FAILED)
#: Not finished yet: only in the manifest a running batch checkpoints.
PENDING = "pending"

_MODEL, _INPUT = "model", "input"
# Schema types whose CSV cells are JSON text rather than plain text.
_JSON_TYPES = frozenset({"integer", "number", "boolean", "array", "object"})
_PREVIEW_CHARS = 80


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One generation of a batch, as the trigger needs it."""

    #: Its place in the work list (0-based): part of its keys.
    position: int
    #: Where it came from, for people: the line of the inputs file (CSV: the row's line, the
    #: header being line 1), or the item's number (from 1) in an ``inputs`` list.
    line: int
    model: str
    input: Mapping[str, Any]
    #: Its keys without the generation suffix.
    key_stem: str = ""

    def key(self, generation: int) -> str:
        return key_of_generation(self.key_stem, generation)

    def to_json(self) -> str:
        data = {"position": self.position, "line": self.line, "model": self.model, "input": self.input}
        return jsonl.dump_line({**data, "key": self.key_stem})

    @classmethod
    def from_json(cls, text: str) -> WorkItem:
        return cls.from_row(json.loads(text))

    @classmethod
    def from_row(cls, data: Mapping[str, Any]) -> WorkItem:
        return cls(data["position"], data["line"], data["model"], data["input"], data["key"])


@dataclass(frozen=True)
class Entry:
    """An input as read, before it is checked: where it came from and what it says."""

    line: int
    value: Any


def entries_from_list(inputs: Any) -> list[Entry]:
    """The entries of an ``inputs`` list (numbered from 1)."""
    if isinstance(inputs, str | bytes) or not isinstance(inputs, Sequence):
        raise InputValidationError(
            f"inputs = {_preview(inputs)}: must be a list of model inputs (or an XComArg giving one)"
        )
    return [Entry(number, value) for number, value in enumerate(inputs, 1)]


def entries_from_jsonl(text: str) -> list[Entry]:
    """One entry per non-blank line; a line that is not JSON becomes a problem naming it.

    A file cut short shows as its last line not being JSON: named like any other, nothing is
    sent (the inputs are the user's, no writer of ours could have torn them).
    """
    entries = []
    for line in jsonl.lines(text):
        try:
            entries.append(Entry(line.number, jsonl.load_line(line)))
        except jsonl.JsonLinesError as exc:
            entries.append(Entry(line.number, _NotJson(exc.problem)))
    return entries


def entries_from_csv(text: str, default_model: str | None) -> list[Entry]:
    """One entry per row; the header row names the fields (see the module's docstring).

    A value under a column the header names no field for is a problem naming its line and
    column (it would otherwise be lost); such a column with nothing in it is ignored.

    :raises InputValidationError: when the header names a field twice (one cell would be lost),
        or the file cannot be read as CSV (a cell past the ``csv`` module's size limit), naming
        the line and column.
    """
    # Read as utf-8-sig: spreadsheets' "CSV UTF-8" starts with a byte order mark, which would
    # otherwise become part of the first field's name.
    record: list[str] = []  # the lines of the row being read, to say where a problem is

    def lines() -> Iterator[str]:
        for line in io.StringIO(text.removeprefix("\ufeff")):
            record.append(line)
            yield line

    reader = csv.reader(lines())
    header: list[str] | None = None
    entries = []
    while True:
        record.clear()
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputValidationError(_csv_problem(exc, reader.line_num, "".join(record))) from None
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [name.strip() for name in row]
            twice = sorted(name for name, count in Counter(header).items() if name and count > 1)
            if twice:
                raise InputValidationError(
                    f"The CSV header (line {reader.line_num}) names {', '.join(map(repr, twice))} twice: "
                    "each field must have one column; nothing was sent"
                )
            continue
        # reader.line_num is the line the row ended on: a quoted cell may span lines.
        line = reader.line_num
        if len(row) > len(header):
            entries.append(Entry(line, _NotJson(f"has {len(row)} cells but the header names {len(header)} fields")))
            continue
        unnamed = [column for column, (name, cell) in enumerate(zip(header, row, strict=False), 1) if not name and cell]
        if unnamed:
            entries.append(
                Entry(line, _NotJson(f"column {unnamed[0]} holds a value but the header names no field for it"))
            )
            continue
        cells = {name: cell for name, cell in zip(header, row, strict=False) if name and cell != ""}
        model = cells.pop(_MODEL, default_model)
        entries.append(Entry(line, {_MODEL: model, _INPUT: _typed_cells(model, cells)}))
    return entries


def _csv_problem(error: csv.Error, line: int, record: str) -> str:
    limit = csv.field_size_limit()
    if "field larger than field limit" in str(error):
        return (
            f"line {line}, column {_oversized_column(record, limit)}: a cell longer than {limit:,} characters, "
            "more than the csv module reads; shorten it, or give the inputs as JSONL. Nothing was sent"
        )
    return f"line {line}: not CSV ({error}). Nothing was sent"


def _oversized_column(record: str, limit: int) -> int:
    """The column (from 1) of the first cell of ``record`` longer than ``limit``, read as the csv module reads it."""
    column, size, quoted, index = 1, 0, False, 0
    while index < len(record):
        char = record[index]
        if char == '"' and quoted and record[index + 1 : index + 2] == '"':
            size, index = size + 1, index + 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            column, size = column + 1, 0
        else:
            size += 1
            if size > limit:
                break
        index += 1
    return column


def work_list(
    entries: Iterable[Entry],
    default_model: str | None,
    ti: TaskInstanceLike,
    *,
    allow_unknown_model: bool = False,
    source: str = "inputs",
) -> list[WorkItem]:
    """Check every entry against its model's schema and give it its keys; raise naming every bad one.

    :param source: how errors name where the entries came from (``inputs``, or a file's URL).
    :raises InputValidationError: listing each invalid entry by its line, all of them, before
        anything is sent.
    """
    map_index = -1 if ti.map_index is None else ti.map_index
    items: list[WorkItem] = []
    problems: list[str] = []
    where = "item" if source == "inputs" else "line"
    for entry in entries:
        model, input, problem = _model_and_input(entry.value, default_model)
        if problem is None:
            unknown = None if allow_unknown_model else unknown_model_problem(model)
            found = [unknown] if unknown else input_problems(model, input)
            problem = "; ".join(found) if found else None
        if problem is not None:
            problems.append(f"{where} {entry.line}: {problem}")
            continue
        position = len(items)
        stem = key_stem(ti.dag_id, ti.task_id, ti.run_id, map_index, model, input, item=position)
        items.append(WorkItem(position, entry.line, model, input, stem))
    if problems:
        hint = (
            " (or pass allow_unknown_model=True for models newer than this provider)"
            if any("not a MindVideo model this provider knows" in p for p in problems)
            else ""
        )
        raise InputValidationError(
            f"{len(problems)} invalid item(s) in {source}; nothing was sent{hint}:\n" + "\n".join(problems)
        )
    return items


def dump_work_list(items: Iterable[WorkItem]) -> str:
    return "".join(item.to_json() + "\n" for item in items)


def load_work_list(text: str, source: str = "the work list") -> list[WorkItem]:
    """The work list the operator wrote. :raises CorruptRecordError: naming ``source`` and the line.

    The operator writes it whole or not at all (:func:`.storage.replace_text`): a torn line is
    damage from outside, not a crash of ours, and is refused like any other.
    """
    return _records(text, source, WorkItem.from_row, _WORK_LIST_REMEDY)


_WORK_LIST_REMEDY = (
    "The operator writes the work list from the inputs at the start of each try: clear the task to write it "
    "again. Nothing was sent"
)


@dataclass(slots=True)
class ItemResult:
    """One manifest row: what became of one item."""

    line: int
    position: int
    model: str
    status: str = PENDING
    task_id: str | None = None
    request_id: str | None = None
    idempotency_key: str | None = None
    key_generation: int | None = None
    cost_estimate: float | None = None
    cost_actual: float | None = None
    output_urls: list[str] = field(default_factory=list)
    #: Stored files (with ``download_to``): each ``url``, ``path``, ``bytes``, ``sha256``,
    #: ``content_type`` and ``written``.
    files: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    #: Whether a retry of the Airflow task could turn this failure into a success.
    retryable: bool = False
    #: Every remote task this item has had, or may have had, over all tries: ``generation``,
    #: ``idempotency_key``, ``task_id`` and ``cost_estimate`` (both None while a create's answer
    #: is not known: then ``held``, what was reserved for it, counts instead), ``try_number``,
    #: the try that created it, and ``model``; ``bound`` and ``price_seen``, the model's highest
    #: known price and highest ``cost_actual`` seen when it was held; once it ended, ``ended``
    #: and its ``cost_actual``. A later try (or a restarted trigger) learns the prices from them
    #: and counts every one at ``max(recorded, the model's highest price)`` before it creates anything.
    tasks: list[dict[str, Any]] = field(default_factory=list)

    def note_task(
        self,
        generation: int,
        key: str,
        task_id: str | None,
        cost_estimate: float | None,
        *,
        try_number: int,
        held: float | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        """Record a remote task this item has (or may have); returns its entry."""
        for seen in self.tasks:
            if seen["idempotency_key"] == key:
                if task_id is not None:
                    seen.update(task_id=task_id, cost_estimate=cost_estimate, held=None)
                return seen
        entry = {
            "generation": generation,
            "idempotency_key": key,
            "task_id": task_id,
            "cost_estimate": cost_estimate,
            "try_number": try_number,
            "held": held,
            "model": model or self.model,
        }
        self.tasks.append(entry)
        return entry

    def note_end(self, key: str, cost_actual: float | None) -> None:
        """The remote task under ``key`` ended, charged ``cost_actual`` (None: the server did not say)."""
        for seen in self.tasks:
            if seen["idempotency_key"] == key:
                seen.update(ended=True, cost_actual=cost_actual)
                return

    @classmethod
    def for_item(cls, item: WorkItem) -> ItemResult:
        return cls(line=item.line, position=item.position, model=item.model)

    def to_json(self) -> str:
        # The fields as they are: json.dumps walks the lists and dicts itself, asdict would copy them first.
        data = {name: getattr(self, name) for name in _ROW_FIELDS}
        return jsonl.dump_line(data)

    @classmethod
    def from_json(cls, text: str) -> ItemResult:
        return cls.from_row(json.loads(text))

    @classmethod
    def from_row(cls, data: Mapping[str, Any]) -> ItemResult:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def known_tasks(rows: Iterable[ItemResult]) -> dict[str, dict[str, Any]]:
    """The remote tasks an earlier manifest records, by idempotency key."""
    return {task["idempotency_key"]: task for row in rows for task in row.tasks}


_ROW_FIELDS = tuple(ItemResult.__dataclass_fields__)


def dump_manifest(rows: Iterable[ItemResult]) -> str:
    return "".join(row.to_json() + "\n" for row in rows)


def manifest_chunk(rows: Iterable[ItemResult]) -> bytes:
    """Rows as manifest lines, encoded: what :func:`dump_manifest` gives, a slice at a time."""
    return "".join(row.to_json() + "\n" for row in rows).encode("utf-8")


def load_manifest(text: str, source: str = "the manifest") -> list[ItemResult]:
    """The rows of a manifest. :raises CorruptRecordError: naming ``source``, the line and what to do.

    Never tolerant of a torn line: the manifest is written whole or not at all
    (:func:`.storage.write_new`), so a damaged one was damaged from outside -- and its rows are the
    record of what earlier tries paid for, which a guess could undercount (paying past ``max_cost``).
    """
    return _records(text, source, ItemResult.from_row, _MANIFEST_REMEDY)


_MANIFEST_REMEDY = (
    "It records what earlier tries created and paid for, so nothing was sent. Restore it from a copy (e.g. the "
    "store's object versioning), or mend or remove that line and clear the task: an item whose row is gone finds "
    "its tasks again by replaying its keys (free), but tasks the replays do not reach no longer count against "
    "max_cost"
)


def _records(text: str, source: str, build: Any, remedy: str) -> list[Any]:
    """The rows of a record this provider wrote, each built by ``build``; damage is a :class:`CorruptRecordError`."""
    try:
        rows, _ = jsonl.load_objects(text)
    except jsonl.JsonLinesError as exc:
        raise CorruptRecordError(f"{source}: {exc}. {remedy}") from None
    built = []
    for number, row in rows:
        try:
            built.append(build(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRecordError(
                f"{source}: line {number} is not a row this provider wrote ({exc!r} in {jsonl.preview(row)}). {remedy}"
            ) from None
    return built


@dataclass(frozen=True)
class BatchSummary:
    """The small record a batch leaves in XCom and in its trigger event: counts, costs, where the manifest is."""

    items: int
    counts: Mapping[str, int]
    #: Sum of the cost estimates of the items' tasks (every generation this try saw, replays included).
    cost_estimate: float
    #: Sum of the actual costs the finished tasks reported.
    cost_actual: float
    manifest: str
    #: Failed items that a retry could still turn into successes.
    retryable_failures: int = 0
    max_cost: float | None = None

    @property
    def failed(self) -> int:
        return self.items - self.counts.get(SUCCEEDED, 0)

    def to_xcom(self) -> dict[str, Any]:
        return {**asdict(self), "counts": dict(self.counts), "failed": self.failed}

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> BatchSummary:
        return cls(
            items=data["items"],
            counts=dict(data["counts"]),
            cost_estimate=data["cost_estimate"],
            cost_actual=data["cost_actual"],
            manifest=data["manifest"],
            retryable_failures=data.get("retryable_failures", 0),
            max_cost=data.get("max_cost"),
        )


def summarize(
    rows: Sequence[ItemResult], manifest: str, *, max_cost: float | None = None, spent: float | None = None
) -> BatchSummary:
    """Count the rows. ``spent``: the budget's total (replayed earlier generations included), if known."""
    counts = Counter(row.status for row in rows)
    estimate = spent if spent is not None else sum(row.cost_estimate or 0.0 for row in rows)
    return BatchSummary(
        items=len(rows),
        counts={outcome: counts.get(outcome, 0) for outcome in OUTCOMES},
        cost_estimate=round(estimate, 6),
        cost_actual=round(sum(row.cost_actual or 0.0 for row in rows), 6),
        manifest=manifest,
        retryable_failures=sum(1 for row in rows if row.status != SUCCEEDED and row.retryable),
        max_cost=max_cost,
    )


def check_max_failed(max_failed: int | float) -> None:
    """Refuse a ``max_failed`` that is neither a count (>= 0) nor a fraction (0.0 to 1.0), when the DAG is parsed."""
    if isinstance(max_failed, bool) or not isinstance(max_failed, int | float):
        raise ValueError(f"max_failed = {max_failed!r}: must be a count (int >= 0) or a fraction (float 0.0-1.0)")
    if isinstance(max_failed, int) and max_failed < 0:
        raise ValueError(f"max_failed = {max_failed!r}: a count of items must be >= 0")
    if isinstance(max_failed, float) and not (0.0 <= max_failed <= 1.0):
        raise ValueError(f"max_failed = {max_failed!r}: a fraction of the items must be between 0.0 and 1.0")


def allowed_failures(max_failed: int | float, items: int) -> int:
    """How many failed items ``max_failed`` allows in a batch of ``items``: a count, or a fraction rounded down."""
    if isinstance(max_failed, float):
        return math.floor(max_failed * items + 1e-9)
    return max_failed


def too_many_failed(summary: BatchSummary, max_failed: int | float) -> bool:
    return summary.failed > allowed_failures(max_failed, summary.items)


def failure_report(rows: Sequence[ItemResult], limit: int = 20) -> str:
    """The first ``limit`` failed items, one per line, for an error message (the manifest has them all)."""
    failed = [row for row in rows if row.status != SUCCEEDED]
    lines = [
        f"line {row.line}: {row.status}" + (f" (task {row.task_id})" if row.task_id else "") + f": {row.error or '-'}"
        for row in failed[:limit]
    ]
    if len(failed) > limit:
        lines.append(f"... and {len(failed) - limit} more (see the manifest)")
    return "\n".join(lines)


def progress_line(
    *,
    total: int,
    counts: Mapping[str, int],
    in_flight: int,
    spent: float,
    max_cost: float | None,
    elapsed: float,
    saved: int | None = None,
) -> str:
    """The batch's periodic log line: done / failed / in flight / waiting, spend so far, time left.

    :param saved: items whose outputs are stored so far (with ``download_to``).
    """
    done = sum(counts.values())
    failed = done - counts.get(SUCCEEDED, 0)
    waiting = max(0, total - done - in_flight)
    ceiling = f" of max_cost {max_cost:g}" if max_cost is not None else ""
    if done and elapsed > 0 and done < total:
        left = (total - done) * elapsed / done
        eta = f"about {_duration(left)} left"
    elif done >= total:
        eta = "all done"
    else:
        eta = "time left not known yet"
    stored = f"{saved} saved; " if saved is not None else ""
    return (
        f"MindVideo batch: {done}/{total} done ({counts.get(SUCCEEDED, 0)} succeeded, {failed} failed), "
        f"{in_flight} in flight, {waiting} waiting; {stored}cost estimate so far {spent:g}{ceiling}; "
        f"{_duration(elapsed)} elapsed, {eta}"
    )


class _NotJson:
    """An entry that could not be read at all; its words are the problem."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _model_and_input(value: Any, default_model: str | None) -> tuple[str, Mapping[str, Any], str | None]:
    if isinstance(value, _NotJson):
        return "", {}, value.problem
    if not isinstance(value, Mapping):
        return "", {}, f'{_preview(value)} is not an object of input fields such as {{"prompt": "..."}}'
    model = value.get(_MODEL, default_model)
    if set(value) <= {_MODEL, _INPUT} and _INPUT in value:
        input = value[_INPUT]
        if not isinstance(input, Mapping):
            return str(model), {}, f"input = {_preview(input)}: must be an object of input fields"
    else:
        input = {name: item for name, item in value.items() if name != _MODEL}
    if not isinstance(model, str) or not model.strip():
        return (
            "",
            input,
            (
                f"model = {_preview(model)}: must be a MindVideo model slug such as 'gpt-image-2' "
                "(the operator's model, or the item's own)"
            ),
        )
    return model, dict(input), None


def _typed_cells(model: str | None, cells: Mapping[str, str]) -> dict[str, Any]:
    spec = known_models().get(model) if model else None
    properties = spec.input_schema.get("properties", {}) if spec else {}
    typed: dict[str, Any] = {}
    for name, cell in cells.items():
        kind = properties.get(name, {}).get("type")
        kinds = set(kind) if isinstance(kind, list) else {kind}
        if kinds & _JSON_TYPES and not kinds & {"string"}:
            try:
                typed[name] = json.loads(cell)
                continue
            except json.JSONDecodeError:
                pass  # kept as text: the schema check then names the field and its value
        typed[name] = cell
    return typed


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW_CHARS else f"{text[: _PREVIEW_CHARS - 15]}... ({len(text)} chars)"

"""JSON Lines, written and read the one way every file of this provider uses. Pure, no I/O.

A row is one line ended by ``"\\n"``, and only ``"\\n"`` ends a line (a ``"\\r\\n"`` file reads
the same). ``str.splitlines()`` also splits at U+2028, U+2029, U+0085 and a few control
characters, which JSON allows raw inside a string: a prompt holding one would cut its row in
two. The writer escapes those three anyway (JSON already escapes the control characters), so
that a reader that splits more eagerly -- another tool, or an older version of this provider
during an upgrade -- still reads every row whole.

A **torn** last line is one the file does not end after (no ``"\\n"``) and that is not JSON: a
writer stopped in the middle of it. Only the readers whose writer could have been stopped that
way, and for which dropping the line loses nothing that was paid, accept one (``torn_tail``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# Not escaped by json.dumps(ensure_ascii=False), yet line breaks to str.splitlines() and to
# JavaScript (U+2028, U+2029).
_LINE_BREAKS_JSON_KEEPS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}
# What JSON itself calls whitespace: a line of only these is blank.
_JSON_WHITESPACE = " \t\r"


class JsonLinesError(ValueError):
    """A line that is not what the file should hold; ``line`` counts from 1."""

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line} {problem}")


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    text: str


def dump_line(value: Any) -> str:
    """One row as its line, without the ``"\\n"``: compact, Unicode kept, line breaks escaped."""
    return escape_line_breaks(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def dump(values: Iterable[Any]) -> str:
    """Rows as a JSON Lines text, each line ended by ``"\\n"``."""
    return "".join(dump_line(value) + "\n" for value in values)


def escape_line_breaks(text: str) -> str:
    """JSON text with U+2028, U+2029 and U+0085 escaped (they can only be inside its strings)."""
    for raw, escaped in _LINE_BREAKS_JSON_KEEPS.items():
        if raw in text:
            text = text.replace(raw, escaped)
    return text


def lines(text: str) -> Iterator[Line]:
    """The non-blank lines of ``text``, numbered from 1, split at ``"\\n"`` only; a leading BOM is dropped."""
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        if line.strip(_JSON_WHITESPACE):
            yield Line(number, line)


def load_line(line: Line) -> Any:
    """The value of one line. :raises JsonLinesError: naming its number and what is wrong."""
    try:
        return json.loads(line.text)
    except json.JSONDecodeError as exc:
        raise JsonLinesError(line.number, f"is not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise JsonLinesError(line.number, "is not JSON this reader can read (nested too deeply)") from None


def load(text: str, *, torn_tail: bool = False) -> tuple[list[tuple[int, Any]], Line | None]:
    """Every row of ``text`` with its line number, and the torn last line dropped (``torn_tail``), if any.

    :param torn_tail: Accept a torn last line (see the module's docstring) and drop it.
    :raises JsonLinesError: at the first line that is not JSON -- a torn last one too, unless
        ``torn_tail`` -- saying so when it is torn.
    """
    rows: list[tuple[int, Any]] = []
    found = list(lines(text))
    for line in found:
        try:
            rows.append((line.number, load_line(line)))
        except JsonLinesError as exc:
            torn = line is found[-1] and not text.endswith("\n")
            if not torn:
                raise
            if torn_tail:
                return rows, line
            raise JsonLinesError(
                line.number, f"is cut short: the file ends in the middle of it ({exc.problem})"
            ) from None
    return rows, None


def load_objects(text: str, *, torn_tail: bool = False) -> tuple[list[tuple[int, dict[str, Any]]], Line | None]:
    """As :func:`load`, each row a JSON object. :raises JsonLinesError: also at a row that is not one."""
    rows, torn = load(text, torn_tail=torn_tail)
    for number, value in rows:
        if not isinstance(value, dict):
            raise JsonLinesError(number, f"is not a JSON object but {type(value).__name__} {preview(value)}")
    return rows, torn


def preview(value: Any) -> str:
    """A short JSON rendering of ``value`` for an error message."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text)} chars)"

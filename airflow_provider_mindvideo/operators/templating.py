"""Model inputs kept in files next to the DAG: ``input="prompts/hero.json.j2"``, rendered with Jinja, read as JSON.

The operators list these endings in ``template_ext``: Airflow then reads a field whose value
names such a file (from the DAG's folder or the DAG's ``template_searchpath``) and renders it
with the task's context. The result is JSON text, which :func:`input_from_template` reads.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_mindvideo.client.errors import InputValidationError

#: File endings that make a templated field a file to read and render.
TEMPLATE_EXT = (".json", ".json.j2")
_PREVIEW_CHARS = 80


def input_from_template(value: Any, field: str = "input") -> Any:
    """``value`` as a model input: a rendered file's (or template's) JSON text is read; anything else is kept.

    Raises :class:`InputValidationError` naming the field when the text is not one JSON object.
    """
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InputValidationError(
            f"{field} = {_preview(value)}: is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            f"a {' or '.join(TEMPLATE_EXT)} file, or a template, given as {field} must render to one JSON object"
        ) from None
    if not isinstance(parsed, dict):
        raise InputValidationError(
            f"{field} = {_preview(value)}: renders to a JSON {type(parsed).__name__}, not an object of field names "
            'and values such as {"prompt": "..."}'
        )
    return parsed


def template_error(field: str, exc: Exception) -> InputValidationError:
    """The task's error for a field whose Jinja does not render (syntax, unknown filter, undefined name)."""
    where = ""
    if name := getattr(exc, "filename", None) or getattr(exc, "name", None):
        where += f" in {name}"
    if lineno := getattr(exc, "lineno", None):
        where += f" at line {lineno}"
    return InputValidationError(
        f"{field}: its template does not render{where}: {type(exc).__name__}: {exc}. Nothing was sent; "
        "a retry would render it the same way"
    )


def _preview(text: str) -> str:
    shown = repr(text[:_PREVIEW_CHARS])
    return f"{shown}... ({len(text)} chars)" if len(text) > _PREVIEW_CHARS else shown

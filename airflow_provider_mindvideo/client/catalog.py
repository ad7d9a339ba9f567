"""The known MindVideo models and client-side input validation.

Each known model ships as ``schemas/<slug>.json``: its kind (image or video), example cost and
input JSON Schema, written from the vendor's model pages. gpt-image-2's schema is the vendor's
complete one plus the rules its field descriptions state (size values, URL forms, ``mask_url``
needs ``image_urls``), written as JSON Schema so that the emulator enforces exactly what the
client checks. The other models' pages were only partly seen: their schemas hold what was seen
and never forbid fields they do not name (``schema_complete`` is false; docs/models.md lists
what each one checks).

A model not in the catalogue is refused before anything is sent, naming the closest known
slugs: a typo would otherwise be created and charged. ``allow_unknown_model=True`` sends a model
newer than this catalogue unchecked (the API then judges its input).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from airflow_provider_mindvideo.client.errors import InputValidationError, UnknownModelError

_SURROGATE = re.compile("[\ud800-\udfff]")

_VALUE_PREVIEW_CHARS = 80


@dataclass(frozen=True)
class ModelSpec:
    """What the provider knows of one model."""

    slug: str
    title: str
    kind: str  # "image" or "video"
    cost_estimate: float
    schema_complete: bool
    input_schema: Mapping[str, Any]
    example_input: Mapping[str, Any]


@functools.cache
def known_models() -> dict[str, ModelSpec]:
    """Every model whose schema ships with the provider, by slug."""
    models = {}
    for entry in resources.files("airflow_provider_mindvideo").joinpath("schemas").iterdir():
        if entry.name.endswith(".json"):
            doc = json.loads(entry.read_text(encoding="utf-8"))
            models[doc["model"]] = ModelSpec(
                slug=doc["model"],
                title=doc["title"],
                kind=doc["kind"],
                cost_estimate=doc["cost_estimate"],
                schema_complete=doc["schema_complete"],
                input_schema=doc["input_schema"],
                example_input=doc["example_input"],
            )
    return models


@functools.cache
def _validator(slug: str) -> Any:
    import jsonschema

    schema = known_models()[slug].input_schema
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def input_problems(model: str, input: Mapping[str, Any]) -> list[str]:
    """Every rule ``input`` breaks for ``model``, in words; empty when valid.

    Does not judge whether ``model`` is known (see :func:`unknown_model_problem`): an unknown
    model's input is only checked to be JSON.
    """
    if not isinstance(model, str) or not model.strip():
        return [f"model = {_preview(model)}: must be a MindVideo model slug such as 'gpt-image-2'"]
    if not isinstance(input, Mapping):
        return [f"input = {_preview(input)}: must be a mapping of field names to values"]
    problems = _json_problems(input, "input")
    if problems or model not in known_models():
        return problems
    validator, record = _validator(model), dict(input)
    if validator.is_valid(record):  # half the work of collecting errors, for the usual valid input
        return []
    errors = sorted(validator.iter_errors(record), key=lambda e: list(e.absolute_path))
    # One message a field: a value of the wrong type is told its type ("n = '1': must be of type
    # integer", where "must be one of 1" would read as a riddle); else a field whose values are
    # listed is told the list, not again its range ("n = 2: must be one of 1", not "must be <= 1").
    typed = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    listed = {tuple(e.absolute_path) for e in errors if e.validator == "enum"} - typed
    errors = [
        e
        for e in errors
        if (tuple(e.absolute_path) in typed and e.validator == "type")
        or (tuple(e.absolute_path) in listed and e.validator == "enum")
        or tuple(e.absolute_path) not in typed | listed
    ]
    return [_describe(error, model) for error in errors]


def closest_models(model: str, limit: int = 3) -> list[str]:
    """The known slugs nearest to ``model``, best first: what a typo most likely meant."""
    wanted = model.strip().lower().replace(".", "-").replace("_", "-")
    slugs = sorted(known_models())
    if wanted in slugs:
        return [wanted]
    close = difflib.get_close_matches(wanted, slugs, n=limit, cutoff=0.75)
    # A family name ("kling") is no close match for any one slug, but names its models.
    family = [slug for slug in slugs if wanted and slug.startswith(wanted) and slug not in close]
    return (close + family)[:limit]


def unknown_model_problem(model: str) -> str | None:
    """Why ``model`` is not a known slug, naming the closest known ones; None when it is known."""
    if not isinstance(model, str) or not model.strip() or model in known_models():
        return None  # a missing slug is input_problems' to name
    suggestions = closest_models(model)
    if suggestions:
        hint = "did you mean " + " or ".join(map(repr, suggestions)) + "?"
    else:
        hint = "known models: " + ", ".join(sorted(known_models())) + "."
    return f"model = {_preview(model)}: not a MindVideo model this provider knows; {hint}"


def validate_input(model: str, input: Mapping[str, Any], *, allow_unknown_model: bool = False) -> None:
    """Raise :class:`InputValidationError` naming each field, value and rule ``input`` breaks.

    :param allow_unknown_model: Accept a slug missing from the catalogue (a model newer than
        this provider); without it, such a slug raises :class:`UnknownModelError`.
    """
    unknown = None if allow_unknown_model else unknown_model_problem(model)
    if unknown is not None:
        raise UnknownModelError(
            f"{unknown} Nothing was sent. If it is a model newer than this provider's catalogue, "
            "pass allow_unknown_model=True."
        )
    problems = input_problems(model, input)
    if problems:
        raise InputValidationError(f"Invalid input for MindVideo model {model!r}: " + "; ".join(problems))


def _json_problems(value: Any, path: str) -> list[str]:
    # Templates can render objects (dates, sets, proxies) that json.dumps would refuse later,
    # mid-request; name them now.
    if isinstance(value, Mapping):
        problems = []
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{path} key {_preview(key)}: field names must be strings")
            else:
                problems.extend(_not_utf8(key, f"{path} key {_preview(key)}"))
            problems.extend(_json_problems(item, f"{path}.{key}"))
        return problems
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in _json_problems(item, f"{path}[{i}]")]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path} = {value!r}: not a JSON number (NaN and infinities cannot be sent)"]
    if isinstance(value, str):
        return _not_utf8(value, f"{path} = {_preview(value)}")
    if value is None or isinstance(value, int | float | bool):
        return []
    return [f"{path} = {_preview(value)}: a {type(value).__name__} is not JSON (use str, number, list or dict)"]


def _not_utf8(text: str, where: str) -> list[str]:
    # A lone surrogate ("\\ud800" in a JSON file, or from Python) is valid JSON but no UTF-8:
    # neither the request body nor the work list and manifest could be written.
    found = _SURROGATE.search(text)
    if found is None:
        return []
    return [
        f"{where}: character {found.start() + 1} is a lone surrogate (U+{ord(found.group()):04X}), "
        "not text that can be sent"
    ]


def _describe(error: Any, model: str) -> str:
    field = "input" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    keyword, rule_value, schema = error.validator, error.validator_value, error.schema
    if keyword == "required":
        missing = error.message.split("'")[1]
        return f"{field}.{missing} is required"
    if keyword == "additionalProperties":
        allowed = ", ".join(sorted(schema.get("properties", {})))
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        return f"{field}.{extra[0]} is not a field of {model} (allowed: {allowed})"
    if keyword == "dependentRequired":
        (owner, needs), *_ = ((k, v) for k, v in rule_value.items() if k in error.instance)
        return f"{field}.{owner} requires {', '.join(field + '.' + n for n in needs)}"
    rule = schema.get("x-rule") if keyword == "pattern" else schema.get(f"x-rule-{keyword}")
    if rule is None:
        describe = _RULES.get(keyword)
        rule = describe(rule_value) if describe else error.message
    return f"{field} = {_preview(error.instance)}: {rule}"


_RULES: dict[str, Callable[[Any], str]] = {
    "enum": lambda allowed: f"must be one of {', '.join(map(repr, allowed))}",
    "type": lambda kind: f"must be of type {kind}",
    "minLength": lambda n: "must not be empty" if n == 1 else f"must have at least {n} characters",
    "maxLength": lambda n: f"must have at most {n} characters",
    "minItems": lambda n: f"must have at least {n} item(s)",
    "maxItems": lambda n: f"must have at most {n} items",
    "minimum": lambda n: f"must be >= {n}",
    "maximum": lambda n: f"must be <= {n}",
}


def _preview(value: Any) -> str:
    text = repr(value)
    if len(text) > _VALUE_PREVIEW_CHARS:
        return f"{text[: _VALUE_PREVIEW_CHARS - 15]}...' ({len(text)} chars)"
    return text

"""The known MindVideo models and client-side input validation.

Each known model ships as ``schemas/<slug>.json``: its kind (image or video), example cost and
input JSON Schema. gpt-image-2's schema is the vendor's complete one plus the rules its field
descriptions state (size values, URL forms, ``mask_url`` needs ``image_urls``), written as JSON
Schema so that the emulator enforces exactly what the client checks. Other models ship only what
their docs show. Unknown slugs pass through unvalidated: the platform adds models often.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from airflow_provider_mindvideo.errors import InputValidationError

_VALUE_PREVIEW_CHARS = 80


@dataclass(frozen=True)
class ModelSpec:
    """What the provider knows of one model."""

    slug: str
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
    """Every rule ``input`` breaks for ``model``, in words; empty when valid or the model is unknown."""
    if not isinstance(model, str) or not model.strip():
        return [f"model = {_preview(model)}: must be a MindVideo model slug such as 'gpt-image-2'"]
    if not isinstance(input, Mapping):
        return [f"input = {_preview(input)}: must be a mapping of field names to values"]
    problems = _json_problems(input, "input")
    if problems or model not in known_models():
        return problems
    errors = _validator(model).iter_errors(dict(input))
    return [_describe(error, model) for error in sorted(errors, key=lambda e: list(e.absolute_path))]


def validate_input(model: str, input: Mapping[str, Any]) -> None:
    """Raise :class:`InputValidationError` naming each field, value and rule ``input`` breaks."""
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
            problems.extend(_json_problems(item, f"{path}.{key}"))
        return problems
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in _json_problems(item, f"{path}[{i}]")]
    if value is None or isinstance(value, str | int | float | bool):
        return []
    return [f"{path} = {_preview(value)}: a {type(value).__name__} is not JSON (use str, number, list or dict)"]


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

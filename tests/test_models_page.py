"""docs/models.md says which models the provider knows and what it checks of each: from the catalogue."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow_provider_mindvideo.client.catalog import ModelSpec, known_models

PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"

INTRO = """\
# Models

The provider knows the models below: each ships with its input schema (from MindVideo's model
pages), and input is checked against it before anything is sent, so nothing is charged for a
request the schema refuses. **A model that is not in this list fails before any request**, with
the closest known names:

```text
UnknownModelError: model = 'gpt-image2': not a MindVideo model this provider knows; did you mean 'gpt-image-2'? ...
```

For a model newer than this list, pass `allow_unknown_model=True` to `MindVideoSubmitOperator`,
`MindVideoGenerateOperator` or `MindVideoHook.create_task` / `acreate_task`: the request is then
sent unchecked, and the API judges it. The [emulator](emulator.md) refuses unknown models too (HTTP 422, nothing
charged), so an offline DAG test catches a typo; `--extra-model SLUG=video` (or
`EmulatorConfig(extra_models=...)`) makes it accept a newer one.

## Complete and partial schemas

Only **gpt-image-2**'s schema is complete: every field and rule is checked, and a field it does
not have is refused (`input.style is not a field of gpt-image-2`). For every other model the
vendor's schema was only partly published where it was read, so its schema is **partial**: it
checks what was seen and lets every other field through to the API, which then decides. For
example `veo3-1-fast` checks only `prompt`: `{"prompt": "...", "duration": 7}` is sent as it is,
and an invalid duration is refused (or not) by MindVideo, not here.

Besides what the vendor shows, the provider checks a few things of every model: a `prompt` is
non-blank text; `n`, where the vendor's schema names it, is at least 1; `image_urls` /
`video_urls` (lists) and `image_url` / `video_url`, where the model takes them, are http(s) URLs
or base64 `data:` URIs of at most 10 MiB.

The example cost is the figure on the model's page for its example input; what you pay is the
task's `cost_actual`.
"""


def rule_words(name: str, rule: dict[str, Any]) -> str:
    """One property's rules in a few words."""
    if rule.get("x-rule"):
        words = "non-blank text" if name == "prompt" else rule["x-rule"].removeprefix("must be ")
    elif rule.get("type") == "array" and "x-rule" in rule.get("items", {}):
        words = "list of http(s) URLs or data: URIs" + (f", at most {rule['maxItems']}" if "maxItems" in rule else "")
    elif "enum" in rule:
        words = "one of " + ", ".join(map(str, rule["enum"]))
    else:
        bounds = [
            f">= {rule['minimum']}" if "minimum" in rule else "",
            f"<= {rule['maximum']}" if "maximum" in rule else "",
        ]
        words = " ".join(filter(None, [rule.get("type", ""), " and ".join(filter(None, bounds))])) or "(named only)"
    return f"{name}: {words}"


def checks(spec: ModelSpec) -> str:
    schema = spec.input_schema
    required = schema.get("required", [])
    parts = [f"requires {', '.join(required)}"] if required else []
    parts += [rule_words(name, rule) for name, rule in sorted(schema.get("properties", {}).items())]
    parts += [f"{field} needs {', '.join(needs)}" for field, needs in schema.get("dependentRequired", {}).items()]
    if schema.get("additionalProperties") is False:
        parts.append("no other field")
    return "; ".join(parts) or "nothing"


def render() -> str:
    lines = [
        INTRO,
        "## The catalogue",
        "",
        "| model | kind | example cost | schema | checked | sent unchecked (fields of the example) |",
        "|---|---|---|---|---|---|",
    ]
    for slug, spec in sorted(known_models().items(), key=lambda item: (item[1].kind, item[0])):
        unchecked = sorted(set(spec.example_input) - set(spec.input_schema.get("properties", {})))
        schema = "complete" if spec.schema_complete else "partial"
        lines.append(
            f"| `{slug}` ({spec.title}) | {spec.kind} | {spec.cost_estimate} | {schema} | {checks(spec)} | "
            f"{', '.join(unchecked) or '-'} |"
        )
    return "\n".join(lines) + "\n"


def test_the_models_page_is_current() -> None:
    if os.environ.get("MINDVIDEO_WRITE_DOCS"):
        PAGE.write_text(render())
    assert PAGE.read_text() == render(), (
        "docs/models.md is stale: run MINDVIDEO_WRITE_DOCS=1 pytest tests/test_models_page.py"
    )


def test_the_page_names_every_model_and_says_which_schemas_are_partial() -> None:
    text = PAGE.read_text()
    for slug, spec in known_models().items():
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{slug}` ")]
        assert ("| complete |" in row) is spec.schema_complete, slug

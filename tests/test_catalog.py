from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo.client.catalog import closest_models, input_problems, known_models, validate_input
from airflow_provider_mindvideo.client.errors import InputValidationError, UnknownModelError

# The API facts the catalogue is built from (shared/ beside the checkout, on developers' machines and CI).
FACTS = Path(__file__).resolve().parents[2] / "shared" / "mindvideo-api" / "models.json"

PNG = "data:image/png;base64,iVBORw0KGgo="


def test_every_known_model_ships_a_schema_and_its_example_passes() -> None:
    models = known_models()
    assert {"gpt-image-2", "veo3-1-fast", "wan2-6-i2v-flash"} <= set(models)
    assert models["gpt-image-2"].schema_complete
    for spec in models.values():
        assert spec.kind in ("image", "video")
        assert input_problems(spec.slug, spec.example_input) == [], spec.slug


@pytest.mark.parametrize(
    "good",
    [
        {"prompt": "a cat"},
        {"prompt": "一只橘猫", "size": "16:9", "resolution": "4k", "n": 1},
        {"prompt": "x", "size": "1881x836"},
        {"prompt": "x", "size": "auto"},
        {"prompt": "x", "image_urls": ["https://example.com/a.png", PNG], "mask_url": PNG},
        {"prompt": "x", "image_urls": ["http://example.com/a.png"] * 16},
    ],
)
def test_valid_gpt_image_2_inputs(good: dict[str, Any]) -> None:
    validate_input("gpt-image-2", good)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({}, "input.prompt is required"),
        ({"prompt": ""}, "input.prompt = '': must not be empty"),
        ({"prompt": "   "}, "input.prompt = '   ': must contain text, not only spaces"),
        ({"prompt": 5}, "input.prompt = 5: must be of type string"),
        ({"prompt": "x", "style": "noir"}, "input.style is not a field of gpt-image-2 (allowed: image_urls, mask_url"),
        ({"prompt": "x", "n": 2}, "input.n = 2: must be one of 1"),
        ({"prompt": "x", "resolution": "8k"}, "input.resolution = '8k': must be one of '1k', '2k', '4k'"),
        ({"prompt": "x", "size": "7:5"}, "input.size = '7:5': must be one of the ratios auto, 1:1"),
        ({"prompt": "x", "size": "0x10"}, "input.size = '0x10'"),
        ({"prompt": "x", "image_urls": []}, "input.image_urls = []: must have at least 1 item(s)"),
        ({"prompt": "x", "image_urls": ["https://e.com/a.png"] * 17}, "must have at most 16 items"),
        ({"prompt": "x", "mask_url": PNG}, "input.mask_url requires input.image_urls"),
        (
            {"prompt": "x", "image_urls": ["file:///etc/passwd"]},
            "input.image_urls[0] = 'file:///etc/passwd': must be an http(s) URL",
        ),
        ({"prompt": "x", "image_urls": ["ftp://e.com/a.png"]}, "input.image_urls[0]"),
        ({"prompt": "x", "image_urls": ["javascript:alert(1)"]}, "input.image_urls[0]"),
        ({"prompt": "x", "image_urls": ["data:image/png,notbase64"]}, "input.image_urls[0]"),
    ],
)
def test_invalid_gpt_image_2_inputs_name_field_value_and_rule(bad: dict[str, Any], says: str) -> None:
    with pytest.raises(InputValidationError) as info:
        validate_input("gpt-image-2", bad)
    assert says in str(info.value)
    assert info.value.retryable is False


def test_long_values_are_shortened_in_messages() -> None:
    huge = "data:image/png;base64," + "A" * 5_000_000 + "!"
    message = str(
        pytest.raises(InputValidationError, validate_input, "gpt-image-2", {"prompt": "x", "image_urls": [huge]}).value
    )
    assert len(message) < 500
    assert "chars)" in message


def test_partial_schemas_check_only_what_is_known() -> None:
    validate_input("veo3-1-fast", {"prompt": "dolphins", "aspect_ratio": "16:9", "anything": True})
    assert input_problems("veo3-1-fast", {"aspect_ratio": "16:9"}) == ["input.prompt is required"]
    assert input_problems("gemini-3-pro-image-preview-official", {"prompt": "x", "n": 5}) == [
        "input.n = 5: must be <= 4"
    ]


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("gpt-image2", "gpt-image-2"),
        ("gpt-image-9", "gpt-image-2"),
        ("GPT-Image-2", "gpt-image-2"),
        ("veo3.1-fast", "veo3-1-fast"),
        ("kling-v3-0", "kling-v3"),
        ("wan2-7-videoedit ", "wan2-7-videoedit"),
    ],
)
def test_a_misspelled_model_fails_naming_the_closest_known_ones(typo: str, meant: str) -> None:
    with pytest.raises(UnknownModelError) as info:
        validate_input(typo, {"prompt": "a cat"})
    message = str(info.value)
    assert f"model = {typo!r}" in message
    assert f"did you mean {meant!r}" in message
    assert "allow_unknown_model=True" in message
    assert isinstance(info.value, InputValidationError)
    assert info.value.retryable is False


def test_an_unknown_model_with_no_close_name_lists_the_known_ones() -> None:
    message = str(pytest.raises(UnknownModelError, validate_input, "model-released-tomorrow", {"prompt": "x"}).value)
    assert "did you mean" not in message
    assert all(slug in message for slug in known_models())


def test_closest_models_ranks_by_similarity() -> None:
    assert closest_models("gpt-image2")[0] == "gpt-image-2"
    assert closest_models("kling") and all(slug.startswith("kling") for slug in closest_models("kling"))
    assert closest_models("zzzzzzzz") == []


def test_unknown_models_pass_only_when_allowed() -> None:
    # A model newer than this catalogue: the caller says so, and only JSON-ness is checked.
    validate_input("model-released-tomorrow", {"whatever": [1, 2, 3]}, allow_unknown_model=True)
    assert input_problems("model-released-tomorrow", {"whatever": [1, 2, 3]}) == []
    with pytest.raises(InputValidationError, match="a set is not JSON"):
        validate_input("model-released-tomorrow", {"x": {1}}, allow_unknown_model=True)


def test_bad_input_for_an_unknown_model_names_the_model_first() -> None:
    with pytest.raises(UnknownModelError):
        validate_input("gpt-image2", {"prompt": ""})


@pytest.mark.skipif(not FACTS.exists(), reason="shared/mindvideo-api/models.json is not beside this checkout")
def test_the_catalogue_holds_every_documented_model_and_every_documented_rule() -> None:
    facts = json.loads(FACTS.read_text())
    models = known_models()
    assert set(models) == set(facts)
    for slug, fact in facts.items():
        spec = models[slug]
        assert (spec.kind, spec.cost_estimate, spec.title) == (
            fact["kind"],
            fact["cost_estimate_example"],
            fact["title"],
        )
        assert dict(spec.example_input) == fact["example_input"], slug
        assert spec.schema_complete is fact["schema_complete"], slug
        vendor = fact["input_schema"] or {}
        assert spec.input_schema.get("required", []) == vendor.get("required", []), slug
        for field, rules in (vendor.get("properties") or {}).items():
            assert includes(spec.input_schema["properties"][field], rules), (slug, field)
        # Partial schemas must not forbid what the docs do not show.
        if not spec.schema_complete:
            assert "additionalProperties" not in spec.input_schema, slug


def includes(shipped: Any, documented: Any) -> bool:
    """Whether every rule of ``documented`` is in ``shipped`` (which may add rules of its own)."""
    if isinstance(documented, dict):
        return isinstance(shipped, dict) and all(
            k in shipped and includes(shipped[k], v) for k, v in documented.items()
        )
    return bool(shipped == documented)


def test_partial_schemas_check_what_the_docs_show() -> None:
    assert input_problems("kling-v3", {"prompt": "x", "mode": "turbo"}) == [
        "input.mode = 'turbo': must be one of 'std', 'pro', '4k'"
    ]
    assert input_problems("viduq3-pro", {"seed": -2}) == ["input.seed = -2: must be >= -1"]
    assert input_problems("viduq3", {"prompt": "x"}) == ["input.image_urls is required"]
    assert input_problems("wan2-7-videoedit", {"video_urls": ["file:///a.mp4"]})[0].startswith(
        "input.video_urls[0] = 'file:///a.mp4': must be an http(s) URL"
    )
    assert input_problems("doubao-seedance-1-0-pro-fast", {"prompt": "x", "seed": 2**32}) == [
        "input.seed = 4294967296: must be <= 4294967295"
    ]
    # What no page shows stays the API's to judge: veo3-1-fast's duration is not documented.
    assert input_problems("veo3-1-fast", {"prompt": "x", "duration": 7}) == []


@pytest.mark.parametrize(
    ("model", "value", "says"),
    [
        ("", {"prompt": "x"}, "model = '': must be a MindVideo model slug"),
        ("gpt-image-2", ["prompt"], "input = ['prompt']: must be a mapping"),
        (
            "gpt-image-2",
            {"prompt": datetime.date(2026, 1, 1)},
            "input.prompt = datetime.date(2026, 1, 1): a date is not JSON",
        ),
        ("veo3-1-fast", {"prompt": "x", "opts": {1: "x"}}, "input.opts key 1: field names must be strings"),
        ("veo3-1-fast", {"prompt": "x", "tags": [{"a": {1, 2}}]}, "input.tags[0].a = {1, 2}: a set is not JSON"),
    ],
)
def test_values_that_are_not_json_are_named(model: str, value: Any, says: str) -> None:
    with pytest.raises(InputValidationError) as info:
        validate_input(model, value)
    assert says in str(info.value)


def test_a_field_with_listed_values_is_told_the_list_once() -> None:
    from airflow_provider_mindvideo.client.catalog import input_problems

    assert input_problems("gpt-image-2", {"prompt": "x", "n": 2}) == ["input.n = 2: must be one of 1"]

from __future__ import annotations

import datetime
from typing import Any

import pytest

from airflow_provider_mindvideo.catalog import input_problems, known_models, validate_input
from airflow_provider_mindvideo.errors import InputValidationError

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


def test_unknown_models_pass_through() -> None:
    validate_input("model-released-tomorrow", {"whatever": [1, 2, 3]})


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
        ("other-model", {"opts": {1: "x"}}, "input.opts key 1: field names must be strings"),
        ("other-model", {"tags": [{"a": {1, 2}}]}, "input.tags[0].a = {1, 2}: a set is not JSON"),
    ],
)
def test_values_that_are_not_json_are_named(model: str, value: Any, says: str) -> None:
    with pytest.raises(InputValidationError) as info:
        validate_input(model, value)
    assert says in str(info.value)

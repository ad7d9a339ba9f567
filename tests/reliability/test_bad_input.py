"""Bad input never costs a request: property-based against an independent reading of the rules,
named cases with the messages users see, and prompts in every script round-tripping unchanged."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_provider_mindvideo.client.catalog import input_problems
from airflow_provider_mindvideo.client.errors import InputValidationError
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from tests.conftest import FAST_RETRIES

MODEL = "gpt-image-2"
RATIOS = [
    "auto",
    "1:1",
    "3:2",
    "2:3",
    "4:3",
    "3:4",
    "5:4",
    "4:5",
    "16:9",
    "9:16",
    "2:1",
    "1:2",
    "3:1",
    "1:3",
    "21:9",
    "9:21",
]
FIELDS = {"prompt", "size", "resolution", "n", "image_urls", "mask_url"}
MAX_URL = 10 * 1024 * 1024

# -- gpt-image-2's documented rules, read independently of the shipped JSON Schema -----------------


def is_pixel_size(value: str) -> bool:
    width, x, height = value.partition("x")
    return bool(x) and all(
        part.isascii() and part.isdigit() and 2 <= len(part) <= 5 and part[0] != "0" for part in (width, height)
    )


def is_reference(value: Any) -> bool:
    """An http(s) URL with a host, or a base64 data: URI; 10 MiB at most."""
    if not isinstance(value, str) or len(value) > MAX_URL:
        return False
    for scheme in ("http://", "https://"):
        if value.startswith(scheme):
            rest = value[len(scheme) :]
            return bool(rest) and rest[0] not in "/?#" and not any(c.isspace() for c in rest)
    if not value.startswith("data:"):
        return False
    head, comma, payload = value[5:].partition(",")
    if not comma or not head.endswith(";base64"):
        return False
    media, *params = head[: -len(";base64")].split(";")
    word = lambda text: bool(text) and all(c.isalnum() or c in "_.+-" for c in text)  # noqa: E731
    kind, slash, sub = media.partition("/")
    if not (slash and word(kind) and word(sub)):
        return False
    if not all((len(p.split("=")) == 2 and all(map(word, p.split("=")))) for p in params):
        return False
    return all((c.isascii() and (c.isalnum() or c in "+/=")) or c.isspace() for c in payload)


def accepts(data: dict[str, Any]) -> bool:
    if set(data) - FIELDS or "prompt" not in data:
        return False
    prompt = data["prompt"]
    if not isinstance(prompt, str) or all(c.isspace() for c in prompt):
        return False
    if "size" in data and not (
        isinstance(data["size"], str) and (data["size"] in RATIOS or is_pixel_size(data["size"]))
    ):
        return False
    if "resolution" in data and data["resolution"] not in ("1k", "2k", "4k"):
        return False
    if "n" in data and not (type(data["n"]) in (int, float) and data["n"] == 1):
        return False
    if "image_urls" in data:
        urls = data["image_urls"]
        if not (isinstance(urls, list) and 1 <= len(urls) <= 16 and all(map(is_reference, urls))):
            return False
    return "mask_url" not in data or (is_reference(data["mask_url"]) and "image_urls" in data)


# -- generating inputs: mostly plausible, often slightly wrong -----------------------------------

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
wrong_type = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.lists(st.just("x"), max_size=2)
)
prompts = st.one_of(
    text, st.sampled_from(["", " ", "\t\n", "a red fox", "一只橘猫", "🦊", "مرحبا", "e\u0301"]), wrong_type
)
sizes = st.one_of(
    st.sampled_from(RATIOS),
    st.sampled_from(["16:10", "0x5", "10x10", "99999x99999", "100000x10", "1x100", "16:9\n", " 1:1", "AUTO", "12x"]),
    st.builds(lambda w, h: f"{w}x{h}", st.integers(0, 120000), st.integers(0, 120000)),
    text,
    wrong_type,
)
references = st.one_of(
    st.sampled_from(
        [
            "https://example.com/a.png",
            "http://cdn.example/x?y=1#z",
            "data:image/png;base64,iVBORw0KGgo=",
            "data:image/png;charset=utf-8;base64,AAAA",
            "file:///etc/passwd",
            "ftp://example.com/a.png",
            "javascript:alert(1)",
            "https:///a.png",
            "https://exa mple.com/a.png",
            "data:image/png,AAAA",
            "data:image/png;base64,@@@@",
            "data:;base64,AAAA",
            "https://example.com/a.png\n",
        ]
    ),
    st.builds(lambda host, path: f"https://{host}/{path}", text, text),
    st.builds(lambda payload: f"data:image/png;base64,{payload}", text),
    wrong_type,
)
valid_references = st.one_of(
    st.builds(
        lambda host, path: f"https://{host}.example/{path}",
        st.text("abcxyz09-", min_size=1, max_size=8),
        text.filter(lambda t: not any(c.isspace() for c in t)),
    ),
    st.sampled_from(["data:image/png;base64,iVBORw0KGgo=", "data:image/jpeg;q=1;base64,/9j/4AAQ"]),
)
valid = {
    "prompt": st.one_of(
        st.sampled_from(["a red fox", "一只橘猫", "🦊", " x "]), text.filter(lambda t: not all(c.isspace() for c in t))
    ),
    "size": st.one_of(
        st.sampled_from(RATIOS), st.builds(lambda w, h: f"{w}x{h}", st.integers(10, 99999), st.integers(10, 99999))
    ),
    "resolution": st.sampled_from(["1k", "2k", "4k"]),
    "n": st.just(1),
    "image_urls": st.lists(valid_references, min_size=1, max_size=16),
}
anything = {
    "prompt": prompts,
    "size": sizes,
    "resolution": st.one_of(st.sampled_from(["1k", "8k", "2K", ""]), wrong_type),
    "n": st.one_of(st.sampled_from([1, 1.0, 0, 2, -1, True, "1"]), wrong_type),
    "image_urls": st.one_of(st.lists(references, max_size=18), references, wrong_type),
    "mask_url": references,
    "style": st.just("vivid"),
}


@st.composite
def inputs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid input, then (usually) one change: a field set to anything, added, or removed."""
    data = {"prompt": draw(valid["prompt"])}
    for name in ("size", "resolution", "n", "image_urls"):
        if draw(st.booleans()):
            data[name] = draw(valid[name])
    if "image_urls" in data and draw(st.booleans()):
        data["mask_url"] = draw(valid_references)
    change = draw(st.sampled_from(["none", "set", "set", "set", "drop"]))
    if change == "set":
        name = draw(st.sampled_from(sorted(anything)))
        data[name] = draw(anything[name])
    elif change == "drop":
        data.pop(draw(st.sampled_from(sorted(data))))
    return data


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs())
@example({"prompt": "x", "size": "16:9\n"})
@example({"prompt": "x", "image_urls": ["https://example.com/a.png\n"]})
@example({"prompt": "x", "n": True})
@example({"prompt": "x", "n": 1.0})
def test_client_validation_accepts_exactly_what_the_rules_accept(data: dict[str, Any]) -> None:
    problems = input_problems(MODEL, data)
    assert (not problems) == accepts(data), problems


@settings(max_examples=200, deadline=None)
@given(inputs())
def test_every_problem_names_a_field(data: dict[str, Any]) -> None:
    for problem in input_problems(MODEL, data):
        assert problem.startswith("input"), problem


# -- named cases: the message a user reads, and no request sent ----------------------------------

NAMED = [
    ("empty prompt", {"prompt": ""}, "input.prompt = '': must not be empty"),
    ("whitespace-only prompt", {"prompt": "  \t "}, "input.prompt = '  \\t ': must contain text, not only spaces"),
    ("unknown field", {"prompt": "x", "style": "vivid"}, "input.style is not a field of gpt-image-2"),
    ("prompt of the wrong type", {"prompt": 42}, "input.prompt = 42: must be of type string"),
    ("n of the wrong type", {"prompt": "x", "n": "1"}, "input.n = '1': must be of type integer"),
    ("n out of range", {"prompt": "x", "n": 4}, "input.n = 4: must be one of 1"),
    ("unsupported size", {"prompt": "x", "size": "16:10"}, "input.size = '16:10': must be one of the ratios"),
    ("unsupported resolution", {"prompt": "x", "resolution": "8k"}, "input.resolution = '8k': must be one of"),
    (
        "too many image_urls",
        {"prompt": "x", "image_urls": [f"https://example.com/{i}.png" for i in range(17)]},
        "input.image_urls = ",
    ),
    (
        "mask without images",
        {"prompt": "x", "mask_url": "https://example.com/m.png"},
        "input.mask_url requires input.image_urls",
    ),
    ("file: URL", {"prompt": "x", "image_urls": ["file:///etc/passwd"]}, "input.image_urls[0] = 'file:///etc/passwd'"),
    (
        "ftp: URL",
        {"prompt": "x", "image_urls": ["ftp://example.com/a.png"]},
        "must be an http(s) URL or a base64 data: URI",
    ),
    (
        "javascript: URL",
        {"prompt": "x", "mask_url": "javascript:alert(1)", "image_urls": ["https://e.com/a.png"]},
        "input.mask_url = 'javascript:alert(1)'",
    ),
    (
        "malformed data URI",
        {"prompt": "x", "image_urls": ["data:image/png;base64,@@@"]},
        "must be an http(s) URL or a base64 data: URI",
    ),
    (
        "data URI over 10 MiB",
        {"prompt": "x", "image_urls": ["data:image/png;base64," + "A" * MAX_URL]},
        "must be at most 10 MiB",
    ),
    ("a date from a template", {"prompt": "x", "size": datetime.date(2026, 1, 1)}, "a date is not JSON"),
    ("a Decimal from a template", {"prompt": "x", "n": decimal.Decimal(1)}, "a Decimal is not JSON"),
    ("a set from a template", {"prompt": "x", "image_urls": {"https://e.com/a.png"}}, "a set is not JSON"),
]


@pytest.mark.parametrize(("case", "data", "message"), NAMED, ids=[case for case, _, _ in NAMED])
def test_named_bad_input_fails_clearly_before_any_request(
    case: str, data: dict[str, Any], message: str, emulator: MindVideoEmulator
) -> None:
    with MindVideoHook(retry_policy=FAST_RETRIES) as hook, pytest.raises(InputValidationError) as raised:
        hook.create_task(MODEL, data)
    assert message in str(raised.value)
    assert str(raised.value).startswith("Invalid input for MindVideo model 'gpt-image-2': input")
    assert sum(emulator.state.requests.values()) == 0


# -- prompts in every script arrive and come back unchanged -------------------------------------

PROMPTS = [
    "一只橘猫坐在窗台上看夕阳,水彩画风格",  # CJK, as in the vendor's examples
    "夕焼けの富士山、浮世絵風",
    "🦊🌅 a fox at dawn 👨‍👩‍👧 (ZWJ family) 🏳️‍🌈",
    "قطة برتقالية تجلس على حافة النافذة",  # right to left
    "חתול כתום ליד החלון",
    "e\u0301 vs \u00e9, n\u0303, a\u0308\u0301 (combining marks, not normalised)",
    "tab\tand\nnewline, quotes \" ' and backslash \\",
]


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_unicode_prompts_round_trip_unchanged(prompt: str, mode: str, emulator: MindVideoEmulator) -> None:
    import asyncio

    hook = MindVideoHook(retry_policy=FAST_RETRIES)
    if mode == "sync":
        with hook:
            created = hook.create_task(MODEL, {"prompt": prompt})
    else:

        async def create() -> Any:
            async with hook:
                return await hook.acreate_task(MODEL, {"prompt": prompt})

        created = asyncio.run(create())
    [task] = emulator.state.tasks.values()
    assert task.input["prompt"] == prompt
    assert created.task_id == task.task_id

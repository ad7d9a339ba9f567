"""The pure parts: cutting the key out of decoded answers, the check that skips it, and the stored-size cap."""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_mindvideo.client import protocol
from airflow_provider_mindvideo.client.models import STORED_ANSWER_LIMIT, AnswerTooLargeError, MindVideoTask
from airflow_provider_mindvideo.client.redaction import (
    may_hold,
    url_without_password,
    without_secret,
    without_secret_in,
)

KEY = 'mv_live_Zq7X/k9+Pw=Lm3"Rt5Yv8<Bn2Hs6Qe'

# Pieces of server text: the key in each form it may be echoed in, cut short, and other text.
_pieces = st.sampled_from(
    [
        KEY,
        KEY[:14],
        json.dumps(KEY)[1:-1],
        html.escape(KEY),
        quote(KEY, safe=""),
        repr(KEY)[1:-1],
        "Bearer ",
        "/",
        "\u2028",
        "é",
        "🦊",
    ]
)
_texts = st.lists(st.one_of(_pieces, st.text(max_size=8)), max_size=6).map("".join)
_json = st.recursive(
    st.one_of(st.none(), st.integers(), _texts),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_texts, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    value=_json, ascii_only=st.booleans(), slashes_escaped=st.booleans(), encoding=st.sampled_from(["utf-8", "utf-16"])
)
def test_a_body_the_check_clears_decodes_to_nothing_holding_the_key(
    value: Any, ascii_only: bool, slashes_escaped: bool, encoding: str
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    if slashes_escaped:
        text = text.replace("/", "\\/")
    body = text.encode(encoding)
    decoded = json.loads(body)
    clean = without_secret_in(decoded, KEY)
    if clean != decoded:
        assert may_hold(body, KEY)  # skipping the walk would have kept the key
    assert KEY[8:20] not in json.dumps(clean, ensure_ascii=False)
    assert KEY[:10] not in json.dumps(clean, ensure_ascii=False)


def test_cuts_and_keeps() -> None:
    assert without_secret(f"a {KEY} b {KEY[:12]}", KEY) == "a *** b ***"
    assert without_secret("nothing here", KEY) == "nothing here"
    assert without_secret_in({f"k {KEY}": [1, None, KEY]}, KEY) == {"k ***": [1, None, "***"]}
    assert without_secret_in({"a": KEY}, None) == {"a": KEY}
    assert url_without_password("http://me:pw@proxy:3128") == "http://me:***@proxy:3128"
    assert url_without_password("http://proxy:3128") == "http://proxy:3128"


def response(body: bytes) -> httpx.Response:
    request = httpx.Request("GET", "https://api.example/api/v1/tasks/t1", headers={"Authorization": f"Bearer {KEY}"})
    return httpx.Response(200, content=body, request=request)


def test_a_normal_poll_pays_for_no_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[Any] = []
    real_walk = protocol.without_secret_in
    monkeypatch.setattr(protocol, "without_secret_in", lambda value, key: walked.append(value) or real_walk(value, key))
    normal = {"task_id": "t1", "status": "succeeded", "output": {"images": [{"url": "https://cdn.example/0.png"}]}}
    assert protocol.task_from_response(response(json.dumps(normal).encode())).output_urls == [
        "https://cdn.example/0.png"
    ]
    assert walked == []
    echoing = {**normal, "error": f"sent {KEY}"}
    assert protocol.task_from_response(response(json.dumps(echoing).encode())).error == "sent ***"
    assert len(walked) == 1


def task(**fields: Any) -> MindVideoTask:
    return MindVideoTask.model_validate({"task_id": "t1", "status": "succeeded", **fields})


def test_a_task_within_the_limit_is_kept_as_it_came() -> None:
    small = task(output={"images": [{"url": "https://cdn.example/0.png", "seed": 7}]}, new_field="x" * 10_000)
    assert small.within_stored_limit(20_000) is small


def test_over_the_limit_unknown_fields_go_first_then_error_details_then_output_fields() -> None:
    urls = [f"https://cdn.example/{i}.png" for i in range(3)]
    big = "x" * STORED_ANSWER_LIMIT
    only_unknown = task(output={"images": [{"url": u, "seed": 1} for u in urls]}, trace=big)
    cut = only_unknown.within_stored_limit(10**6)
    assert cut.model_extra == {} and cut.output == only_unknown.output
    assert cut.cut is not None and cut.cut.startswith("cut at 64 KiB (STORED_ANSWER_LIMIT): its fields")

    in_output = task(output={"images": [{"url": urls[0], "blob": big}, urls[1]], "videos": {"url": urls[2]}, "x": 1})
    cut = in_output.within_stored_limit(10**6)
    assert cut.output == {"images": [{"url": urls[0]}, urls[1]], "videos": {"url": urls[2]}}
    assert cut.output_urls == urls
    assert cut.cut is not None and "output's fields other than the URLs" in cut.cut and "unknown" not in cut.cut

    in_error = task(status="failed", error={"message": "boom", "detail": [big]})
    cut = in_error.within_stored_limit(10**6)
    assert cut.error == "boom" and cut.error_message == "boom"
    assert cut.cut is not None and "error's details" in cut.cut and "output" not in cut.cut
    for record in (cut.summary(), cut.model_dump(mode="json")):
        assert len(json.dumps(record)) < STORED_ANSWER_LIMIT


def test_output_urls_are_never_cut_an_answer_they_overfill_is_refused() -> None:
    urls = ["https://cdn.example/" + "p" * 40_000, "https://cdn.example/1.png"]
    with pytest.raises(AnswerTooLargeError, match=r"its 2 output URL\(s\) cut at 64 KiB \(STORED_ANSWER_LIMIT\)"):
        task(output={"images": urls}).within_stored_limit(10**6)

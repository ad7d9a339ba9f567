"""The hook's connection: read and checked before any request, tested honestly, usable from any event loop."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.errors import AuthenticationError
from tests.conftest import Api

PROMPT = {"prompt": "a lighthouse at dawn"}


def use_connection(monkeypatch: pytest.MonkeyPatch, host: str, password: str, **extra: Any) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MINDVIDEO_DEFAULT",
        json.dumps({"conn_type": "mindvideo", "host": host, "password": password, "extra": extra}),
    )


# -- the key's characters (issue 11, item 5) ---------------------------------------------------


@pytest.mark.parametrize(
    ("pasted", "problem"),
    [
        ("mv_live_SECRETHALF\r\nOTHERSECRETHALF", "a line break (CR) at character 19"),
        ("mv_live_SECRETHALF\nOTHERSECRETHALF", "a line break (LF) at character 19"),
        ("mv_live_SECRETHALF\x00OTHERSECRETHALF", "a NUL character at character 19"),
        ("mv_live_SECRETHALF\u200bOTHERSECRETHALF", "U+200B ZERO WIDTH SPACE) at character 19"),
    ],
)
def test_a_key_pasted_with_a_stray_character_fails_at_once_without_quoting_it(
    api: Api,
    emulator: MindVideoEmulator,
    monkeypatch: pytest.MonkeyPatch,
    sleeps: list[float],
    pasted: str,
    problem: str,
) -> None:
    use_connection(monkeypatch, emulator.base_url, pasted)
    with pytest.raises(AuthenticationError) as info:
        api.create_task("gpt-image-2", PROMPT)
    message = f"{info.value!s} {info.value!r}"
    assert problem in message
    assert "SECRETHALF" not in message
    assert isinstance(info.value, AirflowFailException)
    assert sum(emulator.state.requests.values()) == 0
    assert sleeps == []

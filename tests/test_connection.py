"""The hook's connection: read and checked before any request, tested honestly, usable from any event loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.errors import AuthenticationError, ConnectionNotFoundError
from airflow_provider_mindvideo.hooks import MindVideoHook
from tests.conftest import FAST_RETRIES, Api

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


# -- an unknown connection id (issue 12) -------------------------------------------------------


def test_an_unknown_connection_id_is_a_permanent_error_naming_it(emulator: MindVideoEmulator) -> None:
    hook = MindVideoHook("mindvideo_typo", retry_policy=FAST_RETRIES)
    with pytest.raises(ConnectionNotFoundError, match="mindvideo_conn_id 'mindvideo_typo'") as info:
        hook.get_task("task_1")
    assert info.value.retryable is False
    assert isinstance(info.value, AirflowFailException)

    async def go() -> None:
        async with MindVideoHook("mindvideo_typo", shared_client=True) as hook:
            await hook.aget_task("task_1")

    with pytest.raises(ConnectionNotFoundError, match="mindvideo_typo"):
        asyncio.run(go())


def test_a_task_with_an_unknown_connection_fails_without_spending_its_retries(
    airflow_db: str, emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dags.mindvideo_test_dags import DAGS

    monkeypatch.delenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT")
    dag_run = DAGS["mv_generate_retry"].test(run_conf={"prompt": "a red fox"})  # retries=2
    (ti,) = dag_run.get_task_instances()
    assert str(ti.state) == "failed"
    assert ti.try_number == 1
    assert sum(emulator.state.requests.values()) == 0

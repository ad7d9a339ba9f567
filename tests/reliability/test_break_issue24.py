"""Attacks on the promises of issue 24, through the public API only (operators, triggers, the hook).

Each test is one attack a reviewer tried: the server (a hostile one on 127.0.0.1, or the
emulator) is the adversary, and its own books are the oracle.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_mindvideo.client.errors import MindVideoError
from airflow_provider_mindvideo.client.protocol import RetryPolicy
from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.operators import MindVideoBatchGenerateOperator

KEY = "mv_live_Qx7Hs2Lk9Pw4Zr6Tn8Vb"
FAST = RetryPolicy(max_retries=2, deadline=5.0, backoff=0.01, max_backoff=0.02)


@dataclass
class Ti:
    try_number: int = 1
    dag_id: str = "mv_break"
    task_id: str = "generate"
    run_id: str = "manual__break"
    map_index: int = -1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcom.get(key)


def run_batch(operator: MindVideoBatchGenerateOperator, ti: Ti) -> dict[str, Any]:
    """execute -> the trigger in an event loop -> execute_complete, as the worker and triggerer would."""
    context: Any = {"ti": ti}
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    trigger: Any = deferred.value.trigger
    trigger.poll_interval, trigger.max_poll_interval = 0.02, 0.05

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    payloads = asyncio.run(events())
    assert len(payloads) == 1, payloads
    result: dict[str, Any] = operator.execute_complete(context, payloads[0])
    return result


# -- CSV / JSONL inputs -----------------------------------------------------------------------------


def _batch(tmp_path: Path, **options: Any) -> MindVideoBatchGenerateOperator:
    options.setdefault("model", "gpt-image-2")
    return MindVideoBatchGenerateOperator(
        task_id="generate", result_path=f"file://{tmp_path}/out/manifest.jsonl", **options
    )


@pytest.mark.parametrize("text", ["prompt\n", "\ufeffprompt,size\r\n", "", "\n\n"])
def test_a_csv_with_no_rows_is_a_batch_of_zero_items_that_succeeds(
    emulator: MindVideoEmulator, tmp_path: Path, text: str
) -> None:
    (tmp_path / "in.csv").write_text(text, encoding="utf-8")
    summary = run_batch(_batch(tmp_path, inputs_path=f"file://{tmp_path}/in.csv"), Ti())
    assert summary["items"] == 0
    assert emulator.state.requests["create"] == 0


def test_an_inputs_encoding_that_is_no_text_encoding_is_refused_when_the_dag_is_parsed(tmp_path: Path) -> None:
    # codecs.lookup knows 'hex' and 'rot13', but bytes.decode refuses them with a raw LookupError
    with pytest.raises(ValueError, match="inputs_encoding = 'hex'"):
        _batch(tmp_path, inputs_path=f"file://{tmp_path}/in.csv", inputs_encoding="hex")

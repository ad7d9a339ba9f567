"""``MindVideoHook.create_task`` against a bare ``httpx`` POST of the same request, same emulator."""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid

import httpx

CALLS = 300
INPUT = {"prompt": "A lighthouse at dawn, watercolour", "size": "16:9", "resolution": "2k", "n": 1}


def measure(base_url: str, api_key: str, calls: int = CALLS) -> dict[str, float]:
    os.environ["AIRFLOW_CONN_MINDVIDEO_BENCH"] = json.dumps(
        {"conn_type": "mindvideo", "host": base_url, "password": api_key}
    )
    from airflow_provider_mindvideo.hooks import MindVideoHook

    bare = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"})
    hook = MindVideoHook("mindvideo_bench")

    def bare_post() -> None:
        response = bare.post(
            "/api/v1/tasks",
            json={"model": "gpt-image-2", "input": INPUT},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        response.raise_for_status()
        response.json()

    def hook_create() -> None:
        hook.create_task("gpt-image-2", INPUT, idempotency_key=uuid.uuid4().hex)

    timings: dict[str, list[float]] = {"bare": [], "hook": []}
    for _ in range(20):  # warm both: connections, imports, schema compilation
        bare_post()
        hook_create()
    # Alternate, so that drift (other processes, the emulator's growing state) hits both alike.
    for _ in range(calls):
        for name, call in (("bare", bare_post), ("hook", hook_create)):
            started = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - started)
    bare.close()
    hook.close()
    bare_ms, hook_ms = (1000 * statistics.median(timings[name]) for name in ("bare", "hook"))
    return {"bare_ms": bare_ms, "hook_ms": hook_ms, "ratio": hook_ms / bare_ms, "calls": calls}


if __name__ == "__main__":
    import sys

    print(measure(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "mv_test_emulator"))

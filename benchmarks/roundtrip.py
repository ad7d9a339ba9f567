"""``MindVideoHook.create_task`` against a bare ``httpx`` POST of the same request: the client's CPU per call.

The target is about what the hook costs the worker, so each call is timed with the calling
thread's CPU clock (``time.thread_time``), not the wall clock: the server's own work, which
runs in another process, is left out. Measured against two servers, each a process of its own:

- ``emulator``: the bundled MindVideo emulator (uvicorn; its answers carry the API's headers);
- ``minimal``: a raw-socket server that answers every request with the same fixed 201 JSON
  (what a client pays when the server costs nothing).

``python benchmarks/roundtrip.py [--profile PATH]`` prints both; ``--profile`` also writes a
cProfile of the hook's calls (client CPU clock) against the minimal server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

CALLS = 300
INPUT = {"prompt": "A lighthouse at dawn, watercolour", "size": "16:9", "resolution": "2k", "n": 1}
_CREATED = json.dumps(
    {
        "request_id": "req_0123456789abcdef",
        "task_id": "task_0123456789abcdef0123",
        "model": "gpt-image-2",
        "status": "queued",
        "cost_estimate": 0.0135,
        "cost_actual": None,
        "output": None,
        "error": None,
        "created_at": "2026-01-01T00:00:00+00:00",
    }
).encode()
_ANSWER = (
    b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nx-request-id: req_0123456789abcdef\r\n"
    + b"content-length: %d\r\n\r\n" % len(_CREATED)
    + _CREATED
)


def _answer_each_request(conn: socket.socket) -> None:
    with conn:
        buffered = b""
        while True:
            while b"\r\n\r\n" not in buffered:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffered += chunk
            head, buffered = buffered.split(b"\r\n\r\n", 1)
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(buffered) < length:
                buffered += conn.recv(65536)
            buffered = buffered[length:]
            conn.sendall(_ANSWER)


def serve_minimal(port_file: str) -> None:
    """A keep-alive HTTP/1.1 server that reads each request whole and answers the same 201."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    Path(port_file).write_text(str(listener.getsockname()[1]))
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_answer_each_request, args=(conn,), daemon=True).start()


@contextlib.contextmanager
def minimal_server() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        process = subprocess.Popen([sys.executable, __file__, "serve-minimal", port_file])
        try:
            while not (os.path.exists(port_file) and Path(port_file).read_text()):
                if process.poll() is not None:
                    raise RuntimeError("the minimal server did not start")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{Path(port_file).read_text()}"
        finally:
            process.terminate()
            process.wait(timeout=10)


def _no_validation(*args: Any, **kwargs: Any) -> None:
    return None


def measure(base_url: str, api_key: str, calls: int = CALLS, profile_to: str | None = None) -> dict[str, float]:
    """Median client CPU (ms) of the hook's create_task and of a bare httpx POST, alternating."""
    os.environ["AIRFLOW_CONN_MINDVIDEO_BENCH"] = json.dumps(
        {"conn_type": "mindvideo", "host": base_url, "password": api_key}
    )
    from airflow_provider_mindvideo import hooks
    from airflow_provider_mindvideo.hooks import MindVideoHook, validate_input

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

    def hook_create_unvalidated() -> None:
        # Where the time goes: the same call with the input's JSON-schema validation skipped.
        hooks.validate_input = _no_validation
        try:
            hook.create_task("gpt-image-2", INPUT, idempotency_key=uuid.uuid4().hex)
        finally:
            hooks.validate_input = validate_input

    calls_by_name: dict[str, Callable[[], None]] = {
        "bare": bare_post,
        "hook": hook_create,
        "unvalidated": hook_create_unvalidated,
    }
    cpu: dict[str, list[float]] = {name: [] for name in calls_by_name}
    wall: dict[str, list[float]] = {name: [] for name in calls_by_name}
    for _ in range(20):  # warm all: connections, imports, schema compilation
        for call in calls_by_name.values():
            call()
    # Alternate, so that drift (other processes, the server's growing state) hits both alike.
    for _ in range(calls):
        for name, call in calls_by_name.items():
            cpu_before, wall_before = time.thread_time(), time.perf_counter()
            call()
            cpu[name].append(time.thread_time() - cpu_before)
            wall[name].append(time.perf_counter() - wall_before)
    if profile_to:
        import cProfile

        profiler = cProfile.Profile(time.thread_time)
        profiler.runcall(lambda: [hook_create() for _ in range(calls)])
        profiler.dump_stats(profile_to)
    bare.close()
    hook.close()
    bare_ms, hook_ms, unvalidated_ms = (1000 * statistics.median(cpu[name]) for name in calls_by_name)
    return {
        "bare_ms": bare_ms,
        "hook_ms": hook_ms,
        "ratio": hook_ms / bare_ms,
        "unvalidated_ms": unvalidated_ms,
        "unvalidated_ratio": unvalidated_ms / bare_ms,
        "bare_wall_ms": 1000 * statistics.median(wall["bare"]),
        "hook_wall_ms": 1000 * statistics.median(wall["hook"]),
        "calls": calls,
    }


def measure_both(emulator_url: str, api_key: str, calls: int = CALLS) -> dict[str, dict[str, float]]:
    with minimal_server() as minimal_url:
        return {
            "emulator": measure(emulator_url, api_key, calls),
            "minimal": measure(minimal_url, api_key, calls),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", nargs="?", default="measure", choices=["measure", "serve-minimal"])
    parser.add_argument("port_file", nargs="?")
    parser.add_argument("--profile", help="write a cProfile of the hook's calls against the minimal server here")
    parser.add_argument("--calls", type=int, default=CALLS)
    args = parser.parse_args()
    if args.mode == "serve-minimal":
        serve_minimal(args.port_file)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from airflow_provider_mindvideo.emulator.server import emulator_process

    with emulator_process() as emulator_url:
        results: dict[str, Any] = {"emulator": measure(emulator_url, "mv_test_emulator", args.calls)}
    with minimal_server() as minimal_url:
        results["minimal"] = measure(minimal_url, "mv_test_emulator", args.calls, args.profile)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Client CPU per poll: the provider's own aiohttp transport against ``httpx-aiohttp``'s.

Not part of ``make bench``: it answers one question (adopt ``httpx-aiohttp`` for the triggers'
shared client, or keep ours?) and its figures are in ``benchmarks/transport-choice.md``.

A minimal HTTP/1.1 server (its own process, so its CPU is not counted) answers every request
with the same small JSON task. For each transport a fresh child process builds the shared
polling client the triggers use (``PollingClient``, 64 connections), warms it up, then sends
``rounds`` rounds of ``concurrency`` concurrent GETs of one prebuilt request, as the triggers'
hooks do, and reports its own CPU time (``time.process_time``) per request. Runs alternate
between the transports so that drift on the shared machine hits both alike.

Usage: ``python benchmarks/transport_choice.py [--repeats 5]`` (needs ``httpx-aiohttp``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BODY = json.dumps(
    {"request_id": "req_1", "task_id": "task_1", "status": "processing", "cost_estimate": 0.0135}
).encode()
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: req_1\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
# (concurrent polls, rounds): about 4,000-6,000 requests per measurement.
WORKLOADS = [(500, 8), (2000, 3)]


async def serve(port_file: str) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, backlog=4096)
    Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


def transport(kind: str) -> Any:
    import httpx

    from airflow_provider_mindvideo import transports

    if kind == "ours":
        return transports.AiohttpTransport()
    if kind == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(limits=httpx.Limits(max_connections=transports.MAX_CONNECTIONS))
    raise ValueError(kind)


async def measure(kind: str, port: int, concurrency: int, rounds: int) -> dict[str, float]:
    import httpx

    from airflow_provider_mindvideo.transports import PollingClient

    client = PollingClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": "Bearer mv_live_bench", "Accept": "application/json"},
        timeout=httpx.Timeout(30.0, connect=10.0),
        transport=transport(kind),
    )
    request = client.build_request("GET", "/api/v1/tasks/task_1")

    async def poll() -> None:
        response = await client.send(request)
        assert response.status_code == 200, response.status_code
        json.loads(response.content)

    await asyncio.gather(*(poll() for _ in range(concurrency)))  # warm: connections, imports
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(poll() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await client.aclose()
    requests = concurrency * rounds
    return {"cpu_ms_per_request": 1000 * cpu / requests, "wall_s": wall, "requests": requests}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kinds", default="ours,httpx-aiohttp")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    port_file = Path("/tmp") / f"transport-choice-{time.time_ns()}.port"
    server = subprocess.Popen([sys.executable, __file__, "serve", str(port_file)])
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        port = int(port_file.read_text())
        results: dict[tuple[str, int], list[float]] = {}
        for repeat in range(args.repeats):
            for concurrency, rounds in WORKLOADS:
                # Alternate who goes first: a neighbour's load on the shared cores hits both alike.
                for kind in kinds if repeat % 2 == 0 else kinds[::-1]:
                    out = subprocess.run(
                        [sys.executable, __file__, "child", kind, str(port), str(concurrency), str(rounds)],
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    if out.returncode != 0:
                        raise RuntimeError(f"{kind} at {concurrency} failed:\n{out.stderr[-2000:]}")
                    figure = json.loads(out.stdout.strip().splitlines()[-1])["cpu_ms_per_request"]
                    results.setdefault((kind, concurrency), []).append(figure)
        first, last = kinds[0], kinds[-1]
        print(
            f"| concurrent polls | {first} (ms CPU/request) | {last} (ms CPU/request) "
            "| ratio of medians | median of paired ratios |"
        )
        print("|---|---|---|---|---|")
        for concurrency, _rounds in WORKLOADS:
            ours, theirs = results[(first, concurrency)], results[(last, concurrency)]
            paired = statistics.median(b / a for a, b in zip(ours, theirs, strict=True))
            print(
                f"| {concurrency} | {statistics.median(ours):.3f} | {statistics.median(theirs):.3f} "
                f"| {statistics.median(theirs) / statistics.median(ours):.2f}x | {paired:.2f}x |"
            )
        print(json.dumps({f"{kind} {concurrency}": values for (kind, concurrency), values in results.items()}))
    finally:
        server.terminate()
        server.wait()
        port_file.unlink(missing_ok=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(serve(sys.argv[2]))
    elif sys.argv[1:2] == ["child"]:
        kind, port, concurrency, rounds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(asyncio.run(measure(kind, port, concurrency, rounds))))
    else:
        main()

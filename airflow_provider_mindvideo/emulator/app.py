"""The emulator's HTTP surface: the MindVideo task API, its output files, and a control API."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from airflow_provider_mindvideo.emulator.media import render_mp4, render_png
from airflow_provider_mindvideo.emulator.state import EmulatedTask, EmulatorState, Fault, Script

TASKS = "/api/v1/tasks"


class DeliberateDisconnect(Exception):
    """Raised mid-response so that the server closes the connection (the ``drop`` fault)."""


class _QuietDeliberateDisconnects(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DeliberateDisconnect))


class _CutOffResponse(Response):
    """Headers promising a body that never fully arrives: the client sees the connection drop."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"request_id": "req_cut', "more_body": True})
        raise DeliberateDisconnect


class _Answer(Exception):
    """Raised to answer a request at once (auth failure, an injected fault)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def create_app(state: EmulatorState) -> FastAPI:
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDeliberateDisconnects) for f in server_log.filters):
        server_log.addFilter(_QuietDeliberateDisconnects())
    app = FastAPI(title="MindVideo emulator", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def count_in_flight(request: Request, call_next: Any) -> Response:
        if not request.url.path.startswith("/api/"):
            return await call_next(request)  # type: ignore[no-any-return]
        route = "create" if request.method == "POST" and request.url.path == TASKS else None
        state.enter(route)
        try:
            return await call_next(request)  # type: ignore[no-any-return]
        finally:
            state.leave(route)

    @app.exception_handler(_Answer)
    async def answer(request: Request, exc: _Answer) -> Response:
        return exc.response

    def authenticated_key(request: Request) -> str | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return key if scheme.lower() == "bearer" and state.is_valid_key(key) else None

    def take_fault(request: Request, route: str) -> Fault | None:
        """Count the request and apply a pending fault that answers by itself; the others are returned."""
        state.record_request(route, (request.client.host, request.client.port) if request.client else None)
        fault = state.take_fault(route)
        if fault is not None and fault.kind == "status":
            status = fault.status or 503
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            raise _Answer(_error(status, "emulated_fault", f"Emulated HTTP {status}", headers))
        elif fault is not None and fault.kind == "html":
            html = "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
            raise _Answer(Response(html, status_code=fault.status or 502, media_type="text/html"))
        return fault

    async def before(request: Request, route: str) -> tuple[str, Fault | None]:
        """Count the request, apply a fault that answers by itself, check the key and the rate limit."""
        fault = take_fault(request, route)
        key = authenticated_key(request)
        if key is None:
            raise _Answer(_error(401, "unauthorized", "Missing or invalid API key"))
        wait = state.admit(key)
        if wait is not None:
            raise _Answer(_error(429, "rate_limited", "Too many requests", {"Retry-After": f"{wait:.2f}"}))
        return key, fault

    async def task_response(task: EmulatedTask, request: Request, fault: Fault | None, status: int = 200) -> Response:
        if fault is not None and fault.kind == "delay":
            # Late, after the work is done: a created task exists while the client still waits.
            await asyncio.sleep(fault.seconds)
        if fault is not None:
            if fault.kind == "drop":
                return _CutOffResponse()
            if fault.kind == "malformed_json":
                return Response("<task id='oops' status=queued>", status_code=200, media_type="application/json")
            if fault.kind == "truncated":
                cut = json.dumps(task_body(task, state.clock(), str(request.base_url).rstrip("/")))[:40]
                return Response(cut, status_code=200, media_type="application/json")
            if fault.kind == "missing_fields":
                return JSONResponse({"request_id": task.request_id}, status_code=200)
        body = task_body(task, state.clock(), str(request.base_url).rstrip("/"))
        if fault is not None and fault.kind == "unknown_status":
            body["status"] = "awaiting_moderation"
        if fault is not None and fault.kind == "trickle":
            return _trickled(json.dumps(body).encode(), fault.seconds or 0.5, status, task.request_id)
        return JSONResponse(body, status_code=status, headers={"X-Request-Id": task.request_id})

    @app.post(TASKS)
    async def create_task(request: Request) -> Response:
        key, fault = await before(request, "create")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "invalid_json", "The request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
            return _error(422, "invalid_request", "Body must be an object with 'model' and 'input'")
        task, problem, replayed = state.create_task(
            key, body["model"], body.get("input") or {}, request.headers.get("Idempotency-Key")
        )
        if problem == "conflict":
            return _error(409, "idempotency_conflict", "Idempotency-Key reused with a different payload")
        if task is None:
            return _error(422, "invalid_input", problem or "invalid input")
        return await task_response(task, request, fault, status=200 if replayed else 201)

    @app.get(TASKS + "/{task_id}")
    async def get_task(task_id: str, request: Request) -> Response:
        key, fault = await before(request, "get")
        task = state.find_task(key, task_id)
        if task is None:
            return _error(404, "not_found", f"Task {task_id} not found")
        return await task_response(task, request, fault)

    @app.get(TASKS + "/{task_id}/events")
    async def get_events(task_id: str, request: Request) -> Response:
        key, fault = await before(request, "events")
        if fault is not None and fault.kind == "delay":
            # A slow events answer: what a client waits for it is bounded by the client alone.
            await asyncio.sleep(fault.seconds)
        task = state.find_task(key, task_id)
        if task is None:
            return _error(404, "not_found", f"Task {task_id} not found")
        return JSONResponse({"task_id": task.task_id, "events": task_events(task, state.clock())})

    @app.get("/files/{task_id}/{name}")
    async def get_file(task_id: str, name: str, request: Request) -> Response:
        # Output links are public, like the real service's storage links: no key needed.
        fault = take_fault(request, "files")
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        task = state.tasks.get(task_id)
        if task is None or task.status_at(state.clock()) != "succeeded" or task.outcome == "no_output":
            return _error(404, "not_found", "No such file")
        stem, _, suffix = name.partition(".")
        if suffix == "mp4" and task.kind == "video":
            return _media(render_mp4(task.input), "video/mp4", task.output_bytes)
        if suffix == "png" and task.kind == "image" and stem.isdigit():
            return _media(render_png(task.input, int(stem)), "image/png", task.output_bytes)
        return _error(404, "not_found", "No such file")

    # -- control API, for tests that run the emulator in another process ----------------------

    @app.get("/_emulator/state")
    async def get_state() -> dict[str, Any]:
        return state.snapshot()

    @app.post("/_emulator/reset")
    async def reset() -> dict[str, Any]:
        state.reset()
        return state.snapshot()

    def add_control(path: str, cls: type[Fault] | type[Script], add: Any) -> None:
        async def endpoint(request: Request) -> Response:
            data = json.loads(await request.body())
            allowed = {f.name for f in fields(cls)}
            if not isinstance(data, dict) or set(data) - allowed:
                return _error(422, "invalid_request", f"expected an object with fields from {sorted(allowed)}")
            add(cls(**data))
            return JSONResponse(state.snapshot())

        app.add_api_route(path, endpoint, methods=["POST"])

    @app.post("/_emulator/reset-counters")
    async def reset_counters() -> dict[str, Any]:
        state.reset_counters()
        return state.snapshot()

    @app.post("/_emulator/release")
    async def release(request: Request) -> Response:
        data = json.loads(await request.body())
        if not isinstance(data, dict) or set(data) != {"match"} or not isinstance(data["match"], str):
            return _error(422, "invalid_request", "expected an object with one field, 'match' (a string)")
        return JSONResponse({"released": state.release(data["match"])})

    add_control("/_emulator/faults", Fault, state.add_fault)
    add_control("/_emulator/scripts", Script, state.add_script)
    return app


def _media(content: bytes, media_type: str, padded_to: int | None) -> Response:
    if not padded_to or padded_to <= len(content):
        return Response(content, media_type=media_type)
    # Trailing bytes after the media's end are ignored by players and viewers.
    padding, chunk = padded_to - len(content), b"\0" * (1 << 20)

    async def body() -> AsyncIterator[bytes]:
        yield content
        for start in range(0, padding, len(chunk)):
            yield chunk[: min(len(chunk), padding - start)]

    return StreamingResponse(body(), media_type=media_type, headers={"Content-Length": str(padded_to)})


def _trickled(content: bytes, every: float, status: int, request_id: str) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for i in range(len(content)):
            yield content[i : i + 1]
            await asyncio.sleep(every)

    headers = {"X-Request-Id": request_id, "Content-Length": str(len(content))}
    return StreamingResponse(body(), status_code=status, media_type="application/json", headers=headers)


def task_body(task: EmulatedTask, now: float, base_url: str) -> dict[str, Any]:
    """The task as the API shows it at ``now``."""
    status = task.status_at(now)
    body: dict[str, Any] = {
        "request_id": task.request_id,
        "task_id": task.task_id,
        "model": task.model,
        "status": status,
        "cost_estimate": task.cost,
        "cost_actual": None,
        "output": None,
        "error": None,
        "created_at": _iso(task.created_at),
    }
    if status in ("succeeded", "failed", "cancelled"):
        body["cost_actual"] = task.cost
    if status == "succeeded":
        media, suffix = ("videos", "mp4") if task.kind == "video" else ("images", "png")
        count = 0 if task.outcome == "no_output" else max(1, int(task.input.get("n", 1) or 1))
        body["output"] = {media: [{"url": f"{base_url}/files/{task.task_id}/{i}.{suffix}"} for i in range(count)]}
    elif status == "failed":
        body["error"] = {"code": "generation_failed", "message": task.error}
    elif status == "cancelled":
        body["error"] = {"code": "cancelled", "message": task.error or "The task was cancelled"}
    return body


def task_events(task: EmulatedTask, now: float) -> list[dict[str, Any]]:
    events = [{"type": "task.created", "status": "queued", "created_at": _iso(task.created_at)}]
    started = task.created_at + task.queued_seconds
    if now >= started:
        events.append({"type": "task.processing", "status": "processing", "created_at": _iso(started)})
    status = task.status_at(now)
    if status in ("succeeded", "failed", "cancelled") and task.terminal_at is not None:
        event = {"type": f"task.{status}", "status": status, "created_at": _iso(task.terminal_at)}
        if status != "succeeded":
            event["message"] = task.error or status
        events.append(event)
    return events


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = f"req_{uuid.uuid4().hex[:16]}"
    return JSONResponse(
        {"error": {"code": code, "message": message}, "request_id": request_id},
        status_code=status,
        headers={"X-Request-Id": request_id, **(headers or {})},
    )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()

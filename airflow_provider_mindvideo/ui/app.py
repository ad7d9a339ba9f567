"""The plugin's FastAPI app, mounted by Airflow's API server under ``/mindvideo``.

Pages (HTML shells whose script calls the JSON routes) and JSON routes; every one needs an
Airflow user (:mod:`.access`) and answers only about DAGs that user may read. The run is named
in query parameters, never in the path: a run id may hold any character, ``/`` too.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Response, status
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from airflow_provider_mindvideo.ui import figures, gallery, manifests, refusals, stored
from airflow_provider_mindvideo.ui.access import ViewerDep
from airflow_provider_mindvideo.ui.freshness import ledger_fingerprint
from airflow_provider_mindvideo.ui.ledger import ledger_engine

#: The files under ui/static the pages load; nothing else is served from there.
STATIC_FILES = frozenset({"spend.html", "gallery.html", "common.js", "spend.js", "gallery.js", "style.css"})
_NO_STORE = {"Cache-Control": "no-store"}

app = FastAPI(title="MindVideo", docs_url=None, redoc_url=None, openapi_url=None)


def _static(name: str) -> bytes:
    return (resources.files("airflow_provider_mindvideo.ui") / "static" / name).read_bytes()


@app.get("/", response_class=HTMLResponse)
async def spend_page(viewer: ViewerDep) -> HTMLResponse:
    return HTMLResponse(_static("spend.html"), headers=_NO_STORE)


@app.get("/gallery", response_class=HTMLResponse)
async def gallery_page(viewer: ViewerDep, dag_id: str) -> HTMLResponse:
    await run_in_threadpool(viewer.require_dag, dag_id)
    return HTMLResponse(_static("gallery.html"), headers=_NO_STORE)


@app.get("/static/{name}")
async def static_file(viewer: ViewerDep, name: str) -> Response:
    if name not in STATIC_FILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such file")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(_static(name), media_type=media_type, headers={"Cache-Control": "private, max-age=300"})


@app.get("/api/spend")
async def spend_figures(
    viewer: ViewerDep,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
    by: Literal["dag", "model"] = "dag",
    dag_id: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Everything the MindVideo page shows, for the last ``days`` days (UTC), within the viewer's DAGs."""
    return await run_in_threadpool(_spend_figures, viewer, days, by, dag_id, model)


def _spend_figures(viewer: Any, days: int, by: figures.By, dag_id: str | None, model: str | None) -> dict[str, Any]:
    engine = ledger_engine()
    in_ledger = figures.ledger_dags(engine) if engine is not None else []
    every = viewer.reads_every_dag(in_ledger)
    answer: dict[str, Any] = {"days": days, "by": by, "ledger": engine is not None, "budgets_visible": every}
    if engine is None:
        empty: dict[str, Any] = {
            "daily": [],
            "top_dags": [],
            "top_models": [],
            "overall": None,
            "recent": [],
            "failed": [],
        }
        return answer | empty | {"refused": {"count": 0, "items": []}}
    dags = viewer.readable(in_ledger)
    if dag_id is not None and dag_id not in dags:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No spend of DAG {dag_id!r} that you may read")
    since = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=days - 1)
    scope = figures.Scope(dags, include_dagless=every, dag=dag_id, model=model, since=since)
    # Taken once, before anything is read: an answer kept under it is never older than it. Of the
    # rows any answer here reads (the viewer's DAGs, since then, whatever the filters): a change
    # elsewhere in the ledger changes none of them, and the scan reads the covering index alone.
    fingerprint = ledger_fingerprint(engine, scope.unfiltered().where())
    summary = figures.summary(engine, scope, by, fingerprint)
    # The grouped scan counted them: where there are none, no query looks for them.
    failed = figures.recent(engine, scope, fingerprint, state="released") if summary["overall"]["failed"] else []
    # The kept summary is shared by every request: read from it, never change it.
    refused_in_ledger = summary["refused_in_ledger"]
    answer |= {k: v for k, v in summary.items() if k != "refused_in_ledger"} | {
        "since": since.isoformat(),
        "recent": figures.recent(engine, scope, fingerprint),
        "failed": failed,
        "refused": refusals.refused(engine, scope, fingerprint, in_ledger=bool(refused_in_ledger)),
        "windows": _windows(engine) if every else [],
    }
    return answer


def _windows(engine: Any) -> list[dict[str, Any]]:
    from airflow_provider_mindvideo.spend.reading import budget_windows

    return [
        {
            "account": w.account,
            "budget": w.budget,
            "period": w.period,
            "timezone": w.timezone,
            "start": w.start.isoformat(),
            "resets_at": w.resets_at.isoformat(),
            "limit": w.limit,
            "spent": w.spent,
            "reserved": w.reserved,
            "left": w.left,
        }
        for w in budget_windows(engine)
    ]


@app.get("/api/items")
async def run_items(
    viewer: ViewerDep,
    dag_id: str,
    run_id: str,
    task_id: str | None = None,
    map_index: int = -1,
    mindvideo_task_id: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 60,
) -> dict[str, Any]:
    """One page of the run's outputs (of one task instance with ``task_id``), with the run's totals."""
    await run_in_threadpool(viewer.require_dag, dag_id)

    def read() -> dict[str, Any]:
        only = gallery.TaskInstance(task_id, map_index) if task_id is not None else None
        found = gallery.run_page(
            ledger_engine(), dag_id, run_id, only=only, mindvideo_task_id=mindvideo_task_id, number=page, size=per_page
        )
        pages = max(1, -(-found["total"] // per_page))
        return found | {"pages": pages, "dag_id": dag_id, "run_id": run_id, "task_id": task_id}

    return await run_in_threadpool(read)


@app.get("/api/file")
async def stored_file(
    viewer: ViewerDep,
    dag_id: str,
    run_id: str,
    task_id: str,
    position: int,
    n: int = 0,
    map_index: int = -1,
) -> Response:
    """A stored output file, found only through the manifest that names it: no path is taken from the request."""
    await run_in_threadpool(viewer.require_dag, dag_id)
    ti = gallery.TaskInstance(task_id, map_index)
    found = await run_in_threadpool(gallery.stored_file, dag_id, run_id, ti, position, n)
    if not found or not found.get("path"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No stored file of that item")
    path = str(found["path"])
    media_type, headers = stored.served_type(found.get("content_type"))
    local = manifests.local_path(path)
    if local is not None:
        opened = await run_in_threadpool(stored.open_verified, local, found)
    else:
        opened = await run_in_threadpool(stored.fetch_verified, path, found)
    if opened is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No stored file of that item is as its manifest describes")
    file, size = opened
    headers |= {"Cache-Control": "private, max-age=3600", "Content-Length": str(size)}
    return StreamingResponse(stored.chunks(file), media_type=media_type, headers=headers)

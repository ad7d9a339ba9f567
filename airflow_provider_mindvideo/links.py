"""Buttons on a MindVideo task in the Airflow UI: its output, and the model's documentation.

Airflow 3 computes an operator's links in the worker, each time the task stops running --
also when it defers -- and the UI reads them back from XCom. These links read what the
operators push before they defer (the ``mindvideo_task`` record) and when they finish (the
same record with the outputs, and the ``mindvideo_files`` manifest), so "Model docs" works
while the task waits and "MindVideo output" as soon as there is an output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: Where the plugin's app is mounted (ui.plugin.URL_PREFIX, repeated: this module imports no UI code).
GALLERY_PATH = "/mindvideo/gallery"
#: Where MindVideo documents each model, by slug.
MODEL_DOCS_URL = "https://api.mindvideo.ai/models/{slug}/docs"
# XCom keys (outcomes.XCOM_TASK_KEY, downloads.XCOM_FILES_KEY), repeated here so that this module
# stays as light as a DAG file's imports should be.
_TASK_KEY = "mindvideo_task"
_FILES_KEY = "mindvideo_files"


def model_docs_url(model: object) -> str:
    """The model's documentation page; empty when there is no model (yet) to link to."""
    if not isinstance(model, str) or not model.strip():
        return ""
    return MODEL_DOCS_URL.format(slug=quote(model.strip(), safe=""))


def http_form(path: str) -> str:
    """A stored file's address a browser can open, or empty when the store has none.

    http(s) paths are their own; ``gs://`` objects open (for a signed-in user) at
    ``storage.cloud.google.com``, ``s3://`` objects at their bucket's virtual-hosted address.
    Local files and other stores have no such form.
    """
    parts = urlsplit(path)
    key = quote(parts.path.lstrip("/"))
    if parts.scheme in ("http", "https"):
        return path
    if parts.scheme in ("gs", "gcs") and parts.netloc:
        return f"https://storage.cloud.google.com/{parts.netloc}/{key}"
    if parts.scheme in ("s3", "s3a") and parts.netloc:
        return f"https://{parts.netloc}.s3.amazonaws.com/{key}"
    return ""


def output_url(record: Any, files: Any) -> str:
    """The first stored file where its store has an http form, else the first output URL."""
    manifest = files if isinstance(files, Sequence) and not isinstance(files, str) else []
    stored = [entry for entry in manifest if isinstance(entry, Mapping)]
    if stored and (url := http_form(str(stored[0].get("path", "")))):
        return url
    urls = record.get("output_urls") if isinstance(record, Mapping) else None
    if isinstance(urls, list) and urls and isinstance(urls[0], str):
        return urls[0]
    # A download of someone else's URLs has no task record: its manifest names the sources.
    source = stored[0].get("url") if stored else None
    return source if isinstance(source, str) else ""


# What this process pushed under the links' keys, by task instance try. In the worker (where
# Airflow computes links when a task stops: fails, defers or succeeds) the links read it from
# here: asking XCom for a key not pushed yet logs an error-level "XCom not found" that reads
# like a second failure.
_pushed: dict[tuple[Any, ...], dict[str, Any]] = {}


def _try_of(ti: Any) -> tuple[Any, ...]:
    return tuple(getattr(ti, name, None) for name in ("dag_id", "run_id", "task_id", "map_index", "try_number"))


def remember_push(ti: Any, key: str, value: Any) -> None:
    """Push an XCom the links read, and keep it for the links of this try (call instead of ``ti.xcom_push``)."""
    ti.xcom_push(key=key, value=value)
    _pushed.setdefault(_try_of(ti), {})[key] = value


def _xcom(ti_key: TaskInstanceKey, key: str) -> Any:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    if isinstance(ti_key, RuntimeTaskInstance):  # in the worker, the try that pushed (or did not)
        return _pushed.get(_try_of(ti_key), {}).get(key)
    from airflow.sdk.execution_time.xcom import XCom

    return XCom.get_value(ti_key=ti_key, key=key)


class MindVideoOutputLink(BaseOperatorLink):
    """The task's output: the first stored file where the store has an http form, else the first output URL."""

    name = "MindVideo output"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return output_url(_xcom(ti_key, _TASK_KEY), _xcom(ti_key, _FILES_KEY))


class MindVideoModelDocsLink(BaseOperatorLink):
    """The documentation of the model the task used (``https://api.mindvideo.ai/models/<slug>/docs``)."""

    name = "Model docs"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        record = _xcom(ti_key, _TASK_KEY)
        # The record says which model was sent; before it exists, the rendered operator does.
        model = record.get("model") if isinstance(record, Mapping) else None
        return model_docs_url(model or getattr(operator, "model", None))


def gallery_url(dag_id: str, run_id: str, task_id: str, map_index: int | None, base_url: str = "") -> str:
    """The task instance's page of generated media in the plugin, under the API server's base URL's path."""
    query = {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": -1 if map_index is None else map_index,
    }
    prefix = urlsplit(base_url).path.rstrip("/") if base_url else ""
    return f"{prefix}{GALLERY_PATH}?{urlencode(query)}"


class MindVideoGalleryLink(BaseOperatorLink):
    """The task instance's gallery in the MindVideo plugin: every image or video it made, with cost and review.

    Empty (no button) when the plugin is off (``[mindvideo] ui_enabled = False``).
    """

    name = "Generated media"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk import conf

        if not conf.getboolean("mindvideo", "ui_enabled", fallback=True):
            return ""
        # An API server under a sub-path (``[api] base_url``) serves the plugin under it too.
        base_url = conf.get("api", "base_url", fallback="") or ""
        return gallery_url(ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index, base_url)

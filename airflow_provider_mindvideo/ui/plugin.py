"""The Airflow plugin the provider ships (``plugins`` in ``get_provider_info``): the app and where the UI links it.

Airflow 3.2+ loads it in every component; only the API server mounts the app. The pages open in
the UI's frame: the MindVideo page from the nav bar, a run's gallery from the run and the task
instance. ``[mindvideo] ui_enabled = False`` leaves the plugin empty: no app, no links.
"""

from __future__ import annotations

from typing import Any

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

#: Where the API server mounts the app.
URL_PREFIX = "/mindvideo"


def _enabled() -> bool:
    return conf.getboolean("mindvideo", "ui_enabled", fallback=True)


def _fastapi_apps() -> list[dict[str, Any]]:
    from airflow_provider_mindvideo.ui.app import app

    return [{"app": app, "url_prefix": URL_PREFIX, "name": "MindVideo"}]


def _external_views() -> list[dict[str, Any]]:
    gallery = f"{URL_PREFIX}/gallery?dag_id={{DAG_ID}}&run_id={{RUN_ID}}"
    return [
        {"name": "MindVideo", "href": f"{URL_PREFIX}/", "destination": "nav", "url_route": "mindvideo"},
        {"name": "Generated media", "href": gallery, "destination": "dag_run", "url_route": "mindvideo-run-media"},
        {
            "name": "Generated media",
            "href": f"{gallery}&task_id={{TASK_ID}}&map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "mindvideo-task-media",
        },
    ]


class MindVideoPlugin(AirflowPlugin):
    """The MindVideo page and the per-run gallery of generated media."""

    name = "mindvideo"
    fastapi_apps = _fastapi_apps() if _enabled() else []
    external_views = _external_views() if _enabled() else []

"""Moved to :mod:`airflow_provider_mindvideo.outputs.storage`: this old path stays importable."""

from airflow_provider_mindvideo.outputs.storage import *  # noqa: F403

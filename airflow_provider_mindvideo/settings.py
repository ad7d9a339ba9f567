"""Moved to :mod:`airflow_provider_mindvideo.client.settings`: this old path stays importable."""

from airflow_provider_mindvideo.client.settings import *  # noqa: F403

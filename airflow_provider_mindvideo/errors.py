"""Moved to :mod:`airflow_provider_mindvideo.client.errors`: this old path stays importable."""

from airflow_provider_mindvideo.client.errors import *  # noqa: F403

"""Moved to :mod:`airflow_provider_mindvideo.client.submission`: this old path stays importable."""

from airflow_provider_mindvideo.client.submission import *  # noqa: F403

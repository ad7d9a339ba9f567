"""Moved to :mod:`airflow_provider_mindvideo.client.deadlines`: this old path stays importable."""

from airflow_provider_mindvideo.client.deadlines import *  # noqa: F403

"""Moved to :mod:`airflow_provider_mindvideo.client.limits`: this old path stays importable."""

from airflow_provider_mindvideo.client.limits import *  # noqa: F403

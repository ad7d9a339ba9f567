"""Moved to :mod:`airflow_provider_mindvideo.client.models`: this old path stays importable."""

from airflow_provider_mindvideo.client.models import *  # noqa: F403

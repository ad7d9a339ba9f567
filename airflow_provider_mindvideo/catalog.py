"""Moved to :mod:`airflow_provider_mindvideo.client.catalog`: this old path stays importable."""

from airflow_provider_mindvideo.client.catalog import *  # noqa: F403

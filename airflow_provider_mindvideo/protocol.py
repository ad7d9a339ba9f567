"""Moved to :mod:`airflow_provider_mindvideo.client.protocol`: this old path stays importable."""

from airflow_provider_mindvideo.client.protocol import *  # noqa: F403

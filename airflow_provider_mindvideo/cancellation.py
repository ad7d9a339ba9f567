"""Moved to :mod:`airflow_provider_mindvideo.client.cancellation`: this old path stays importable."""

from airflow_provider_mindvideo.client.cancellation import *  # noqa: F403

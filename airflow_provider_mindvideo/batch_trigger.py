"""Moved to :mod:`airflow_provider_mindvideo.batch.trigger`: this old path stays importable."""

from airflow_provider_mindvideo.batch.trigger import *  # noqa: F403

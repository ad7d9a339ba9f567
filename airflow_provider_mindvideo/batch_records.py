"""Moved to :mod:`airflow_provider_mindvideo.batch.records`: this old path stays importable."""

from airflow_provider_mindvideo.batch.records import *  # noqa: F403

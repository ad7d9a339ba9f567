"""Moved to :mod:`airflow_provider_mindvideo.batch.outputs`: this old path stays importable."""

from airflow_provider_mindvideo.batch.outputs import *  # noqa: F403

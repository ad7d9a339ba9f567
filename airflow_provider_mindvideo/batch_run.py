"""Moved to :mod:`airflow_provider_mindvideo.batch.run`: this old path stays importable."""

from airflow_provider_mindvideo.batch.run import *  # noqa: F403

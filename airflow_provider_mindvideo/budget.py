"""Moved to :mod:`airflow_provider_mindvideo.spend.ceiling`: this old path stays importable."""

from airflow_provider_mindvideo.spend.ceiling import *  # noqa: F403

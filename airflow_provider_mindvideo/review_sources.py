"""Moved to :mod:`airflow_provider_mindvideo.review.sources`: this old path stays importable."""

from airflow_provider_mindvideo.review.sources import *  # noqa: F403

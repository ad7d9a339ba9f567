"""Moved to :mod:`airflow_provider_mindvideo.review.page`: this old path stays importable."""

from airflow_provider_mindvideo.review.page import *  # noqa: F403

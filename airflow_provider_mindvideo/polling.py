"""Moved to :mod:`airflow_provider_mindvideo.client.polling`: this old path stays importable."""

from airflow_provider_mindvideo.client.polling import *  # noqa: F403

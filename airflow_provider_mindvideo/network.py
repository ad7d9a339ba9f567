"""Moved to :mod:`airflow_provider_mindvideo.outputs.network`: this old path stays importable."""

from airflow_provider_mindvideo.outputs.network import *  # noqa: F403

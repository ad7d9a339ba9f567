"""Moved to :mod:`airflow_provider_mindvideo.outputs.downloads`: this old path stays importable."""

from airflow_provider_mindvideo.outputs.downloads import *  # noqa: F403

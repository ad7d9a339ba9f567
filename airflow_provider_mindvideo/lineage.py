"""Moved to :mod:`airflow_provider_mindvideo.outputs.lineage`: this old path stays importable."""

from airflow_provider_mindvideo.outputs.lineage import *  # noqa: F403

"""Moved to :mod:`airflow_provider_mindvideo.operators.templating`: this old path stays importable."""

from airflow_provider_mindvideo.operators.templating import *  # noqa: F403

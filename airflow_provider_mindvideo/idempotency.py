"""Moved to :mod:`airflow_provider_mindvideo.client.idempotency`: this old path stays importable."""

from airflow_provider_mindvideo.client.idempotency import *  # noqa: F403

"""Operators that create MindVideo tasks and save their outputs.

Import them from here: ``from airflow_provider_mindvideo.operators import MindVideoGenerateOperator``.
The modules below are where they live; this package's names are the stable ones.
"""

from __future__ import annotations

from airflow_provider_mindvideo.operators.batch import MindVideoBatchGenerateOperator
from airflow_provider_mindvideo.operators.download import (
    MindVideoDownloadOperator,
    outlets_for,
    private_urls_allowed,
    save_outputs,
)
from airflow_provider_mindvideo.operators.generate import MindVideoGenerateOperator, MindVideoSubmitOperator
from airflow_provider_mindvideo.operators.review import MindVideoReviewOperator, review_rounds
from airflow_provider_mindvideo.operators.review_result import MindVideoReviewResultOperator
from airflow_provider_mindvideo.operators.review_steps import MindVideoReviewItemsOperator

__all__ = [
    "MindVideoBatchGenerateOperator",
    "MindVideoDownloadOperator",
    "MindVideoGenerateOperator",
    "MindVideoReviewItemsOperator",
    "MindVideoReviewOperator",
    "MindVideoReviewResultOperator",
    "MindVideoSubmitOperator",
    "outlets_for",
    "private_urls_allowed",
    "review_rounds",
    "save_outputs",
]

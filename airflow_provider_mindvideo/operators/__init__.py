"""Operators that create MindVideo tasks and save their outputs.

Import them from here: ``from airflow_provider_mindvideo.operators import MindVideoGenerateOperator``.
The modules below are where they live; this package's names are the stable ones.

Each name is imported when first asked for (PEP 562): a DAG file that uses the generate
operator does not pay, at every parse, for the batch and review operators' modules (and the
human-in-the-loop provider they import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Each public name, and the module (below this package) that defines it.
_HOMES = {
    "MindVideoBatchGenerateOperator": "batch",
    "MindVideoDownloadOperator": "download",
    "outlets_for": "download",
    "private_urls_allowed": "download",
    "save_outputs": "download",
    "MindVideoGenerateOperator": "generate",
    "MindVideoSubmitOperator": "generate",
    "MindVideoReviewOperator": "review",
    "review_rounds": "review",
    "MindVideoReviewResultOperator": "review_result",
    "MindVideoReviewItemsOperator": "review_steps",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # asked once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))

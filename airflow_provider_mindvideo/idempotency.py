"""Idempotency keys derived from the DAG run, so that Airflow retries never pay twice. Pure.

A task instance's key is a hash of (dag_id, task_id, run_id, map_index) and of the rendered
request (model + input), so a retry, a clear or a restarted worker sends the same key and
MindVideo answers with the task it already created, free of charge.

A remote task that *failed* must not be reused (that would make Airflow retries useless),
so keys come in generations: ``...-0000``, ``...-0001``, ... How a try walks them, creating
at most one task, is :mod:`airflow_provider_mindvideo.submission`'s business.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

KEY_PREFIX = "af-"


def request_fingerprint(model: str, input: Mapping[str, Any]) -> str:
    """A digest of the rendered request; key order in ``input`` does not matter."""
    canonical = json.dumps([model, input], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key(
    dag_id: str, task_id: str, run_id: str, map_index: int, model: str, input: Mapping[str, Any], generation: int
) -> str:
    """The key of one generation: 48 characters, ASCII letters, digits and dashes (header-safe)."""
    identity = json.dumps([dag_id, task_id, run_id, map_index, request_fingerprint(model, input)])
    return f"{KEY_PREFIX}{hashlib.sha256(identity.encode()).hexdigest()[:40]}-{generation:04d}"

"""Idempotency keys derived from the DAG run, so that Airflow retries never pay twice. Pure.

A task instance's key is a hash of (dag_id, task_id, run_id, map_index) and of the rendered
request (model + input), so a retry, a clear or a restarted worker sends the same key and
MindVideo answers with the task it already created, free of charge.

A remote task that *failed* must not be reused (that would make Airflow retries useless),
so keys come in generations: ``...-0000``, ``...-0001``, ... How a try walks them, creating
at most one task, is :mod:`airflow_provider_mindvideo.client.submission`'s business.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

KEY_PREFIX = "af-"


def request_fingerprint(model: str, input: Mapping[str, Any]) -> str:
    """A digest of the rendered request; key order in ``input`` does not matter."""
    canonical = json.dumps([model, input], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key(
    dag_id: str, task_id: str, run_id: str, map_index: int, model: str, input: Mapping[str, Any], generation: int
) -> str:
    """The key of one generation: 48 characters, ASCII letters, digits and dashes (header-safe)."""
    return key_of_generation(key_stem(dag_id, task_id, run_id, map_index, model, input), generation)


def key_stem(
    dag_id: str,
    task_id: str,
    run_id: str,
    map_index: int,
    model: str,
    input: Mapping[str, Any],
    item: int | None = None,
) -> str:
    """Every generation's key without its generation suffix (``af-`` and 40 hex digits).

    :param item: an item's position in a batch: two items with the same request in one batch
        are two remote tasks. None for a task instance's single request (keys as before batches).
    """
    identity: list[Any] = [dag_id, task_id, run_id, map_index, request_fingerprint(model, input)]
    if item is not None:
        identity.append(item)
    return f"{KEY_PREFIX}{hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:40]}"


def key_of_generation(stem: str, generation: int) -> str:
    """The key of ``generation`` under ``stem``."""
    return f"{stem}-{generation:04d}"


class TaskInstanceLike(Protocol):
    """What a key is derived from: Airflow's task instance (``context["ti"]``) has all of it."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int | None


def task_instance_key(ti: TaskInstanceLike, model: str, input: Mapping[str, Any], generation: int = 0) -> str:
    """The key of a task instance's request: the same on every try, clear and restarted worker.

    For your own ``@task`` calling :meth:`MindVideoHook.create_task`: an Airflow retry then gets
    the task the first try created instead of paying for a second one.
    """
    map_index = -1 if ti.map_index is None else ti.map_index
    return idempotency_key(ti.dag_id, ti.task_id, ti.run_id, map_index, model, input, generation)


_OWN_KEY = re.compile(rf"^({re.escape(KEY_PREFIX)}[0-9a-f]{{40}})-(\d{{4,}})$")


def split_key(key: str) -> tuple[str, int]:
    """The stem and generation of a key this provider made (``af-<40 hex>-NNNN``).

    Any other key (an explicit ``idempotency_key``) is its own stem at generation 0: its next
    generation is ``<key>-0001``. Only keys of our own form are read as numbered, so that an
    explicit key such as ``"launch-2024"`` is never mistaken for generation 2024 of ``"launch"``.
    """
    own = _OWN_KEY.match(key)
    if own is None:
        return key, 0
    return own.group(1), int(own.group(2))

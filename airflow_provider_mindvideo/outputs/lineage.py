"""OpenLineage for MindVideo runs: the reference files that went in, the files that came out, the generation.

Everything that decides *what* is reported -- which strings of an input are reference files,
how a URL or a stored path is named as a dataset, what the run facet says -- is a plain
function, usable and tested without OpenLineage installed. Only :func:`operator_lineage`
imports the OpenLineage provider, and only the operators' ``get_openlineage_facets_on_*``
methods call it, which Airflow does only when that provider is installed and enabled.

A batch (many MindVideo tasks in one Airflow task) describes itself with the same parts: the
references of every item plus the file it read its items from as inputs, every stored file as
outputs, and one facet whose ``tasks`` lists each MindVideo task.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import RunFacet

    #: What an operator's ``get_openlineage_facets_on_*`` method returns.
    Lineage: TypeAlias = OperatorLineage[Dataset, RunFacet]

#: The run facet's name in an OpenLineage event (``run.facets.mindvideo``).
RUN_FACET_NAME = "mindvideo"
# Object stores whose dataset name is the object key, as OpenLineage's naming conventions say.
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs"})


def reference_urls(input: Any) -> list[str]:
    """Every hosted file a model input points at, in order, each once.

    A reference is an http(s) string held under a key that names a URL (``image_url``,
    ``image_urls``, ``mask_url``, ``video_urls``, ``image_with_roles[].url``, ...). A prompt
    that quotes a link is text, not an input file, and ``data:`` URIs carry their content
    inline: neither is a dataset.
    """
    found: list[str] = []
    _collect(input, under_url_key=False, found=found)
    return list(dict.fromkeys(found))


def _collect(value: Any, *, under_url_key: bool, found: list[str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _collect(item, under_url_key=str(key).lower().endswith(("url", "urls")), found=found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, under_url_key=under_url_key, found=found)
    elif under_url_key and isinstance(value, str) and _is_http(value):
        found.append(value)


def web_urls(urls: Any) -> list[str]:
    """The http(s) URLs among ``urls`` (a URL, a list, or a list of lists), in order, each once."""
    found: list[str] = []
    _collect(urls, under_url_key=True, found=found)
    return list(dict.fromkeys(found))


def _is_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def dataset_id(uri: str) -> tuple[str, str]:
    """The OpenLineage (namespace, name) of a URL or a stored file's path.

    Follows OpenLineage's naming conventions: ``s3://bucket`` / ``gs://bucket`` with the object
    key as name; a local file is ``file`` and its absolute path. A web URL is named by its origin
    and path: the query string is dropped, because signed links to one object differ only there
    (and their signatures are credentials that do not belong in a lineage store).
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file" or not scheme:
        return ("file" if not parts.netloc else f"file://{parts.netloc}", parts.path or uri)
    if scheme in _BUCKET_SCHEMES:
        return (f"{'gs' if scheme == 'gcs' else scheme}://{parts.netloc}", parts.path.lstrip("/"))
    return (f"{scheme}://{parts.netloc}", parts.path or "/")


def task_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    """One MindVideo task as the run facet lists it, from its XCom record (``mindvideo_task``)."""
    entry = {
        "taskId": record.get("task_id"),
        "requestId": record.get("request_id"),
        "model": record.get("model"),
        "status": record.get("status"),
        "costEstimate": record.get("cost_estimate"),
        "costActual": record.get("cost_actual"),
        "keyGeneration": record.get("key_generation"),
    }
    return {field: value for field, value in entry.items() if value is not None}


def run_facet_fields(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``mindvideo`` run facet's fields for the MindVideo tasks an Airflow task used.

    ``model`` (when every task used the same one), ``taskIds``, ``tasks`` (each task's id, request
    id, model, status, cost estimate and actual cost, and key generation), and the totals
    ``costEstimate`` and ``costActual``. A total is left out while any task's figure is unknown
    (a task still running has no actual cost): a partial sum would read as the whole bill.
    """
    tasks = [task_entry(record) for record in records]
    models = {task.get("model") for task in tasks}
    fields: dict[str, Any] = {"taskIds": [task["taskId"] for task in tasks if "taskId" in task], "tasks": tasks}
    if len(models) == 1 and None not in models:
        fields["model"] = models.pop()
    for total in ("costEstimate", "costActual"):
        known = [float(task[total]) for task in tasks if isinstance(task.get(total), int | float)]
        if tasks and len(known) == len(tasks):
            fields[total] = round(math.fsum(known), 6)
    return fields


def operator_lineage(
    *,
    inputs: Iterable[str] = (),
    outputs: Iterable[str] = (),
    records: Sequence[Mapping[str, Any]] = (),
) -> Lineage:
    """What an operator returns from ``get_openlineage_facets_on_complete`` / ``_on_failure``.

    :param inputs: URLs of the files the task read (reference images, the links it downloaded).
    :param outputs: Final paths of the files it stored (or the output URLs, when it stored none).
    :param records: The MindVideo tasks it created or waited for, as their XCom records.
    """
    from airflow.providers.openlineage.extractors import OperatorLineage

    facets = {RUN_FACET_NAME: mindvideo_run_facet_class()(**run_facet_fields(records))} if records else {}
    return OperatorLineage(
        inputs=[_dataset(uri) for uri in dict.fromkeys(inputs)],
        outputs=[_dataset(uri) for uri in dict.fromkeys(outputs)],
        run_facets=facets,
    )


def _dataset(uri: str) -> Dataset:
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset
    from airflow.sdk import Asset
    from openlineage.client.event_v2 import Dataset

    # A stored file is named as Airflow's own lineage names it (the storage providers'
    # converters), so that this event and the assets the download recorded agree.
    translated = None if uri.startswith(("http://", "https://")) else translate_airflow_asset(Asset(uri), None)
    if translated is not None:
        return Dataset(namespace=translated.namespace, name=translated.name)
    namespace, name = dataset_id(uri)
    return Dataset(namespace=namespace, name=name)


@functools.cache
def mindvideo_run_facet_class() -> type[Any]:
    """The OpenLineage run facet class (built on first use: OpenLineage is an optional dependency)."""
    import attrs
    from openlineage.client.facet_v2 import RunFacet

    @attrs.define
    class MindVideoRunFacet(RunFacet):
        """What MindVideo generated for this run, and what it cost (see :func:`run_facet_fields`)."""

        # OpenLineage facet fields are camelCase.
        taskIds: list[str]
        tasks: list[dict[str, Any]]
        model: str | None = None
        costEstimate: float | None = None
        costActual: float | None = None

    MindVideoRunFacet.__module__ = __name__
    return MindVideoRunFacet

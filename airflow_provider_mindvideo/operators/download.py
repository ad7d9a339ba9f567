"""Save MindVideo outputs into your own storage: the operator, and the helper Generate shares with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, BaseOperator, ObjectStoragePath, conf

from airflow_provider_mindvideo.links import MindVideoOutputLink, remember_push
from airflow_provider_mindvideo.outputs.downloads import (
    DEFAULT_FILE_NAME,
    XCOM_FILES_KEY,
    StoredFile,
    download_client,
    flatten_urls,
    manifest_summary,
    store_outputs,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mindvideo.outputs.lineage import Lineage


class MindVideoDownloadOperator(BaseOperator):
    """Save output media into your own storage (local, S3, GCS, ... via ``ObjectStoragePath``).

    Output URLs are links to MindVideo's storage and may expire; this copies them where your
    pipeline keeps its files. Each file is streamed (a video never sits in memory), appears
    whole or not at all (a temporary name and a no-clobber link in a local folder, a direct
    upload to S3, GCS or Azure, whose uploads are atomic), and its size and sha256 are
    recorded. Re-running is safe: a file already present with the same size and hash is
    kept, not rewritten; a *different* file under the same name -- also one another download
    wrote at the same time -- is an error unless ``overwrite=True``. Lineage records the
    final files as the task's outputs.

    :param urls: Output URLs: a list, a list of lists (e.g. mapped waits), or an XComArg
        such as ``wait.output``. Only http(s) URLs are accepted. (templated)
    :param destination: The folder, as an ``ObjectStoragePath`` URL: ``file:///data/media``,
        ``s3://bucket/media``, ``gs://...``. (templated)
    :param conn_id: The storage connection (e.g. ``aws_default`` for ``s3://``), if it needs one.
        (templated)
    :param file_name: Name of each file inside ``destination``; fields ``{mindvideo_task_id}``,
        ``{index}`` (position in ``urls``), ``{ext}`` (from the content type, e.g. ``.png``)
        and ``{url_name}`` (the URL's last path segment). May contain ``/``: folders are
        created. (templated)
    :param mindvideo_task_id: The MindVideo task the URLs belong to, for file names; without
        it, ``url-`` plus a digest of the URL stands in. (templated)
    :param overwrite: Replace files that exist with other content instead of failing.
    :param timeout: Seconds without progress before a download fails.
    :param allow_private_urls: Let downloads (and their redirects) reach loopback, private,
        link-local and cloud-metadata addresses, which are refused by default so that a link
        cannot read from the worker's own network. Default: ``[mindvideo] allow_private_urls``
        (``AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS``), read when the task runs.

    Assets: when ``destination`` is not templated and ``outlets`` is not given, the operator
    declares ``Asset(destination)``, so DAGs scheduled on it run when new media land. With a
    templated destination, declare ``outlets=[AssetAlias("...")]``: the operator attaches the
    rendered destination's asset to it. Event extras: ``files``, ``written`` and ``bytes``.

    XCom: ``return_value`` is the list of stored paths (URLs of the store); ``mindvideo_files``
    is the manifest: ``url``, ``path``, ``bytes``, ``sha256``, ``content_type`` and ``written``.
    """

    template_fields: Sequence[str] = ("urls", "destination", "file_name", "mindvideo_task_id", "conn_id")
    template_fields_renderers = {"urls": "json"}
    operator_extra_links = (MindVideoOutputLink(),)
    ui_color = "#e8dcff"
    _outputs: Sequence[str] = ()

    def __init__(
        self,
        *,
        urls: Any,
        destination: str,
        conn_id: str | None = None,
        file_name: str = DEFAULT_FILE_NAME,
        mindvideo_task_id: str | None = None,
        overwrite: bool = False,
        timeout: float = 60.0,
        allow_private_urls: bool | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("outlets", outlets_for(destination))
        super().__init__(**kwargs)
        self.urls = urls
        self.destination = destination
        self.conn_id = conn_id
        self.file_name = file_name
        self.mindvideo_task_id = mindvideo_task_id
        self.overwrite = overwrite
        self.timeout = timeout
        self.allow_private_urls = allow_private_urls

    def execute(self, context: Context) -> list[str]:
        check_folder(self.destination, self.conn_id, "destination")
        files = save_outputs(
            self,
            context,
            flatten_urls(self.urls),
            self.destination,
            self.conn_id,
            self.mindvideo_task_id or None,
            pattern=self.file_name,
            overwrite=self.overwrite,
            timeout=self.timeout,
            allow_private_urls=self.allow_private_urls,
        )
        paths = [stored.path for stored in files]
        self._outputs = paths
        return paths

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage:
        """OpenLineage: the links downloaded in, the stored files (final names) out."""
        from airflow_provider_mindvideo.outputs.lineage import operator_lineage, web_urls

        return operator_lineage(inputs=web_urls(self.urls), outputs=self._outputs)


def outlets_for(destination: str) -> list[Asset]:
    """The asset a download into ``destination`` updates, if it is known before templating."""
    return [] if "{{" in destination or "{%" in destination else [Asset(destination)]


def check_folder(url: str, conn_id: str | None, field: str = "download_to") -> None:
    """Make the folder outputs go into now: one that cannot be made fails before anything is paid, not after.

    Raises :class:`~airflow_provider_mindvideo.client.errors.InputValidationError` (no retry) naming
    ``field`` and the URL. On object stores without folders this is a no-op.
    """
    from airflow_provider_mindvideo.client.errors import InputValidationError

    folder = ObjectStoragePath(url, conn_id=conn_id)
    try:
        folder.fs.makedirs(folder.path, exist_ok=True)
    except OSError as exc:
        raise InputValidationError(
            f"{field} = {url!r}: cannot be used as the folder for the outputs ({exc!r}). Nothing was sent"
        ) from None


def private_urls_allowed(parameter: bool | None) -> bool:
    """The operator's ``allow_private_urls`` if given, else the deployment's ``[mindvideo] allow_private_urls``."""
    # Read when the task runs, not when the DAG is parsed: the option belongs to the workers'
    # environment (a test suite, the demo), not to the DAG file.
    if parameter is not None:
        return parameter
    return conf.getboolean("mindvideo", "allow_private_urls", fallback=False)


def save_outputs(
    operator: BaseOperator,
    context: Context,
    urls: list[str],
    destination: str,
    conn_id: str | None,
    mindvideo_task_id: str | None,
    *,
    pattern: str = DEFAULT_FILE_NAME,
    overwrite: bool = False,
    timeout: float = 60.0,
    allow_private_urls: bool | None = None,
) -> list[StoredFile]:
    """Download, record the manifest in XCom, and describe the result on the operator's asset events."""
    folder = ObjectStoragePath(destination, conn_id=conn_id)
    with download_client(timeout, allow_private_urls=private_urls_allowed(allow_private_urls)) as client:
        files = store_outputs(
            client, urls, folder, mindvideo_task_id=mindvideo_task_id, pattern=pattern, overwrite=overwrite
        )
    remember_push(context["ti"], XCOM_FILES_KEY, [stored.to_xcom() for stored in files])
    summary = dict(manifest_summary(files))
    for stored in files:
        operator.log.info(
            "%s %s (%d bytes, sha256 %s)",
            "Saved" if stored.written else "Kept",
            stored.path,
            stored.bytes,
            stored.sha256,
        )
    destination_asset = Asset(destination)
    for outlet in operator.outlets:
        if isinstance(outlet, AssetAlias):
            context["outlet_events"][outlet].add(destination_asset, extra=summary)
        elif isinstance(outlet, Asset) and outlet.uri == destination_asset.uri:
            context["outlet_events"][outlet].extra.update(summary)
    return files

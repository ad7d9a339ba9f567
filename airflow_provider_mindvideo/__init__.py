"""Apache Airflow provider for MindVideo image and video generation.

DAG files import this package at every parse, so this module imports nothing heavy.
"""

from __future__ import annotations

import sys
from typing import Any

__version__ = "0.1.0"

#: The oldest Airflow release this provider runs on (and is tested on): older ones lack
#: ``airflow.sdk.BaseHook``, ``airflow.sdk.conf`` and ``airflow.sdk.exceptions``. The same floor
#: as ``apache-airflow>=`` in pyproject.toml.
MIN_AIRFLOW_VERSION = "3.2.0"


class UnsupportedAirflowVersionError(ImportError):
    """The installed Airflow is older than :data:`MIN_AIRFLOW_VERSION`.

    Raised while this package is imported, so it cannot be a ``MindVideoError``: those are
    ``AirflowException`` subclasses from ``airflow.sdk.exceptions``, one of the modules an older
    Airflow lacks.
    """


def installed_airflow_version() -> str | None:
    # A DAG file, worker or triggerer has imported Airflow already: its own version, for free.
    # Imported alone, this package must stay light (no second spent importing Airflow), so ask
    # the installed distribution instead.
    version = getattr(sys.modules.get("airflow"), "__version__", None)
    if isinstance(version, str):
        return version
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as distribution_version

    try:
        return distribution_version("apache-airflow")
    except PackageNotFoundError:
        return None  # e.g. Airflow run from a source tree: nothing to compare, let the imports tell


def _require_supported_airflow() -> None:
    """Fail here, naming both versions, rather than later on a missing ``airflow.sdk`` name."""
    installed = installed_airflow_version()
    if installed is None:
        return
    from packaging.version import InvalidVersion, Version

    try:
        # base_version: a pre-release or dev build of the floor release counts as that release.
        too_old = Version(Version(installed).base_version) < Version(MIN_AIRFLOW_VERSION)
    except InvalidVersion:
        return
    if too_old:
        raise UnsupportedAirflowVersionError(
            f"airflow-provider-mindvideo {__version__} needs apache-airflow>={MIN_AIRFLOW_VERSION}, "
            f"but Airflow {installed} is installed: upgrade it (pip install 'apache-airflow>={MIN_AIRFLOW_VERSION}')."
        )


_require_supported_airflow()

DEFAULT_BASE_URL = "https://api.mindvideo.ai"
DEFAULT_CONN_ID = "mindvideo_default"
CONN_TYPE = "mindvideo"

# The connection form, declared (Airflow 3.2+ reads it from here without importing the hook).
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": ["schema", "login", "port"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {"host": DEFAULT_BASE_URL, "password": "mv_live_..."},
}
CONN_FIELDS: dict[str, Any] = {
    "timeout": {
        "label": "Request timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 30, "exclusiveMinimum": 0},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of 429, 5xx and network errors inside one call, with backoff.",
        "schema": {"type": ["integer", "null"], "default": 5, "minimum": 0},
    },
    "max_concurrency": {
        "label": "Max requests in flight",
        "description": "Per worker or triggerer process, across all tasks using this connection. Empty: no limit.",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "max_requests_per_second": {
        "label": "Max requests per second",
        "description": "Per worker or triggerer process; requests beyond it wait their turn. Empty: no limit.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "allow_insecure_http": {
        "label": "Allow plain http:// to a non-loopback host",
        "description": "Sends the API key unencrypted. Only for trusted private networks.",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
    "proxy": {
        "label": "Proxy URL",
        "description": "http(s)://[user:password@]host:port for every API call (worker and triggerer). "
        "Empty: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment.",
        "schema": {"type": ["string", "null"]},
    },
    "ca_bundle": {
        "label": "CA bundle path",
        "description": "A PEM file (or folder) of the CA certificates to trust, e.g. your company's "
        "TLS-inspecting proxy's. Empty: the usual public CAs.",
        "schema": {"type": ["string", "null"]},
    },
}


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-mindvideo",
        "name": "MindVideo",
        "description": "Generate images and videos with MindVideo from Airflow DAGs.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "MindVideo",
                "external-doc-url": "https://api.mindvideo.ai",
                "tags": ["service"],
            }
        ],
        "operators": [{"integration-name": "MindVideo", "python-modules": ["airflow_provider_mindvideo.operators"]}],
        "sensors": [{"integration-name": "MindVideo", "python-modules": ["airflow_provider_mindvideo.sensors"]}],
        "hooks": [{"integration-name": "MindVideo", "python-modules": ["airflow_provider_mindvideo.hooks"]}],
        "triggers": [
            {
                "integration-name": "MindVideo",
                "python-modules": ["airflow_provider_mindvideo.triggers", "airflow_provider_mindvideo.batch.trigger"],
            }
        ],
        "extra-links": [
            "airflow_provider_mindvideo.links.MindVideoOutputLink",
            "airflow_provider_mindvideo.links.MindVideoModelDocsLink",
            "airflow_provider_mindvideo.links.MindVideoGalleryLink",
        ],
        "config": {
            "mindvideo": {
                "description": "Options of the MindVideo provider.",
                "options": {
                    "allow_private_urls": {
                        "description": (
                            "Let output downloads (and their redirects) connect to loopback, private, "
                            "link-local and cloud-metadata addresses. Off by default, so that an output link "
                            "cannot make a worker read from its own network; turn it on for the bundled "
                            "emulator (127.0.0.1) or storage on a private network. The operators' "
                            "allow_private_urls / download_allow_private_urls parameter wins when given."
                        ),
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "True",
                        "default": "False",
                    },
                    "resume_not_before": {
                        "description": (
                            "Seconds that must pass between a deferral and the trigger event that resumes the "
                            "task on a worker. Airflow 3.2 and 3.3 fail a task resumed before the scheduler has "
                            "processed the exit of the try that deferred ('finished with state success, but the "
                            "task instance's state attribute is queued'); a remote task that ends sooner than "
                            "this after the deferral is reported this late. Read by the triggerer. 0 turns the "
                            "hold off (airflow dags test and dag.test() run triggers in line and need none)."
                        ),
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "5",
                        "default": "20",
                    },
                    "batch_lease_seconds": {
                        "description": (
                            "How long a batch trigger's hold on its batch (the lease beside its manifest) lasts "
                            "without renewal. A second run of the same trigger (two triggerers after a lost "
                            "heartbeat) waits for the first and fires its event; it takes the batch over when "
                            "the first stops renewing for this long (a crash, a frozen host). Read by the "
                            "triggerer; renewals go every quarter of it."
                        ),
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "60",
                        "default": "20",
                    },
                    "ui_enabled": {
                        "description": (
                            "Whether the API server serves the MindVideo pages (the spend page on the nav bar, "
                            "the generated-media gallery on each run and task instance) under /mindvideo. "
                            "False: the plugin adds no app and no links."
                        ),
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                    "batch_folder": {
                        "description": (
                            "Where MindVideoBatchGenerateOperator keeps work lists and manifests when a task "
                            "gives no result_path: an ObjectStoragePath URL; each task instance gets "
                            "<dag_id>/<run_id>/<task_id>[-<map_index>]/ below it. Workers and triggerers must "
                            "both reach it: use shared storage (s3://..., gs://...) when they run on "
                            "different machines. Empty: file://$AIRFLOW_HOME/mindvideo/batches."
                        ),
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://my-bucket/mindvideo/batches",
                        "default": "",
                    },
                    "ledger_conn_id": {
                        "description": (
                            "The Airflow connection (postgres, or sqlite with host = the file) of the spend "
                            "ledger that counts every create against the budgets in a MindVideo connection's "
                            "'budgets' extra. Every worker and triggerer connects to it itself; use postgres "
                            "when tasks run on several machines. Empty: the SQLite file "
                            "$AIRFLOW_HOME/mindvideo_ledger.db. Not opened while no connection has budgets."
                        ),
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "mindvideo_ledger",
                        "default": "",
                    },
                    "ledger_price_wait": {
                        "description": (
                            "Seconds a Submit, Generate or review regeneration waits for the one create in "
                            "flight of a model whose price no task has told yet (such a model goes alone under "
                            "a budget) before failing with a retryable ModelPriceUnknownError."
                        ),
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "60",
                        "default": "60",
                    },
                },
            }
        },
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "airflow_provider_mindvideo.hooks.MindVideoHook",
                "hook-name": "MindVideo",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": UI_FIELD_BEHAVIOUR["hidden_fields"],
                    "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
                    "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
                },
            }
        ],
    }

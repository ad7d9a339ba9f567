"""The Celery workers' configuration in `make e2e-distributed`: Airflow's, plus modules to preload.

scripts/e2e_distributed/deployment.py copies this file into ``$AIRFLOW_HOME/config`` (on Airflow's
``sys.path``) as ``e2e_distributed_celery_config.py`` and points ``[celery] celery_config_options``
at ``CELERY_CONFIG``.

Every task run forks from its Celery worker and parses its DAG's file there. Modules the
worker imported before forking its pool cost that run nothing; the others are imported anew
by every run: measured here, about 0.15 s of CPU for Airflow's ``@task`` decorators and 0.05 to
0.1 s for this provider's operators, against 0.5 to 0.6 s of CPU for a whole task run.
Celery's ``imports`` setting imports them once, when a worker starts (before it forks).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

# What the DAG files of the run import (the content pipeline's, the scenarios').
PRELOADED = (
    "airflow.sdk.definitions.decorators",
    "airflow_provider_mindvideo.operators",
    "airflow_provider_mindvideo.sensors",
)

CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CELERY_CONFIG,
    "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), *PRELOADED),
}

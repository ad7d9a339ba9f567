"""Shared test setup: a throwaway Airflow home, the emulator, and hooks that talk to it."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

# Airflow reads its home when first imported: point it at a throwaway folder before that.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="mindvideo-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# dag.test() syncs the DAG's bundle first, so the DAGs tests run (ours and the examples) must be
# files in the DAGs folder: link both into one.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DAGS_FOLDER = os.path.join(_AIRFLOW_HOME, "dags")
os.makedirs(_DAGS_FOLDER)
for _folder in ("tests/dags", "example_dags"):
    for _name in os.listdir(os.path.join(_ROOT, _folder)):
        if _name.endswith(".py") and not _name.startswith("_"):
            os.symlink(os.path.join(_ROOT, _folder, _name), os.path.join(_DAGS_FOLDER, _name))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = _DAGS_FOLDER
# Airflow's DAG processor and workers put the DAGs folder on sys.path (DAG files import helpers
# beside them by name, as the examples do mindvideo_example_prompts); tests importing the DAGs do too.
sys.path.append(_DAGS_FOLDER)
# The emulator serves output files on 127.0.0.1, which downloads refuse unless allowed. Tests of
# the refusal pass allow_private_urls=False (or set this to false) themselves.
os.environ["AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS"] = "true"
# dag.test() runs triggers in line, where Airflow's fast-resume race cannot happen: no hold
# (tests of the hold set it themselves; the real-Airflow clusters in tests/e2e drop this).
os.environ["AIRFLOW__MINDVIDEO__RESUME_NOT_BEFORE"] = "0"
# Test DAGs that save outputs to a folder fixed at parse time (so that it can be an asset) use this one.
os.environ["MINDVIDEO_TEST_DOWNLOADS"] = os.path.join(_AIRFLOW_HOME, "downloads")

import hypothesis  # noqa: E402
import pytest  # noqa: E402
import structlog  # noqa: E402
from airflow.sdk.execution_time import supervisor as _supervisor  # noqa: E402
from structlog.testing import capture_logs  # noqa: E402

from airflow_provider_mindvideo.client.protocol import RetryPolicy  # noqa: E402
from airflow_provider_mindvideo.emulator import MindVideoEmulator  # noqa: E402
from airflow_provider_mindvideo.hooks import MindVideoHook  # noqa: E402

pytest_plugins = ["airflow_provider_mindvideo.emulator.pytest_plugin"]

# Hypothesis fails an example that took over 200 ms by default: on a busy machine that is the
# load's doing, not the code's. No property here is about speed.
hypothesis.settings.register_profile("load_independent", deadline=None)
hypothesis.settings.load_profile("load_independent")

# Airflow 3.2's dag.test() builds its in-process execution API anew for every task try (5-12 s
# each on a busy 2-core machine); 3.3 builds it once per process (functools.lru_cache). The
# oldest supported release gets the same here, so that its run (`make test`) takes about as
# long as the newest's and the suite's timing bounds mean the same on both.
if not hasattr(_supervisor.in_process_api_server, "cache_info"):
    _supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(_supervisor.in_process_api_server)


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """The throwaway Airflow home, with its SQLite metadata database migrated."""
    import subprocess
    import sys
    from pathlib import Path

    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return _AIRFLOW_HOME


# Test modules whose outcome does not depend on the Airflow release: the client's own logic
# (protocol, catalog, budgets, limits, deadlines), the hook's HTTP behaviour against the emulator
# and hostile servers (Airflow's part there is a connection read from the environment, which the
# floor proves in tests/test_connection.py), files and pages. They run once, on the newest
# Airflow: `make unit-floor` deselects them (marker `one_airflow`, docs/testing.md). A module
# not listed here runs on both: a new module is version-sensitive until someone says otherwise.
# A `path::test` entry names one test of a module that otherwise runs on both.
ONE_AIRFLOW = frozenset(
    {
        # A hundred mapped generations: the scale is the client's; mapped dag.test() runs stay on
        # the floor in tests/test_dags.py.
        "tests/reliability/test_load_and_secrets.py::test_a_hundred_mapped_generations_under_a_rate_limit_pay_once_each",
        # `make demo` runs on .venv, the newest Airflow, only.
        "tests/test_demo.py",
        # The batch's own asyncio (leases, sharing the loop, two runs of one batch) and the ledger's
        # SQL (its rules, races, upgrades): no dag.test(), nothing the Airflow release changes.
        "tests/reliability/test_hostile_answers.py",
        "tests/spend/test_alone_across_processes.py",
        "tests/spend/test_engines.py",
        "tests/spend/test_ledger_races.py",
        "tests/spend/test_ledger_stateful.py",
        "tests/spend/test_schema_upgrade.py",
        "tests/spend/test_windows.py",
        "tests/test_batch_breaking.py",
        "tests/test_batch_lease.py",
        "tests/test_batch_sharing.py",
        "tests/test_batch_twice.py",
        "tests/test_batch_twice_processes.py",
        "tests/reliability/test_bad_input.py",
        "tests/reliability/test_batch_invariant.py",
        "tests/reliability/test_pay_once_invariant.py",
        "tests/test_batch.py",
        "tests/test_benchmark_figures.py",
        "tests/test_budget.py",
        "tests/test_catalog.py",
        "tests/test_deadlines.py",
        "tests/test_deploying_page.py",
        "tests/test_echoing_servers.py",
        "tests/test_emulator.py",
        "tests/test_hook.py",
        "tests/test_idempotency.py",
        "tests/test_limits.py",
        "tests/test_models.py",
        "tests/test_models_page.py",
        "tests/test_network.py",
        "tests/test_proxies_and_tls.py",
        "tests/test_request_checks.py",
        "tests/test_transports.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = os.path.relpath(item.path, _ROOT)
        if path in ONE_AIRFLOW or f"{path}::{getattr(item, 'originalname', item.name)}" in ONE_AIRFLOW:
            item.add_marker(pytest.mark.one_airflow)


FAST_RETRIES = RetryPolicy(max_retries=4, deadline=30.0, backoff=0.01, max_backoff=0.05)


@pytest.fixture
def emulator(mindvideo_connection: MindVideoEmulator) -> MindVideoEmulator:
    """The session's emulator, reset, with ``mindvideo_default`` pointing at it."""
    return mindvideo_connection


class Api:
    """The hook's API, called through the sync or the async path with the same signature."""

    def __init__(self, mode: str, hook: MindVideoHook) -> None:
        self.mode = mode
        self.hook = hook

    def _run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            return getattr(self.hook, name)(*args, **kwargs)

        async def call() -> Any:
            try:
                return await getattr(self.hook, "a" + name)(*args, **kwargs)
            finally:
                await self.hook.aclose()

        return asyncio.run(call())

    def create_task(self, *args: Any, **kwargs: Any) -> Any:
        return self._run("create_task", *args, **kwargs)

    def get_task(self, *args: Any, **kwargs: Any) -> Any:
        return self._run("get_task", *args, **kwargs)

    def get_task_events(self, *args: Any, **kwargs: Any) -> Any:
        return self._run("get_task_events", *args, **kwargs)


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, emulator: MindVideoEmulator) -> Iterator[Api]:
    hook = MindVideoHook(retry_policy=FAST_RETRIES)
    yield Api(request.param, hook)
    hook.close()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the hook's backoff sleeps instead of sleeping them (both paths)."""
    recorded: list[float] = []

    async def fake_async_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr("airflow_provider_mindvideo.hooks.sleep", recorded.append)
    monkeypatch.setattr("airflow_provider_mindvideo.hooks.async_sleep", fake_async_sleep)
    return recorded


@pytest.fixture
def debug_logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event (Airflow's task and hook loggers), debug level included."""
    previous = structlog.get_config()["wrapper_class"]
    with capture_logs() as logs:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
        try:
            yield logs
        finally:
            structlog.configure(wrapper_class=previous)

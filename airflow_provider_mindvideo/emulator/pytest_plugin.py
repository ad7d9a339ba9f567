"""Pytest fixtures for testing your DAGs against the emulator.

Enable with ``pytest_plugins = ["airflow_provider_mindvideo.emulator.pytest_plugin"]`` in your
``conftest.py``. ``mindvideo_emulator`` runs one emulator per session and resets it before each
test; ``mindvideo_connection`` also points ``mindvideo_default`` at it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_mindvideo.emulator.server import MindVideoEmulator
from airflow_provider_mindvideo.emulator.state import EmulatorConfig


@pytest.fixture(scope="session")
def _mindvideo_emulator_server() -> Iterator[MindVideoEmulator]:
    with MindVideoEmulator(
        config=EmulatorConfig(queued_seconds=0.05, processing_seconds={"image": 0.2, "video": 0.5})
    ) as emulator:
        yield emulator


@pytest.fixture
def mindvideo_emulator(_mindvideo_emulator_server: MindVideoEmulator) -> MindVideoEmulator:
    _mindvideo_emulator_server.state.reset()
    return _mindvideo_emulator_server


@pytest.fixture
def mindvideo_connection(mindvideo_emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> MindVideoEmulator:
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_DEFAULT", mindvideo_emulator.connection_uri())
    # dag.test() runs triggers in line: Airflow's fast-resume race cannot happen there, so the
    # triggers need not hold a quick event back (resume.py).
    monkeypatch.setenv("AIRFLOW__MINDVIDEO__RESUME_NOT_BEFORE", "0")
    return mindvideo_emulator

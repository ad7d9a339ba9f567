"""A local MindVideo API: the same contract, no network, no charges.

Run it with ``python -m airflow_provider_mindvideo.emulator --port 8765`` (or the
``mindvideo-emulator`` command), or in-process with :class:`MindVideoEmulator` or the pytest
fixture in :mod:`airflow_provider_mindvideo.emulator.pytest_plugin`.

Nothing in the provider's runtime path imports this package.
"""

from airflow_provider_mindvideo.emulator.server import MindVideoEmulator
from airflow_provider_mindvideo.emulator.state import (
    DEFAULT_API_KEY,
    EmulatorConfig,
    EmulatorState,
    Fault,
    Script,
)

__all__ = ["DEFAULT_API_KEY", "EmulatorConfig", "EmulatorState", "Fault", "MindVideoEmulator", "Script"]

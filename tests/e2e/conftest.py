"""Real Airflow processes: each test here is marked ``e2e`` and gets a longer safety-net timeout.

The suite's 300 s (pyproject.toml) bounds a hung test. Here the first test of a module also pays
for its cluster's start (migrate, four components, the first parse), and every wait is for real
processes: on a machine busy with other work that took past 300 s with nothing wrong. The waits
inside the tests end on conditions, never on time; this only stops a test that hangs.
"""

from __future__ import annotations

import pytest

E2E_TIMEOUT = 1200


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT))

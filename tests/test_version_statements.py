"""Every version the README and the docs state agrees with pyproject.toml and with what `make test` runs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import airflow

ROOT = Path(__file__).resolve().parents[1]
#: What a reader is told: the README and the docs, without the changelog (history, not promises).
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "changelog.md")]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PYTHON_FLOOR = PROJECT["requires-python"].removeprefix(">=")
(AIRFLOW_FLOOR,) = [d.split(">=")[1] for d in PROJECT["dependencies"] if d.startswith("apache-airflow>=")]


def statements(pattern: str) -> list[tuple[str, str]]:
    """(page, version) for every match of ``pattern``'s one group on every page."""
    return [(page.name, match) for page in PAGES for match in re.findall(pattern, page.read_text().replace("\n", " "))]


def test_the_makefile_tests_the_floor_pyproject_names() -> None:
    floor = subprocess.run(["make", "-s", "airflow-floor"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert floor.stdout.strip() == AIRFLOW_FLOOR


def test_every_python_version_stated_is_the_one_pyproject_requires() -> None:
    stated = statements(r"Python (3\.\d+)(?:\+| or newer)")
    assert stated, "the README states the Python it needs"
    assert {version for _, version in stated} == {PYTHON_FLOOR}, stated


def test_every_airflow_floor_stated_is_the_one_pyproject_requires() -> None:
    pins = statements(r"apache-airflow\s*>=\s*([0-9][0-9.]*)")
    newer = statements(r"Airflow (3\.[0-9.]+) or newer")
    assert pins and newer
    assert {version for _, version in pins} == {AIRFLOW_FLOOR}, pins
    assert {version for _, version in newer} <= {AIRFLOW_FLOOR, AIRFLOW_FLOOR.rsplit(".", 1)[0]}, newer


def test_the_tested_versions_name_the_floor_and_the_airflow_the_suite_runs_on() -> None:
    deploying = (ROOT / "docs" / "deploying.md").read_text()
    (row,) = [line for line in deploying.splitlines() if line.startswith("| Apache Airflow |")]
    assert AIRFLOW_FLOOR in row
    # `make test` runs on the newest Airflow and on the floor: whichever this run is, the page names it.
    assert airflow.__version__ in row, f"docs/deploying.md does not list Airflow {airflow.__version__}: {row}"
    (python_row,) = [line for line in deploying.splitlines() if line.startswith("| Python |")]
    assert PYTHON_FLOOR in python_row


def test_the_readme_install_lines_keep_the_installed_airflow() -> None:
    # Without a pin, pip may upgrade Airflow (a database migration) to satisfy the provider's floor.
    readme = (ROOT / "README.md").read_text()
    install = readme[readme.index("## Install") : readme.index("## Connection")]
    lines = [line for line in install.splitlines() if line.startswith("pip install ")]
    assert lines and all('"apache-airflow==${AIRFLOW_VERSION}"' in line for line in lines), lines

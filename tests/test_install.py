"""What the README's install section says works: the built wheel in a clean venv, next to Airflow.

Slow (a venv, Airflow and its ~150 dependencies: about 3 minutes here), so it runs only with
``MINDVIDEO_INSTALL_TEST=1``. Airflow is installed at this venv's versions, pinned, so the
resolver has nothing to search and the test is about the wheel, not about PyPI that day.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.test_packaging import build_wheel

pytestmark = pytest.mark.skipif(
    os.environ.get("MINDVIDEO_INSTALL_TEST") != "1", reason="slow (about 3 minutes): set MINDVIDEO_INSTALL_TEST=1"
)


def run(*args: str | Path, **kwargs: object) -> str:
    done = subprocess.run([str(a) for a in args], check=False, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)


@pytest.mark.timeout(1800)
def test_the_wheel_installs_into_a_clean_venv_and_airflow_lists_it(tmp_path: Path) -> None:
    wheel, _ = build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    # Not --system-site-packages: nothing of this checkout's venv may leak in.
    run(getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv)
    pins = tmp_path / "pins.txt"
    frozen = run(sys.executable, "-m", "pip", "freeze", "--exclude-editable").splitlines()
    pins.write_text("\n".join(line for line in frozen if not line.lower().startswith("airflow-provider-mindvideo")))
    airflow = f"apache-airflow=={version('apache-airflow')}"
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--constraint", pins, airflow, wheel)

    # From a folder that is not the checkout, so that only the installed wheel can be imported.
    code = (
        "import airflow_provider_mindvideo as p, airflow_provider_mindvideo.operators, "
        "airflow_provider_mindvideo.emulator; print(p.__file__, p.__version__)"
    )
    where, installed = run(venv / "bin" / "python", "-c", code, cwd=tmp_path).split()
    assert where.startswith(str(venv))
    assert installed == version("airflow-provider-mindvideo")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow-home")}
    listed = json.loads(run(venv / "bin" / "airflow", "providers", "list", "-o", "json", env=env, cwd=tmp_path))
    assert {"package_name": "airflow-provider-mindvideo", "version": installed} in [
        {k: p[k] for k in ("package_name", "version")} for p in listed
    ]

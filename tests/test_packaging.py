"""The distribution: wheel contents, registration with Airflow, the connection type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest

import airflow_provider_mindvideo
from airflow_provider_mindvideo import get_provider_info

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def build_wheel(outdir: Path) -> tuple[Path, str]:
    """The provider's wheel, built from this checkout, and everything the build printed."""
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(outdir), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = outdir.glob("airflow_provider_mindvideo-*.whl")
    return wheel, built.stdout + built.stderr


def test_wheel_carries_schemas_and_py_typed(tmp_path: Path) -> None:
    wheel, _ = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "airflow_provider_mindvideo/py.typed" in names
    assert "airflow_provider_mindvideo/schemas/gpt-image-2.json" in names
    assert "airflow_provider_mindvideo/emulator/app.py" in names
    assert not [n for n in names if n.startswith(("tests/", "example_dags/"))]
    metadata = next(n for n in names if n.endswith("entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = airflow_provider_mindvideo:get_provider_info" in entry_points


def test_license_is_an_spdx_expression_and_the_build_warns_about_nothing(tmp_path: Path) -> None:
    # setuptools deprecates the license table and license classifiers: `make setup` printed the
    # warning three times. The metadata now says it the standard way (PEP 639).
    wheel, output = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    assert "Classifier: License ::" not in metadata
    assert "deprecated" not in output.lower(), output


def test_provider_info_is_valid_for_airflow() -> None:
    schema_path = Path(sys.modules["airflow"].__file__).with_name("provider_info.schema.json")  # type: ignore[arg-type]
    jsonschema.validate(get_provider_info(), json.loads(schema_path.read_text()))
    assert get_provider_info()["versions"] == [airflow_provider_mindvideo.__version__]


def test_airflow_sees_the_provider_and_connection_type() -> None:
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManagerTaskRuntime()
    assert "airflow-provider-mindvideo" in manager.providers
    hook = manager.hooks["mindvideo"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_mindvideo.hooks.MindVideoHook"
    assert hook.connection_id_attribute_name == "mindvideo_conn_id"


@pytest.fixture(scope="module")
def migrated_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, "AIRFLOW_HOME": str(home)}
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    return env


def test_airflow_cli_lists_provider_and_creates_a_connection(migrated_home: dict[str, str]) -> None:
    listed = subprocess.run(
        [AIRFLOW, "providers", "list", "-o", "json"], env=migrated_home, check=True, capture_output=True, text=True
    )
    assert "airflow-provider-mindvideo" in listed.stdout
    subprocess.run(
        [
            AIRFLOW,
            "connections",
            "add",
            "mindvideo_cli",
            "--conn-type",
            "mindvideo",
            "--conn-host",
            "https://api.mindvideo.ai",
            "--conn-password",
            "mv_live_cli_secret",
        ],
        env=migrated_home,
        check=True,
        capture_output=True,
    )
    shown = subprocess.run(
        [AIRFLOW, "connections", "get", "mindvideo_cli", "-o", "json"],
        env=migrated_home,
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(shown.stdout)[0]["conn_type"] == "mindvideo"


def test_importing_the_package_imports_nothing_heavy() -> None:
    code = "import sys, airflow_provider_mindvideo; print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'httpx', 'jsonschema', 'fastapi')))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"

"""The distribution: wheel contents, registration with Airflow, the connection type."""

from __future__ import annotations

import json
import os
import re
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
FLOOR = airflow_provider_mindvideo.MIN_AIRFLOW_VERSION


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
    # The UI plugin and every file its pages load (nothing comes from the internet).
    assert "mindvideo = airflow_provider_mindvideo.ui.plugin:MindVideoPlugin" in entry_points
    from airflow_provider_mindvideo.ui.app import STATIC_FILES

    assert {f"airflow_provider_mindvideo/ui/static/{name}" for name in STATIC_FILES} <= names


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
    # Airflow 3.2 logs its plugin setup to stdout ahead of the JSON, which is the last line.
    assert json.loads(shown.stdout.splitlines()[-1])[0]["conn_type"] == "mindvideo"


def test_importing_the_package_imports_nothing_heavy() -> None:
    code = "import sys, airflow_provider_mindvideo; print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'httpx', 'jsonschema', 'fastapi')))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_a_dag_file_importing_one_operator_pays_for_that_one_only() -> None:
    # DAG files import the operators at every parse: the generate operator's module must not pull
    # in the other operators, the HTTP client, the models or the trigger (imported when a task runs).
    code = (
        "import sys\n"
        "from airflow_provider_mindvideo.operators import MindVideoGenerateOperator\n"
        "heavy = ('operators.batch', 'operators.review', 'operators.download', 'hooks', 'triggers', 'models',"
        " 'protocol', 'downloads')\n"
        "print(sorted(m for m in sys.modules if m.startswith('airflow_provider_mindvideo.') and"
        " m.split('.', 1)[1] in heavy))\n"
        "print('airflow.providers.standard.operators.hitl' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.splitlines() == ["[]", "False"]


def test_every_operator_name_still_imports_from_the_package() -> None:
    import airflow_provider_mindvideo.operators as operators

    assert sorted(operators.__all__) == sorted(operators._HOMES)
    for name in operators.__all__:
        assert getattr(operators, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'MindVideoNoSuchOperator'"):
        operators.MindVideoNoSuchOperator  # noqa: B018


def _import_with_airflow(version: str, module: str = "airflow_provider_mindvideo") -> subprocess.CompletedProcess[str]:
    """Import ``module`` in a fresh interpreter whose already-imported Airflow says ``version``."""
    code = (
        "import sys, types\n"
        "fake = types.ModuleType('airflow')\n"
        f"fake.__version__ = {version!r}\n"
        "sys.modules['airflow'] = fake\n"
        f"import {module}\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("version", ["3.0.6", "3.1.8", "3.1.9.dev0", "2.11.0"])
def test_older_airflow_fails_on_import_naming_both_versions(version: str) -> None:
    # The hook's module would otherwise die on the first missing airflow.sdk name, cryptically.
    imported = _import_with_airflow(version, "airflow_provider_mindvideo.hooks")
    assert imported.returncode == 1
    last_line = imported.stderr.strip().splitlines()[-1]
    assert last_line == (
        f"airflow_provider_mindvideo.UnsupportedAirflowVersionError: airflow-provider-mindvideo "
        f"{airflow_provider_mindvideo.__version__} needs apache-airflow>={FLOOR}, but Airflow {version} is installed: "
        f"upgrade it (pip install 'apache-airflow>={FLOOR}')."
    )


# A pre-release or dev build of the floor counts as the floor, as in Airflow's own providers.
@pytest.mark.parametrize("version", [FLOOR, f"{FLOOR}rc2", f"{FLOOR}.dev0", "3.3.2", "3.4.0.dev0", "4.0.0"])
def test_floor_and_newer_airflow_pass_the_check(version: str) -> None:
    imported = _import_with_airflow(version)
    assert (imported.returncode, imported.stderr) == (0, "")


def test_check_reads_the_installed_distribution_when_airflow_is_not_imported_yet(tmp_path: Path) -> None:
    # Imported before Airflow, the package asks the metadata instead of importing Airflow (slow).
    info = tmp_path / "apache_airflow-3.1.8.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: apache-airflow\nVersion: 3.1.8\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    code = "import airflow_provider_mindvideo"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert imported.returncode == 1
    assert f"needs apache-airflow>={FLOOR}, but Airflow 3.1.8 is installed" in imported.stderr
    assert "UnsupportedAirflowVersionError" in imported.stderr


def test_declared_tested_and_checked_floors_are_one() -> None:
    assert re.findall(r'"apache-airflow>=([^"]*)"', (ROOT / "pyproject.toml").read_text()) == [FLOOR]
    # The release `make test` builds its second environment with, read from pyproject.toml.
    tested = subprocess.run(["make", "-s", "airflow-floor"], cwd=ROOT, check=True, capture_output=True, text=True)
    assert tested.stdout.strip() == FLOOR


def test_make_setup_keeps_the_editable_installation_banner_out_and_pips_own_errors_in() -> None:
    # `make demo` printed setuptools' boxed "Editable installation" warning on a fresh machine.
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    definition = makefile.split("QUIET_PIP := ", 1)[1].split("\n\n", 1)[0].replace("\\\n", "\n").replace("$$", "$")
    pip_output = (
        "WARNING: Location '/wheels' is ignored: it is neither a file nor a directory.\n"
        "  /tmp/pip-build-env-x/overlay/lib/python3.11/site-packages/setuptools/command/editable_wheel.py:354: "
        "BuildBackendWarning: Editable installation.\n"
        "  !!\n\n          ****\n          Please be careful with folders in your working directory\n          ****\n\n"
        "  !!\n"
        "ERROR: No matching distribution found for nothing-such\n"
    )
    shown = subprocess.run(["bash", "-c", definition], input=pip_output, capture_output=True, text=True, check=True)
    assert shown.stdout == "ERROR: No matching distribution found for nothing-such\n"

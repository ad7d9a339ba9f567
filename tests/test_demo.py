"""`make demo` (scripts/demo.py) as a first-time user meets it: a real key offline, a failed run, a good one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_provider_mindvideo.emulator import MindVideoEmulator

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


def demo(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    settings = {**os.environ, "MINDVIDEO_DEMO_HOME": str(home), **env}
    settings.pop("AIRFLOW_HOME", None)  # the demo keeps its own, under its home
    return subprocess.run([sys.executable, str(DEMO)], env=settings, capture_output=True, text=True, timeout=600)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A demo home holding the images of an earlier, successful demo."""
    (tmp_path / "demo-output").mkdir()
    (tmp_path / "demo-output" / "task_earlier_0.png").write_bytes(b"\x89PNG earlier")
    return tmp_path


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends: nothing listens


def test_a_real_key_offline_fails_fast_with_the_cause_and_keeps_earlier_images(home: Path) -> None:
    # Was: 189 s of retries, "No summary was produced", and the earlier demo's images deleted.
    # The retries were Airflow's: that no Airflow database was made proves they never started,
    # and the check before it is one try (test_connection has max_retries=0). No wall-clock
    # bound, which a busy machine would stretch.
    result = demo(
        home, MINDVIDEO_API_KEY="mv_live_offline_secret", MINDVIDEO_BASE_URL=f"http://127.0.0.1:{closed_port()}"
    )
    assert result.returncode == 1
    assert "Could not reach MindVideo" in result.stderr
    assert "Connection refused" in result.stderr
    assert "Nothing was created or charged" in result.stderr
    assert "mv_live_offline_secret" not in result.stdout + result.stderr
    assert (home / "demo-output" / "task_earlier_0.png").read_bytes() == b"\x89PNG earlier"
    assert not (home / ".airflow" / "airflow.db").exists()  # gave up before preparing Airflow


def test_a_refused_key_fails_fast_too(home: Path, mindvideo_emulator: MindVideoEmulator) -> None:
    result = demo(home, MINDVIDEO_API_KEY="mv_live_wrong", MINDVIDEO_BASE_URL=mindvideo_emulator.base_url)
    assert result.returncode == 1
    assert "MindVideo refused the API key" in result.stderr
    assert sum(mindvideo_emulator.state.requests.values()) == 1  # the one look-up, no creation
    assert mindvideo_emulator.state.charged_tasks == 0


def test_a_failed_run_prints_its_cause_and_keeps_earlier_images_then_a_good_run_replaces_them(
    home: Path, mindvideo_emulator: MindVideoEmulator
) -> None:
    settings = {"MINDVIDEO_API_KEY": mindvideo_emulator.api_key, "MINDVIDEO_BASE_URL": mindvideo_emulator.base_url}
    mindvideo_emulator.add_fault("status", route="create", status=422, times=1000)
    failed = demo(home, **settings)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "ended failed" in failed.stdout
    assert "Failed tasks: submit[0], submit[1], submit[2], submit[3], submit[4]\n" in failed.stderr
    assert "InputValidationError: " in failed.stderr
    assert failed.stderr.count("InputValidationError: ") == 1  # five mapped tasks, one cause
    assert "demo-output/ are kept" in failed.stderr
    assert sorted(p.name for p in (home / "demo-output").iterdir()) == ["task_earlier_0.png"]

    httpx.post(f"{mindvideo_emulator.base_url}/_emulator/reset")
    succeeded = demo(home, **settings)
    assert succeeded.returncode == 0, succeeded.stdout + succeeded.stderr
    images = sorted((home / "demo-output").glob("*.png"))
    assert len(images) == 5
    assert "task_earlier_0.png" not in [p.name for p in images]
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n") for p in images)
    assert all(p.name in succeeded.stdout for p in images)
    assert mindvideo_emulator.state.charged_tasks == 5

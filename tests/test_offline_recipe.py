"""The README's "Test your DAGs offline" recipe runs as written, in a fresh folder with nothing of this project's test setup."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE_BLOCK = re.compile(r"^```python\n# ([\w/]+\.py)\n(.*?)^```", re.S | re.M)


def recipe(page: Path, section: str) -> dict[str, str]:
    """The files a page's section shows, by the path their first line names."""
    text = page.read_text()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    return {path: f"# {path}\n{body}" for path, body in FILE_BLOCK.findall(text[start : end if end > 0 else None])}


def test_the_readme_recipe_runs_as_written_in_a_fresh_folder(tmp_path: Path) -> None:
    files = recipe(ROOT / "README.md", "## Test your DAGs offline")
    assert sorted(files) == ["conftest.py", "dags/my_images.py", "test_my_images.py"]
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    # A user's shell: none of this suite's Airflow settings (its home, DAGs folder, options).
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout


def test_the_emulator_page_shows_the_same_conftest() -> None:
    readme = recipe(ROOT / "README.md", "## Test your DAGs offline")["conftest.py"]
    assert recipe(ROOT / "docs" / "emulator.md", "## In your tests")["conftest.py"] == readme

"""The docs cannot rot: every Python block in them runs, and every shell block parses."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from airflow_provider_mindvideo.emulator import MindVideoEmulator

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for number, (lang, code) in enumerate(BLOCK.findall(page.read_text()), 1):
            if lang == language:
                found.append((f"{page.relative_to(ROOT)}#{number}", code))
    return found


def test_every_page_is_linked_from_the_index() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        if page.name != "index.md":
            assert str(page.relative_to(ROOT / "docs")) in index, page


def test_relative_links_resolve() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def is_file(code: str) -> bool:
    """A block that is a file of a recipe (its first line names it, ``# conftest.py``): tests/test_offline_recipe.py runs those."""
    return re.match(r"# [\w/]+\.py\n", code) is not None


@pytest.mark.parametrize(
    ("where", "code"),
    [(w, c) for w, c in blocks("python") if not is_file(c)],
    ids=[w for w, c in blocks("python") if not is_file(c)],
)
def test_python_blocks_run(where: str, code: str, emulator: MindVideoEmulator) -> None:
    # Blocks run in a namespace that has what the surrounding prose names: a running emulator.
    exec(compile(code, where, "exec"), {"__name__": "docs_example", "emulator": emulator})


@pytest.mark.parametrize(("where", "code"), blocks("bash"), ids=[w for w, _ in blocks("bash")])
def test_shell_blocks_parse(where: str, code: str) -> None:
    subprocess.run(["bash", "-n"], input=code, text=True, check=True)


def test_connection_env_var_and_cli_forms_work(airflow_db: str, emulator: MindVideoEmulator, tmp_path: Path) -> None:
    from airflow_provider_mindvideo.hooks import MindVideoHook

    # The JSON form the docs show, with the emulator's address and key swapped in.
    (documented,) = [c for w, c in blocks("bash") if "connection.md" in w and "extra" in c]
    value = json.loads(documented.split("=", 1)[1].strip().strip("'"))
    value.update(host=emulator.base_url, password=emulator.api_key)
    os.environ["AIRFLOW_CONN_MINDVIDEO_DOCS"] = json.dumps(value)
    try:
        hook = MindVideoHook("mindvideo_docs")
        assert hook.settings.timeout == 60
        assert hook.settings.max_retries == 3
        assert hook.test_connection()[0]
    finally:
        del os.environ["AIRFLOW_CONN_MINDVIDEO_DOCS"]

"""Sphinx configuration for ``make docs``: the Markdown pages (MyST) and an API reference from the docstrings.

Sphinx rather than MkDocs: the docstrings are reStructuredText with Sphinx roles (``:param:``,
``:class:``, ``:doc:``), as Airflow's own provider docs are, so autodoc renders them as written;
MyST brings the Markdown pages in unchanged, and they stay readable on a code host as plain
Markdown. Built with warnings as errors, so a broken link or an unknown reference fails the build.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
# autodoc imports the provider, which imports Airflow: keep Airflow's home out of the user's.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="mindvideo-docs-airflow-"))

import airflow_provider_mindvideo  # noqa: E402

# Imported here, before autodoc: first imported by autodoc, FastAPI's own pydantic models fail to
# build ("The type annotation for `__pydantic_extra__` must be `dict[str, ...]`").
import airflow_provider_mindvideo.emulator.app  # noqa: E402

project = "airflow-provider-mindvideo"
release = version = airflow_provider_mindvideo.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
html_title = f"{project} {release}"
#: Labels the docstrings refer to (``:ref:`howto/connection:mindvideo```, as Airflow's providers spell
#: them), by the page they name: added when the page is read, so the Markdown stays plain.
LABELS = {"connection": "howto/connection:mindvideo"}
#: Repository files outside docs/ that pages link to, each published as the page that points at it.
PUBLISHED = {"changelog": ROOT / "CHANGELOG.md", "benchmarks": ROOT / "benchmarks" / "results.md"}


def _pages_in_index_order() -> list[str]:
    """Every page the index links to, in its order: the site's navigation is the index's table."""
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    return list(dict.fromkeys(re.findall(r"\]\(([\w/.-]+)\.md\)", index)))


def _is_old_path(name: str) -> bool:
    """A module kept only so that an old import path works: the reference documents its new home."""
    return (importlib.import_module(name).__doc__ or "").startswith("Moved to ")


def _undocumented_modules(page: str) -> list[str]:
    """Modules of the package that ``page`` does not document yet, so that the reference misses none."""
    names = [
        module.name
        for module in pkgutil.walk_packages(airflow_provider_mindvideo.__path__, "airflow_provider_mindvideo.")
        if not module.name.endswith("__main__") and not _is_old_path(module.name)
    ]
    return [name for name in ["airflow_provider_mindvideo", *names] if f"automodule:: {name}\n" not in page]


def _published_links(docname: str, text: str) -> str:
    """Links to :data:`PUBLISHED` files, pointed at the pages that publish them."""
    folder = (DOCS / docname).parent
    pages = {path.resolve(): DOCS / f"{name}.md" for name, path in PUBLISHED.items()}

    def relink(match: re.Match[str]) -> str:
        page = pages.get((folder / match.group(1)).resolve())
        return f"]({os.path.relpath(page, folder)}{match.group(2) or ''})" if page else match.group(0)

    return re.sub(r"\]\(([^)#:]+\.md)(#[^)]*)?\)", relink, text)


def _complete(app: Any, docname: str, source: list[str]) -> None:
    if docname in PUBLISHED:
        included = os.path.relpath(PUBLISHED[docname], (DOCS / docname).parent)
        source[0] = f"```{{include}} {included}\n```\n"
        return
    source[0] = _published_links(docname, source[0])
    if docname in LABELS:
        source[0] = f"({LABELS[docname]})=\n{source[0]}"
    if docname == "index":
        toctree = "\n".join(_pages_in_index_order())
        source[0] += f"\n\n```{{toctree}}\n:hidden:\n\n{toctree}\n```\n"
    elif docname == "reference":
        rest = "".join(f".. automodule:: {name}\n\n" for name in _undocumented_modules(source[0]))
        if rest:
            source[0] += f"\n\n## Other modules\n\n```{{eval-rst}}\n{rest}```\n"


def setup(app: Any) -> None:
    app.connect("source-read", _complete)

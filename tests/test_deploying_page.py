"""docs/deploying.md carries the figures `make e2e-distributed` measures, between its markers.

The numbers are the run's to write; this checks only that the place for them exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def script_markers() -> dict[str, str]:
    # Read from the script's source: it imports psycopg2, installed only in .venv-dist.
    tree = ast.parse((ROOT / "scripts" / "e2e_distributed" / "report.py").read_text())
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("BEGIN_MARKER", "END_MARKER")
    }


def test_the_figures_have_their_markers_once_and_in_order() -> None:
    markers = script_markers()
    page = (ROOT / "docs" / "deploying.md").read_text()
    begin, end = markers["BEGIN_MARKER"], markers["END_MARKER"]
    assert page.count(begin) == 1, begin
    assert page.count(end) == 1, end
    assert page.index(begin) < page.index(end)
    assert "## Measured on a distributed deployment" in page[: page.index(begin)]

"""The package's rooms, read from its source with ``ast``: no import cycles, and each room imports only what it may.

Every import counts -- at module level, inside a function (a lazy import), under
``TYPE_CHECKING`` -- since each is a dependency a reader has to follow, and a lazy import
between two modules that import each other is a cycle postponed, not removed. Importing
``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so it counts as importing those too
(except the packages the importing module is in: they ran before it).
Shims (the old flat paths, a docstring and star imports) are left out: they only point at new homes.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import airflow_provider_mindvideo

PACKAGE = "airflow_provider_mindvideo"
ROOT = Path(airflow_provider_mindvideo.__file__).parent

#: What each room may import of this package (besides itself and the root package's constants).
MAY_IMPORT: dict[str, set[str]] = {
    "client": set(),
    "spend": {"client"},
    "review": {"client"},
    "outputs": {"client"},
    "batch": {"client", "outputs", "spend", "hooks", "resume"},
    "ui": {"client", "spend", "review", "outputs", "batch"},
}
#: The one part of Airflow the client core imports: the base classes of its errors, so that
#: Airflow fails a task at once on a permanent error (AirflowFailException) instead of retrying.
CLIENT_MAY_IMPORT_FROM_AIRFLOW = {"airflow.sdk.exceptions"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_shim(tree: ast.Module, path: Path) -> bool:
    body = [node for node in tree.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    return (
        path.name != "__init__.py"
        and bool(body)
        and all(isinstance(node, ast.ImportFrom) and [a.name for a in node.names] == ["*"] for node in body)
    )


def _imported(module: str, path: Path, tree: ast.Module) -> set[str]:
    """Every module ``module`` imports: ours by their module name (and their packages), others' as written."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # ``from a import b``: b is a module when a module of that name exists.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in SOURCES else base for a in node.names]
        else:
            continue
        for name in names:
            found.add(name)
            if name.startswith(PACKAGE):
                parts = name.split(".")
                found.update(".".join(parts[:end]) for end in range(1, len(parts)))
    # The packages holding ``module`` ran before it did: importing a sibling runs no __init__ again.
    return {name for name in found if name != module and not module.startswith(f"{name}.")}


TREES = {module: ast.parse(path.read_text(), str(path)) for module, path in SOURCES.items()}
SHIMS = {module for module, tree in TREES.items() if _is_shim(tree, SOURCES[module])}
IMPORTS = {module: _imported(module, SOURCES[module], tree) for module, tree in TREES.items()}


def _room(module: str) -> str | None:
    """The room (subpackage) or top-level module of ours that ``module`` is in; None for the root package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _ours(imported: set[str]) -> set[str]:
    return {name for name in imported if name.startswith(f"{PACKAGE}.") and name in SOURCES}


def test_the_reader_sees_the_package() -> None:
    # A reader that found nothing would pass every test below.
    assert f"{PACKAGE}.client.protocol" in SOURCES
    assert f"{PACKAGE}.client.errors" in IMPORTS[f"{PACKAGE}.client.protocol"]
    # A lazy import, inside a method, is seen.
    assert f"{PACKAGE}.hooks" in IMPORTS[f"{PACKAGE}.batch.trigger"]
    assert f"{PACKAGE}.errors" in SHIMS
    assert f"{PACKAGE}.batch" not in SHIMS  # a room's __init__ is read like any module


def test_no_import_cycles() -> None:
    graph = {m: _ours(found) - SHIMS for m, found in IMPORTS.items() if m not in SHIMS}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_client_core_knows_no_airflow_and_no_other_room() -> None:
    wrong = {}
    for module, found in sorted(IMPORTS.items()):
        if _room(module) != "client":
            continue
        bad = sorted(
            name
            for name in found
            if (name == "airflow" or name.startswith("airflow."))
            and name not in CLIENT_MAY_IMPORT_FROM_AIRFLOW
            and not any(name.startswith(f"{allowed}.") for allowed in CLIENT_MAY_IMPORT_FROM_AIRFLOW)
        )
        bad += sorted(n for n in _ours(found) if _room(n) != "client" and n not in (PACKAGE, f"{PACKAGE}.client"))
        if bad:
            wrong[module] = bad
    assert wrong == {}


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_rooms_import_only_what_their_docstring_allows(room: str) -> None:
    allowed = {room, *MAY_IMPORT[room]}
    wrong = {
        module: sorted(n for n in _ours(found) if n != PACKAGE and _room(n) not in allowed)
        for module, found in IMPORTS.items()
        if _room(module) == room
    }
    assert {m: bad for m, bad in wrong.items() if bad} == {}
    assert importlib.import_module(f"{PACKAGE}.{room}").__doc__, f"{room}/__init__.py says what lives there"


def test_nothing_on_the_runtime_path_imports_the_emulator() -> None:
    emulator = f"{PACKAGE}.emulator"
    wrong = {
        module: sorted(n for n in found if n == emulator or n.startswith(f"{emulator}."))
        for module, found in IMPORTS.items()
        if not (module == emulator or module.startswith(f"{emulator}."))
    }
    assert {m: bad for m, bad in wrong.items() if bad} == {}


@pytest.mark.parametrize("shim", sorted(SHIMS))
def test_every_old_path_still_imports_its_names(shim: str) -> None:
    old = importlib.import_module(shim)
    (home,) = {node.module for node in TREES[shim].body if isinstance(node, ast.ImportFrom)}
    assert home is not None
    new = importlib.import_module(home)
    public = {name for name in vars(new) if not name.startswith("_")}
    if hasattr(new, "__all__"):
        public = set(new.__all__)
    missing = sorted(name for name in public if getattr(old, name, None) is not getattr(new, name))
    assert missing == []


def test_triggers_stored_by_an_older_version_still_load() -> None:
    # The metadata DB holds triggers by the classpath serialize() returned: the old public paths.
    from airflow_provider_mindvideo.batch.trigger import MindVideoBatchTrigger
    from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger

    for trigger in (
        MindVideoBatchTrigger("file:///tmp/work.jsonl", "file:///tmp/result"),
        MindVideoTaskTrigger("task_1"),
    ):
        classpath, kwargs = trigger.serialize()
        module, _, name = classpath.rpartition(".")
        assert classpath in {
            "airflow_provider_mindvideo.batch_trigger.MindVideoBatchTrigger",
            "airflow_provider_mindvideo.triggers.MindVideoTaskTrigger",
        }
        assert getattr(importlib.import_module(module), name) is type(trigger)
        assert type(getattr(importlib.import_module(module), name)(**kwargs)) is type(trigger)

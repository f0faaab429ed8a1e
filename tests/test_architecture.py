"""The package reads like the data flow, and no module depends on being imported in some order.

exploration -> backends -> interposers -> engine -> history, with checkers and report read by the
exploration and reading the history; target, contract, verdict and hooks (the user's
description) sit under everything.  These tests keep it so: no import cycle between modules or
between concept packages (imports under ``if TYPE_CHECKING:`` aside), a concept package imports
only the ones below it, and every module imports alone in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import pytest_cachecheck

PACKAGE = Path(pytest_cachecheck.__file__).parent
DESCRIPTION = "description"  # target, contract, verdict, hooks: what the user writes
BELOW = {
    # each concept package and what it may import (besides itself)
    "exploration": {"backends", "interposers", "engine", "history", "checkers", "report", DESCRIPTION},
    "backends": {"interposers", "engine", "history", DESCRIPTION},
    "interposers": {"engine", "history", DESCRIPTION},
    "engine": {"history", DESCRIPTION},
    "checkers": {"history", DESCRIPTION},
    "report": {"history", DESCRIPTION},
    "history": {DESCRIPTION},
    DESCRIPTION: set(),
}
ENTRY_POINTS = {"pytest_cachecheck", "pytest_cachecheck.plugin"}  # the public front: may import anything


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _concept(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in BELOW else DESCRIPTION


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``module`` imports at any depth, except under ``if TYPE_CHECKING:``."""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for alternative in child.orelse:
                    visit(alternative)
                continue
            if isinstance(child, ast.ImportFrom):
                origin = child.module or ""
                if child.level:
                    origin = ".".join(base[: len(base) - child.level + 1] + ([origin] if origin else []))
                for alias in child.names:
                    if f"{origin}.{alias.name}" in known:
                        found.add(f"{origin}.{alias.name}")
                    elif origin in known:
                        found.add(origin)
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name in known)
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (as the path around it), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := walk(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_no_module_imports_a_module_that_imports_it_back():
    assert _cycle(_graph()) is None


def test_concept_packages_import_only_the_ones_below_them():
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if module not in ENTRY_POINTS
        for target in targets
        if _concept(target) != _concept(module) and _concept(target) not in BELOW[_concept(module)]
    )
    assert wrong == []


def test_the_cycle_finder_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_under_type_checking_are_not_dependencies(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nfrom .a import x\nif TYPE_CHECKING:\n    from .b import y\n"
        "def f():\n    from .c import z\n"
    )
    assert _imports("p.m", module, {"p.a", "p.b", "p.c"}) == {"p.a", "p.c"}


def test_the_tree_is_grouped_by_concept():
    flat = sorted(name for name in _modules() if name.count(".") == 1 and _concept(name) == DESCRIPTION)
    assert flat == [
        "pytest_cachecheck.contract",
        "pytest_cachecheck.hooks",
        "pytest_cachecheck.plugin",
        "pytest_cachecheck.target",
        "pytest_cachecheck.verdict",
    ]


@pytest.mark.parametrize("chunk", range(2))
def test_every_module_imports_alone(chunk):
    """Each module in a fresh interpreter: none relies on another having been imported first."""
    names = sorted(_modules())[chunk::2]

    def alone(name: str) -> str | None:
        done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
        return None if done.returncode == 0 else f"{name}: {(done.stderr.strip().splitlines() or ['?'])[-1]}"

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [failure for failure in pool.map(alone, names) if failure]
    assert failures == []

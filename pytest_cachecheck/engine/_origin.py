"""Whose code a module is: the harness's, a library's, or the layer's under test.

The patches and the hazard watch act only on what the layer does: a thread, lock or sleep made
by the layer's own code becomes cooperative (or a recorded hazard), while the same call from the
standard library, a driver or the harness stays real.  Invariant: the reference layers in
``pytest_cachecheck.strategies`` are layers like any user's, never the harness.
"""

from __future__ import annotations

import sys

_REAL_TOP_PACKAGES = frozenset(sys.stdlib_module_names) | {
    "redis",
    "fakeredis",
    "lupa",
    "psycopg",
    "psycopg_binary",
    "psycopg_pool",
    "hypothesis",
    "_pytest",
    "pytest",
    "pluggy",
    "sortedcontainers",
}


def module_kind(module: str) -> str:
    """Whose code the module named ``module`` is: ``harness``, ``library`` or ``layer``.

    ``library`` is the standard library and the harness's dependencies; the reference layers in
    ``pytest_cachecheck.strategies`` are layers like any user's.
    """
    if module.startswith("pytest_cachecheck"):
        return "layer" if module.startswith("pytest_cachecheck.strategies") else "harness"
    return "library" if module.partition(".")[0] in _REAL_TOP_PACKAGES else "layer"

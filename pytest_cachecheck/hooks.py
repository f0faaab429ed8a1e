"""Hook specifications: how a team adds its own property.

Checkers are plugins of a pluggy ``PluginManager`` named ``cachecheck``.  Inside pytest, any
plugin or ``conftest.py`` that defines ``cachecheck_check`` is registered automatically; outside
pytest, pass plugin objects to :func:`pytest_cachecheck.check`.

Example ``conftest.py``::

    from pytest_cachecheck import Verdict, hookimpl

    @hookimpl
    def cachecheck_check(history, contract):
        errors = [op for op in history.operations() if op.status == "error"]
        return Verdict.of("no-errors", [...])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import pluggy

if TYPE_CHECKING:
    from .contract import Contract
    from .history import History
    from .verdict import Verdict

PROJECT = "cachecheck"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cachecheck_check(history: "History", contract: "Contract") -> "Verdict | Iterable[Verdict] | None":
    """Judge one property of a finished run.

    Must be a pure function of ``history`` and ``contract``: it is called once per example, and
    again when a saved history is re-checked.  Return a :class:`Verdict` (or several, or None
    when the property does not apply to this history).
    """

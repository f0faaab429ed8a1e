"""pytest-cachecheck: find, shrink and explain races in caching layers.

The public surface is small: describe a layer with :class:`Target` (and its :class:`Source`
and :class:`Contract`), explore it with :func:`explore` or the ``cachecheck_explore`` fixture,
and add properties with :data:`hookimpl` checkers returning :class:`Verdict`.  Everything in a
module whose name starts with ``_`` is internal.
"""

from .backends._environment import EnvironmentFailure
from .backends._servers import Servers
from .checkers import check
from .contract import Contract
from .exploration._explore import Budget, CachecheckFailure, explore
from .exploration._run import RunConfig
from .history import Call, Complete, History, Invoke, Operation, Probe
from .history.roles import ENTRY, LOCK, OTHER, QUEUE, KeyRoles, key_roles
from .hooks import hookimpl
from .report._report import Report
from .target import Source, Target, TargetError
from .verdict import Finding, Verdict

__all__ = [
    "Budget",
    "CachecheckFailure",
    "Call",
    "Complete",
    "Contract",
    "ENTRY",
    "EnvironmentFailure",
    "Finding",
    "History",
    "Invoke",
    "KeyRoles",
    "LOCK",
    "OTHER",
    "Operation",
    "Probe",
    "QUEUE",
    "Report",
    "RunConfig",
    "Servers",
    "Source",
    "Target",
    "TargetError",
    "Verdict",
    "check",
    "explore",
    "hookimpl",
    "key_roles",
]

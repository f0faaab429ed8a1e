"""The record of one example, as data: what each client invoked, every call it made, what completed.

A :class:`History` is what the checkers, the stories, the reports and a team's own properties
read.  Every event is a value (calls keep the command, the keys as the layer named them, the
arguments and the result, never only their text), so a history round-trips through JSON
(:meth:`History.to_json` / :meth:`History.from_json`) and can be checked offline.
:mod:`~pytest_cachecheck.history.roles` tells, from the history alone, what each key is for.
"""

from ._calls import Request
from ._record import (
    HAZARD,
    INJECTED,
    REFUSED,
    SCHEMA,
    SETUP_CLIENT,
    Batch,
    Call,
    Command,
    Complete,
    Event,
    History,
    Invoke,
    LockPoint,
    Operation,
    OpKind,
    Probe,
    Raised,
    Rows,
    Sleep,
    Statement,
    Status,
    paused_collector,
)

__all__ = [
    "Batch",
    "Call",
    "Command",
    "Complete",
    "Event",
    "HAZARD",
    "History",
    "INJECTED",
    "Invoke",
    "LockPoint",
    "OpKind",
    "Operation",
    "Probe",
    "REFUSED",
    "Raised",
    "Request",
    "Rows",
    "SCHEMA",
    "SETUP_CLIENT",
    "Sleep",
    "Statement",
    "Status",
    "paused_collector",
]

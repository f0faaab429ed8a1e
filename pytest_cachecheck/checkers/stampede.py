"""Stampede: how many times the source was read for one key while the cache had no entry for it.

**Definition.**  For one key ``k`` of the run, a *miss window* opens at the first call that shows
``k``'s cache entry missing: a read of the entry that found nothing (``GET`` or ``HGET`` replying
nil, ``HGETALL`` replying empty, ``EXISTS`` 0, ``TTL`` -2 — an expired entry is seen this way) or
a deletion of it (``DEL``, ``UNLINK``, ``GETDEL``).  It closes when a *fill* lands: a command
writing the entry whose arguments carry one of ``k``'s value tokens (``u1.v3``), and which was
not refused (a ``SET NX`` or a script replying nil, false or 0 wrote nothing).  A deletion while a
window is open ends it and opens the next: the loads before an invalidation read a value the
write made obsolete, so the loads after it are no stampede of theirs.  A window still open when
the run ends closes there.

The window's *stampede* is the number of *source loads* of ``k`` it caused: SQL ``SELECT``
statements made by read operations that name ``k`` among their parameters, and that ran (neither
blocked nor raised).  A load belongs to the window in which its own operation last found ``k``
missing, even when it runs after that window ended: a reader that missed, then loaded after a
writer's deletion (which revoked its lease, say) or after another reader's fill, was part of that
miss's herd, not of the next window's.  A load whose operation never found ``k`` missing (it saw a
lease, say) belongs to the window open when it ran, if any.  Which load comes from a lock waiter does not matter: a reader that waited
for another's lock and then fell through to the source counts like any other, and the story says
it waited (it failed to take a lock, a key set only-if-absent, earlier in its operation).

Which Redis keys are ``k``'s cache entries is read off the history: a key whose role is ``entry``
(:func:`~pytest_cachecheck.history.roles.key_roles`) named by the operations of ``k`` alone (a key
named by the operations of several keys is nobody's entry).

**Figures**, on every verdict: ``stampede_max`` (the most loads in one window), and over the
windows with at least one load, ``stampede_mean``, their number ``stampede_windows`` and their
loads ``stampede_loads`` (so that a report can pool the mean over many examples).

The verdict is ``ok`` unless the contract bounds the stampede (``Contract(stampede=n)``): each
window with more than ``n`` loads is then a finding, and the verdict is violated.

Cost: one pass over the calls, the state of each key kept apart (near-linear in the history).
"""

from __future__ import annotations

from typing import Any

from ..contract import Contract
from ..history import Batch, Call, History, Statement
from ..history.roles import key_name, key_roles, token_finder
from ..hooks import hookimpl
from ..verdict import Finding, Verdict
from ._index import in_bulk
from ._words import who

__all__ = ["cachecheck_check", "stampede"]

_VALUE_READS = frozenset({"GET", "GETEX", "HGET", "GETDEL"})
"""Read one value: nil means the entry is missing."""
_DELETES = frozenset({"DEL", "UNLINK", "GETDEL"})
_CONDITIONAL = frozenset({"SET", "SETNX", "MSETNX", "HSETNX", "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL"})
"""Writes that may write nothing: a nil, false or 0 reply means they did not land."""
_NOT_WRITES = frozenset({
    "GET", "GETEX", "HGET", "HGETALL", "HMGET", "MGET", "EXISTS", "TTL", "PTTL", "TYPE", "STRLEN", "HEXISTS",
    "HLEN", "HKEYS", "HVALS", "DUMP", "OBJECT", "MEMORY", "EXPIRETIME", "PEXPIRETIME", "WATCH",
})


class _Window:
    """One miss window of one key: where it opened, the loads it caused, where it closed."""

    __slots__ = ("key", "opened", "how", "loads", "closed", "ended")

    def __init__(self, key: str, opened: Call, how: str) -> None:
        self.key, self.opened, self.how = key, opened, how
        self.loads: list[tuple[Call, tuple[Call, float] | None]] = []
        """Each load, and the failed lock acquire its operation made before it (with the seconds
        between the two), if any."""
        self.closed: Call | None = None
        """The fill or deletion that closed it; ``None`` while open, or if the run ended first."""
        self.ended = ""
        """``filled`` or ``deleted`` once closed by a call."""


@hookimpl
def cachecheck_check(history: History, contract: Contract) -> Verdict:
    return stampede(history, contract)


@in_bulk
def stampede(history: History, contract: Contract) -> Verdict:
    """The ``stampede`` verdict and its figures (see the module's docstring)."""
    windows = _windows(history)
    counts = [len(window.loads) for window in windows if window.loads]
    bound = contract.stampede
    findings = [_finding(window, bound) for window in windows if bound is not None and len(window.loads) > bound]
    figures = {
        "stampede_max": float(max(counts, default=0)),
        "stampede_mean": sum(counts) / len(counts) if counts else 0.0,
        "stampede_windows": float(len(counts)),
        "stampede_loads": float(sum(counts)),
    }
    return Verdict.of("stampede", findings, figures)


def _windows(history: History) -> list[_Window]:
    """Every miss window of every key with its loads, in order of opening."""
    invokes = {invoke.op: invoke for invoke, _ in history.joined()}
    roles = key_roles(history)
    entries = roles.entries
    locks = roles.locks
    calls = history.calls
    owner = _owners(calls, invokes, entries)
    tokens: dict[str, frozenset[str]] = {}
    for invoke in invokes.values():
        if invoke.value is not None:
            tokens[invoke.key] = tokens.get(invoke.key, frozenset()) | {invoke.value}
    finders = {key: token_finder(values) for key, values in tokens.items()}
    open_: dict[str, _Window] = {}
    windows: list[_Window] = []
    waited: dict[int, Call] = {}  # op -> its first failed lock acquire
    missed_in: dict[int, _Window] = {}  # op -> the window in which it last found its key missing

    def close(key: str, call: Call, how: str) -> None:
        window = open_.pop(key, None)
        if window is not None:
            window.closed, window.ended = call, how

    def open_window(key: str, call: Call, how: str) -> _Window:
        window = open_[key] = _Window(key, call, how)
        windows.append(window)
        return window

    for call in calls:
        if call.blocked is not None or call.error is not None:
            continue
        request = call.request
        if call.system == "sql":
            if type(request) is not Statement or call.op is None:
                continue
            invoke = invokes.get(call.op)
            if invoke is None or invoke.kind != "read" or not _is_select(request.sql):
                continue
            for key in _named(request.params, invoke.key):
                window = missed_in.get(call.op) or open_.get(key)
                if window is not None:
                    acquire = waited.get(call.op)
                    window.loads.append((call, None if acquire is None else (acquire, call.time - acquire.time)))
            continue
        commands = call.commands
        if not commands:
            continue
        replies = call.reply if type(request) is Batch and isinstance(call.reply, list) else [call.reply]
        for position, command in enumerate(commands):
            reply = replies[position] if position < len(replies) else None
            name = command.name
            for place, raw in enumerate(command.keys):
                redis_key = key_name(raw)
                if redis_key in locks:
                    if call.op is not None and call.op not in waited and _failed_acquire(command, reply):
                        waited[call.op] = call
                    continue
                key = owner.get(redis_key)
                if key is None:
                    continue
                if name in _DELETES:
                    close(key, call, "deleted")
                    open_window(key, call, f"{_by(call)}'s {name} deleted it")
                elif _found_nothing(name, reply, place):
                    window = open_.get(key) or open_window(key, call, f"{_by(call)}'s {name} found nothing")
                    if call.op is not None:
                        missed_in[call.op] = window
                elif name not in _NOT_WRITES and key in open_ and _landed(name, reply):
                    finder = finders.get(key)
                    if finder is not None and finder(command.args):
                        close(key, call, "filled")
    return windows


def _owners(calls: list[Call], invokes: dict, entries: frozenset[str]) -> dict[str, str]:
    """Each cache entry's key of the run: the key of the operations naming it, if only one."""
    owner: dict[str, str | None] = {}
    for call in calls:
        if call.op is None or call.system != "redis":
            continue
        invoke = invokes.get(call.op)
        if invoke is None:
            continue
        for raw in call.keys:
            name = key_name(raw)
            if name in entries:
                known = owner.setdefault(name, invoke.key)
                if known is not None and known != invoke.key:
                    owner[name] = None
    return {name: key for name, key in owner.items() if key is not None}


def _is_select(sql: str) -> bool:
    return sql.lstrip(" \t\r\n(").upper().startswith("SELECT")


def _named(params: Any, own: str) -> list[str]:
    """``[own]`` if the statement's parameters name the run's key ``own``, else ``[]``."""
    values = params.values() if isinstance(params, dict) else params if isinstance(params, (list, tuple)) else ()
    return [own] if any(isinstance(v, (str, bytes)) and key_name(v) == own for v in values) else []


def _found_nothing(name: str, reply: Any, place: int) -> bool:
    if name in _VALUE_READS:
        return reply is None
    if name == "HGETALL":
        return not reply
    if name == "EXISTS":
        return reply == 0
    if name in ("TTL", "PTTL"):
        return reply == -2
    if name in ("MGET", "HMGET"):
        if not isinstance(reply, list):
            return False
        return all(item is None for item in reply) if name == "HMGET" else place < len(reply) and reply[place] is None
    return False


def _landed(name: str, reply: Any) -> bool:
    return name not in _CONDITIONAL or reply not in (None, False, 0)


def _failed_acquire(command: Any, reply: Any) -> bool:
    """A ``SET ... NX`` or ``SETNX`` of a lock that found it taken."""
    if command.name == "SETNX":
        return not reply
    return command.name == "SET" and reply in (None, False) and any(
        isinstance(arg, (str, bytes)) and key_name(arg).upper() == "NX" for arg in command.args
    )


def _by(call: Call) -> str:
    """Who made a call: ``client 2``, ``client 2's background thread``, or ``the probe``."""
    if call.actor == "probe":
        return "the probe"
    return f"{who(call.client)}'s background thread" if "/" in call.actor else who(call.client)


def _finding(window: _Window, bound: int) -> Finding:
    opened, loads = window.opened, window.loads
    if window.closed is None:
        until = "to the end of the run, never filled"
    elif window.ended == "filled":
        until = f"to step {window.closed.step}, when {_by(window.closed)} filled it"
    else:
        until = f"to step {window.closed.step}, when {_by(window.closed)} deleted it again"
    told = []
    for load, acquire in loads:
        if acquire is None:
            told.append(f"{_by(load)} (step {load.step})")
        else:
            waited = f" {acquire[1]:g} s" if acquire[1] > 0 else ""
            told.append(f"{_by(load)} (step {load.step}, after waiting{waited} for the lock)")
    times = "once" if len(loads) == 1 else f"{len(loads)} times"
    message = (
        f"while {window.key} was missing from the cache (from step {opened.step}, when "
        f"{window.how}, {until}), the source was read for {window.key} {times}: "
        f"by {', '.join(told)}; the contract allows {bound}."
    )
    steps = tuple(sorted({opened.step, *(load.step for load, _ in loads), *((window.closed.step,) if window.closed else ())}))
    return Finding("stampede", message, key=window.key, steps=steps, figures={"loads": float(len(loads))})

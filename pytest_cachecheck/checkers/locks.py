"""Lock safety: mutual exclusion, release by a non-owner and lock leaks, judged from the calls.

Which Redis keys are locks is :func:`~pytest_cachecheck.history.roles.key_roles`' ``lock`` role:
keys set only-if-absent (``SET ... NX``, ``SETNX``), or named by the target
(:attr:`~pytest_cachecheck.history.History.locks`).  Each lock key's state is replayed from the
calls on it, in step order, trusting every reply:

* a lock is **taken** by a ``SET`` (with ``NX`` or not), ``SETNX`` or ``SETEX`` that replied
  success, or by a script (``EVAL``/``EVALSHA`` naming it in ``KEYS``) that replied truthy while
  the lock was free: the caller now holds the value it set;
* it **expires** at the time it was set plus its TTL (``EX``/``PX``/``SETEX``, or a later
  ``EXPIRE``/``PEXPIRE``), and exists through that deadline, as in Redis; a script with more
  than one ``ARGV`` on a held lock renews it (redis-py's ``extend``: ``token, ms[, replace]``);
* it is **released** by a ``DEL``/``UNLINK``/``GETDEL`` naming it, or a script on a held lock
  with at most one ``ARGV`` (a compare-and-delete: ``KEYS[1]`` the lock, ``ARGV[1]`` the
  token).  The call *removed* the value when it replied 1 (``DEL`` counting it, a script's 1),
  and removed nothing when it replied 0, nil or false (a compare-and-delete that found another
  token).

A client is **inside** the section a lock guards from its successful take until its own release
call, whatever that call removed (or its operation's completion, if it never released: a
crashed holder leaves at its crash).  An **effective write** is a write to a cache entry (a key
of role ``entry``) or to the source (``INSERT``/``UPDATE``/``DELETE``) that took effect: a
statement that matched no row, a conditional command or script that replied 0, nil or false,
and an error, took none: that is how a fence rejects a late write.

Properties:

* **mutual-exclusion**: two clients were inside one lock's section at once, both took effect
  there, and in an order no fence allows: client A, inside since before client B took the lock,
  made an effective write to a resource (one cache key, or one table) *after* B's effective
  write to the same resource, while B was still inside.  Writes A made before B's land first,
  as if A had left first, and writes A made once B had left land as if A had come after B:
  either order is serial, which is all a fencing token guarantees and all the property asks.
* **lock-release-by-non-owner**: a release removed a value another client set.
* **lock-leak**: at quiescence (when a fresh client starts probing the keys), a lock is held,
  and no operation of its holder is in flight.  A lock with a TTL whose holder crashed is
  reported without failing: the TTL is its recovery.  ``unknown`` when the run never reached
  quiescence.

Figures, on the ``mutual-exclusion`` verdict of every history: ``lock_holds`` (sections),
``holders_past_expiry`` (sections whose holder made an effective write, or its release call,
after its lock's expiry) and ``longest_past_expiry`` (the most seconds between such an expiry
and the holder's last action).

Cost: one pass over the events, each lock key's state apart, then a sweep of each key's sections
in order of taking (near-linear unless sections pile up on one key).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..contract import Contract
from ..history import Call, Complete, History, Invoke, Probe, Raised, Rows, Statement
from ..history.roles import ENTRY, key_name, key_roles
from ..hooks import hookimpl
from ..verdict import Finding, Verdict
from ._index import in_bulk
from ._words import clip, who

__all__ = ["FOREIGN_RELEASE", "LEAK", "MUTUAL_EXCLUSION", "cachecheck_check", "lock_safety"]

MUTUAL_EXCLUSION = "mutual-exclusion"
FOREIGN_RELEASE = "lock-release-by-non-owner"
LEAK = "lock-leak"

_SCRIPTS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
_RELEASES = frozenset({"DEL", "UNLINK", "GETDEL"})
_TAKES = frozenset({"SET", "SETNX", "SETEX", "PSETEX"})
_CONDITIONAL = frozenset({
    "SETNX", "MSETNX", "HSETNX", "DEL", "UNLINK", "GETDEL", "EXPIRE", "PEXPIRE", "EXPIREAT",
    "PEXPIREAT", "PERSIST", "RENAMENX", "COPY", *_SCRIPTS,
})
"""Writes that may write nothing: a 0, nil or false reply means they did not land."""
_NOT_WRITES = frozenset({
    "GET", "MGET", "EXISTS", "TTL", "PTTL", "TYPE", "STRLEN", "GETRANGE", "HGET", "HMGET", "HGETALL",
    "HEXISTS", "HKEYS", "HVALS", "HLEN", "HSTRLEN", "SCARD", "SMEMBERS", "SISMEMBER", "SMISMEMBER",
    "ZCARD", "ZRANGE", "ZSCORE", "ZRANK", "ZCOUNT", "DUMP", "OBJECT", "MEMORY", "EXPIRETIME",
    "PEXPIRETIME", "WATCH", "UNWATCH", "EVAL_RO", "EVALSHA_RO", "FCALL_RO", "SCAN", "KEYS",
})
_SQL_WRITE = re.compile(r"^\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM|REPLACE\s+INTO)\s+([\w.\"]+)", re.I)

_UNKNOWN = math.nan
"""An expiry the calls do not tell (an absolute ``EXPIREAT``, a renewal of unknown shape)."""


@hookimpl
def cachecheck_check(history: History, contract: Contract) -> list[Verdict]:
    return lock_safety(history)


@dataclass
class _Section:
    """One client's stay inside the section one lock guards.

    Invariant: ``writes`` are the holder's effective writes while inside, in step order, as
    ``(step, time, resource, call)``; ``expires`` is the deadline of the holder's latest own
    take or renewal (``inf`` without a TTL, ``nan`` unknown)."""

    key: str
    client: int
    op: int | None
    start: Call
    expires: float
    end: int = math.inf  # type: ignore[assignment]  # the step it left at
    release: Call | None = None
    writes: list = field(default_factory=list)
    past: float = -1.0
    """The most seconds an action of the holder came after its lock's expiry (-1: none did)."""
    past_at: Call | None = None
    lost: tuple | None = None
    """How the holder lost its value before leaving: ``("removed", call)`` or ``("taken", call)``."""

    def act(self, call: Call) -> None:
        """The holder acted (an effective write, its release) at ``call``: past its expiry?"""
        if call.time > self.expires and call.time - self.expires > self.past:  # nan compares False
            self.past, self.past_at = call.time - self.expires, call


@dataclass
class _Value:
    """What a lock key holds: who set it, when, and until when."""

    client: int
    value: Any
    call: Call
    expires: float
    section: _Section | None


@dataclass
class _Leak:
    key: str
    value: _Value
    at: Call | Probe


@in_bulk
def lock_safety(history: History) -> list[Verdict]:
    """The ``mutual-exclusion``, ``lock-release-by-non-owner`` and ``lock-leak`` verdicts."""
    locks = _lock_keys(history)
    probes = history.probes
    if not locks:
        figures = {"lock_holds": 0, "holders_past_expiry": 0, "longest_past_expiry": 0.0}
        return [
            Verdict.of(MUTUAL_EXCLUSION, (), figures),
            Verdict.of(FOREIGN_RELEASE, (), {"foreign_releases": 0}),
            Verdict.of(LEAK, (), {"leaked_locks": 0}),
        ]
    replay = _Replay(history, locks)
    replay.run()
    sections = replay.sections
    past = [s for s in sections if s.past >= 0]
    figures = {
        "lock_holds": len(sections),
        "holders_past_expiry": len(past),
        "longest_past_expiry": max((s.past for s in past), default=0.0),
    }
    overlaps = _overlaps(sections)
    leaks = _leaks(replay, history)
    return [
        Verdict.of(MUTUAL_EXCLUSION, overlaps, figures),
        Verdict.of(FOREIGN_RELEASE, replay.foreign, {"foreign_releases": len(replay.foreign)}),
        Verdict(LEAK, "unknown") if not probes else Verdict.of(LEAK, leaks, {"leaked_locks": sum(f.violates for f in leaks)}),
    ]


def _lock_keys(history: History) -> frozenset[str]:
    """The keys of role ``lock``; roles are computed only when some key could be one."""
    if not history.locks and not any(
        command.name == "SETNX" or (command.name == "SET" and _has(command.args, "NX"))
        for call in history.calls
        if call.system == "redis"
        for command in call.commands
    ):
        return frozenset()
    return key_roles(history).locks


class _Replay:
    """One pass over the events: each lock key's value, the sections, the effective writes."""

    def __init__(self, history: History, locks: frozenset[str]) -> None:
        self.history = history
        self.locks = locks
        self.roles = key_roles(history)
        self.values: dict[str, _Value | None] = {}
        self.inside: dict[tuple[int, str], _Section] = {}
        self.by_client: dict[int, list[_Section]] = {}
        self.sections: list[_Section] = []
        self.foreign: list[Finding] = []
        self.status: dict[int, str] = {}  # op -> its completion's status
        self.in_flight: set[int] = set()
        self.at_quiescence: list[_Leak] | None = None
        self.quiescence: Call | Probe | None = None

    def run(self) -> None:
        quiet = _quiescence(self.history)
        for event in self.history.events:
            kind = type(event)
            if quiet is not None and event is quiet:
                self._snapshot(event)
            if kind is Call:
                if event.system == "redis" and event.error is None and event.blocked is None:
                    self._redis(event)
                elif event.system == "sql" and event.error is None and event.blocked is None:
                    self._sql(event)
            elif kind is Invoke:
                self.in_flight.add(event.op)
            elif kind is Complete:
                self.in_flight.discard(event.op)
                self.status[event.op] = event.status
                for section in [s for s in self.by_client.get(event.client, ()) if s.op == event.op]:
                    self._leave(section, event.step)

    # -- lock state -------------------------------------------------------------------------

    def _redis(self, call: Call) -> None:
        commands = call.commands
        replies = call.reply if len(commands) > 1 and isinstance(call.reply, list) else [call.reply]
        for position, command in enumerate(commands):
            reply = replies[position] if position < len(replies) else None
            if isinstance(reply, Raised):
                continue
            name = command.name
            for key in command.keys:
                key = key_name(key)
                if key in self.locks:
                    self._on_lock(call, key, name, command.args, reply, len(command.keys))
                elif name not in _NOT_WRITES and self.roles.of(key) == ENTRY and _landed(name, command.args, reply):
                    self._wrote(call, ("cache", key), f"{name} {key}")

    def _on_lock(self, call: Call, key: str, name: str, args: tuple, reply: Any, nkeys: int) -> None:
        held = self._held(key, call.time)
        if name in _TAKES:
            if _truthy(reply) and not (name == "SET" and _has(args, "GET")):
                self._take(call, key, _first(args, name), _ttl(name, args, call.time, held))
        elif name in ("EXPIRE", "PEXPIRE", "PERSIST") and _truthy(reply) and held is not None:
            held.expires = _expiry(name, args, call.time)
            if held.section is not None and held.section.client == call.client:
                held.section.expires = held.expires
        elif name in ("EXPIREAT", "PEXPIREAT") and _truthy(reply) and held is not None:
            held.expires = _UNKNOWN
        elif name in _RELEASES:
            removed = _truthy(reply) and (nkeys == 1 or held is not None)
            self._release(call, key, removed)
        elif name in _SCRIPTS:
            argv = args[2:]  # EVALSHA sha numkeys KEYS... ARGV...: the arguments after the keys
            if held is None:
                if _truthy(reply):
                    self._take(call, key, argv[0] if argv else None, _UNKNOWN)
            elif len(argv) > 1:
                if _truthy(reply):
                    self._renew(call, held, argv)
            else:
                self._release(call, key, _truthy(reply))

    def _held(self, key: str, now: float) -> _Value | None:
        """The value ``key`` holds at ``now`` (``None`` if none, or it expired)."""
        value = self.values.get(key)
        if value is None or now > value.expires:  # nan: never known to have expired
            return None
        return value

    def _take(self, call: Call, key: str, token: Any, expires: float) -> None:
        previous = self.values.get(key)
        section = self.inside.get((call.client, key))
        if previous is not None and previous.section is not None and previous.section.client != call.client:
            if previous.section.lost is None:
                previous.section.lost = ("taken", call)
        if section is None:
            section = _Section(key, call.client, call.op, call, expires)
            self.inside[(call.client, key)] = section
            self.by_client.setdefault(call.client, []).append(section)
            self.sections.append(section)
        else:
            section.expires = expires
        self.values[key] = _Value(call.client, token, call, expires, section)

    def _renew(self, call: Call, held: _Value, argv: tuple) -> None:
        """redis-py's ``extend`` (``token, ms, replace``) and ``reacquire`` (``token, ms``)."""
        try:
            ms = float(argv[1])
        except (TypeError, ValueError):
            held.expires = _UNKNOWN
        else:
            replace = len(argv) < 3 or str(key_name(argv[2])) not in ("0", "", "False")
            held.expires = call.time + ms / 1000 if replace else held.expires + ms / 1000
        if held.section is not None and held.section.client == call.client:
            held.section.expires = held.expires

    def _release(self, call: Call, key: str, removed: bool) -> None:
        section = self.inside.get((call.client, key))
        if section is not None:
            section.act(call)
            section.release = call
            self._leave(section, call.step)
        if not removed:
            return
        value = self.values.pop(key, None)
        if value is None:
            return
        if value.section is not None and value.section.client != call.client and value.section.lost is None:
            value.section.lost = ("removed", call)
        if value.client != call.client:
            self.foreign.append(_foreign(call, key, value, section))

    def _leave(self, section: _Section, step: int) -> None:
        section.end = min(section.end, step)
        self.inside.pop((section.client, section.key), None)
        mine = self.by_client.get(section.client)
        if mine is not None and section in mine:
            mine.remove(section)

    # -- effective writes -------------------------------------------------------------------

    def _sql(self, call: Call) -> None:
        request = call.request
        if type(request) is not Statement:
            return
        match = _SQL_WRITE.match(request.sql)
        if match is None:
            return
        reply = call.reply
        if isinstance(reply, Rows) and reply.rowcount == 0:
            return  # matched no row: a fence (or a missing row) turned it away
        self._wrote(call, ("source", match.group(1).strip('"')), clip(call.command, 60))

    def _wrote(self, call: Call, resource: tuple, what: str) -> None:
        for section in self.by_client.get(call.client, ()):
            if call.step > section.start.step:
                section.writes.append((call.step, call.time, resource, call))
                section.act(call)

    # -- quiescence -------------------------------------------------------------------------

    def _snapshot(self, at: Call | Probe) -> None:
        self.quiescence = at
        leaks = []
        for key in sorted(self.values):
            value = self._held(key, at.time)
            if value is None:
                continue
            op = value.call.op
            if op is not None and op in self.in_flight:
                continue
            leaks.append(_Leak(key, value, at))
        self.at_quiescence = leaks


def _quiescence(history: History) -> Call | Probe | None:
    """The event quiescence begins at: the first call of the fresh client that probes the keys
    (a client that never invoked an operation, after every operation's last event), else the
    first probe; ``None`` when the run never reached quiescence."""
    events = history.events
    first_probe = next((i for i, e in enumerate(events) if type(e) is Probe), None)
    if first_probe is None:
        return None
    clients: set[int] = set()
    last_op = -1
    for i in range(first_probe):
        event = events[i]
        if type(event) is Invoke:
            clients.add(event.client)
            last_op = i
        elif type(event) is Complete:
            last_op = i
    for i in range(last_op + 1, first_probe):
        event = events[i]
        if type(event) is Call and event.client not in clients and event.client != 0:
            return event
    return events[first_probe]


# -- mutual exclusion -----------------------------------------------------------------------


def _overlaps(sections: list[_Section]) -> list[Finding]:
    """Each pair of sections on one lock where the earlier holder wrote a resource after the
    later holder had: a sweep per key in order of taking, over the sections still open."""
    findings: list[Finding] = []
    open_by_key: dict[str, list[_Section]] = {}
    for later in sections:  # in order of taking
        still = [s for s in open_by_key.get(later.key, ()) if s.end > later.start.step]
        for earlier in still:
            if earlier.client == later.client:
                continue
            finding = _conflict(earlier, later)
            if finding is not None:
                findings.append(finding)
        still.append(later)
        open_by_key[later.key] = still
    return findings


def _conflict(earlier: _Section, later: _Section) -> Finding | None:
    first: dict[tuple, tuple] = {}
    for write in later.writes:
        first.setdefault(write[2], write)
    if not first:
        return None
    for write in earlier.writes:
        theirs = first.get(write[2])
        if theirs is not None and theirs[0] < write[0] < later.end:
            return Finding(
                MUTUAL_EXCLUSION,
                _overlap_story(earlier, later, write, theirs),
                key=earlier.key,
                steps=(earlier.start.step, later.start.step, theirs[0], write[0]),
                figures={"past_expiry": max(write[1] - earlier.expires, 0.0) if math.isfinite(earlier.expires) else 0.0},
            )
    return None


def _overlap_story(earlier: _Section, later: _Section, late: tuple, theirs: tuple) -> str:
    lock, a, b = earlier.key, who(earlier.client), who(later.client)
    resource = _resource(late[2])
    took = f"{a} took {lock} at step {earlier.start.step}{_until(earlier.expires)}"
    wrote = f"and still wrote {resource} at step {late[0]} (t={late[1]:g} s: {clip(late[3].command, 60)})"
    expired = math.isfinite(earlier.expires) and late[1] > earlier.expires
    if expired:
        wrote += f", {late[1] - earlier.expires:g} s after its lock expired"
    then = f"{b} had taken {lock} at step {later.start.step} (t={later.start.time:g} s)"
    if expired and later.start.time > earlier.expires:
        then += ", once it expired,"
    elif earlier.lost is not None and earlier.lost[0] == "removed" and earlier.lost[1].step <= later.start.step:
        release = earlier.lost[1]
        then += f", after {who(release.client)}'s release at step {release.step} removed {a}'s lock,"
    else:
        then += f" while {a} still held it,"
    then += f" and written {resource} at step {theirs[0]}"
    both = f"Both wrote inside the section {lock} guards, {a}'s write landing after {b}'s."
    if expired:
        fix = (
            "A lock with a TTL expires under a holder that keeps working (a pause, a slow call): a fencing "
            "token checked where the write lands (an UPDATE ... WHERE fence < token, a compare-and-set on "
            "the entry) would reject the late write."
        )
    else:
        fix = "A fencing token checked where the write lands would reject the late write."
    return f"{took} {wrote}; {then}. {both} {fix}"


def _until(expires: float) -> str:
    if math.isnan(expires):
        return ""
    if math.isinf(expires):
        return " (no TTL)"
    return f" (expires at t={expires:g} s)"


def _resource(resource: tuple) -> str:
    kind, name = resource
    return name if kind == "cache" else f"the source ({name})"


# -- release by a non-owner -----------------------------------------------------------------


def _foreign(call: Call, key: str, value: _Value, section: _Section | None) -> Finding:
    a, b = who(call.client), who(value.client)
    command = call.commands[0].name if call.commands else call.command
    story = (
        f"{a} released {key} at step {call.step} ({clip(call.command, 60)}), but the value there was "
        f"{b}'s (set at step {value.call.step}, t={value.call.time:g} s)"
    )
    if section is None:
        story += f": {a} did not hold {key} then"
    elif math.isfinite(section.expires) and section.expires < value.call.time:
        story += f": {a}'s own lock had expired at t={section.expires:g} s"
    if command in _SCRIPTS:
        story += (
            f". The compare-and-delete matched {b}'s value ({value.value!r}): both set the same token; "
            "make each holder's token unique."
        )
    else:
        story += (
            f". A bare {command} releases whoever holds the lock now; compare the token before deleting "
            "(a Lua compare-and-delete)."
        )
    return Finding(FOREIGN_RELEASE, story, key=key, steps=(value.call.step, call.step))


# -- leaks ----------------------------------------------------------------------------------


def _leaks(replay: _Replay, history: History) -> list[Finding]:
    findings = []
    for leak in replay.at_quiescence or ():
        value, at = leak.value, leak.at
        holder = who(value.client)
        op = value.call.op
        crashed = op is not None and replay.status.get(op) == "indeterminate"
        story = f"{leak.key} was still held at quiescence (step {at.step}, t={at.time:g} s): {holder} took it at step {value.call.step}"
        if crashed:
            story += f" and crashed holding it"
        elif value.section is not None and value.section.release is None:
            story += " and never released it"
        else:
            story += " and no operation of it is in flight"
        if math.isinf(value.expires):
            story += f"; it has no TTL, so every later attempt to take {leak.key} fails forever."
            violates = True
        elif math.isnan(value.expires):
            story += "; when it expires the calls do not tell."
            violates = not crashed
        else:
            story += f"; it stays taken until it expires at t={value.expires:g} s ({value.expires - at.time:g} s on)."
            violates = not crashed
            if crashed:
                story += " Its TTL is the recovery from the crash."
        findings.append(
            Finding(LEAK, story, key=leak.key, steps=(value.call.step,), violates=violates)
        )
    return findings


# -- command arguments ----------------------------------------------------------------------


def _has(args: Iterable[Any], word: str) -> bool:
    return any(isinstance(arg, (str, bytes)) and key_name(arg).upper() == word for arg in args)


def _option(args: tuple, word: str) -> Any:
    for i, arg in enumerate(args):
        if isinstance(arg, (str, bytes)) and key_name(arg).upper() == word and i + 1 < len(args):
            return args[i + 1]
    return None


def _seconds(value: Any, scale: float) -> float:
    try:
        return float(key_name(value) if isinstance(value, bytes) else value) * scale
    except (TypeError, ValueError):
        return _UNKNOWN


def _ttl(name: str, args: tuple, now: float, held: _Value | None) -> float:
    """When a value set by ``name args`` at ``now`` expires (``inf``: never)."""
    if name == "SETEX":
        return now + _seconds(args[0] if args else None, 1.0)
    if name == "PSETEX":
        return now + _seconds(args[0] if args else None, 0.001)
    if name == "SET":
        if (ex := _option(args, "EX")) is not None:
            return now + _seconds(ex, 1.0)
        if (px := _option(args, "PX")) is not None:
            return now + _seconds(px, 0.001)
        if _has(args, "EXAT") or _has(args, "PXAT"):
            return _UNKNOWN
        if _has(args, "KEEPTTL"):
            return held.expires if held is not None else math.inf
    return math.inf


def _expiry(name: str, args: tuple, now: float) -> float:
    if name == "PERSIST":
        return math.inf
    return now + _seconds(args[0] if args else None, 0.001 if name == "PEXPIRE" else 1.0)


def _first(args: tuple, name: str) -> Any:
    """The value a take sets: ``SET k v``, ``SETNX k v``, ``SETEX k ttl v``."""
    if name in ("SETEX", "PSETEX"):
        return args[1] if len(args) > 1 else None
    return args[0] if args else None


def _truthy(reply: Any) -> bool:
    if reply is None or reply is False or isinstance(reply, Raised):
        return False
    if isinstance(reply, (int, float)) and not isinstance(reply, bool):
        return reply != 0
    if isinstance(reply, (list, tuple)):
        return bool(reply)
    return True


def _landed(name: str, args: tuple, reply: Any) -> bool:
    """Whether a write command on a cache entry took effect."""
    if name in _CONDITIONAL or (name == "SET" and (_has(args, "NX") or _has(args, "XX"))):
        return _truthy(reply)
    return True

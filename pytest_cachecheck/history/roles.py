"""What each Redis key a layer touches is for, read from the history alone.

:func:`key_roles` gives every key named by a recorded Redis command (as the layer named it,
before any prefix; a bytes key is decoded as UTF-8) one role, by the first rule that holds:

1. ``queue``: some command on it is a list or stream command (``RPUSH``, ``LMOVE``, ``LREM``,
   ``BLPOP``, ``XADD``, ``XACK`` ...).  A write-behind queue's items carry value tokens, and are
   still no cache entry.
2. ``entry``: some value written to it or read from it carries a value token of the run
   (``u1.v3``: a value an operation wrote or a read returned, see
   :class:`~pytest_cachecheck.history.Invoke`): the cache proper.
3. ``lock``: it is named in ``locks`` (by name or glob pattern, ``lock:*``; the target's
   :attr:`~pytest_cachecheck.Target.locks`, kept as :attr:`History.locks`, always count), or
   set only-if-absent (``SET ... NX``, ``SETNX``), as a
   lock, a lease or redis-py's ``r.lock()`` is; its release (``DEL``, a compare-and-delete
   script) needs no rule of its own.
4. ``other``: everything else (counters, fences, sequence numbers, flags).

Invariants: the roles depend on the history only (the same history, the same roles); every key
some :class:`~pytest_cachecheck.history.Call`'s ``commands`` name has exactly one role.  A call
recorded as text only names no key and is left out.  A lock taken by a script alone (no
``NX``) cannot be told from the commands: name it in ``locks``.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any, Iterable, Iterator, Literal, Mapping

from ._record import Call, Command, Complete, History, Invoke

__all__ = ["ENTRY", "LOCK", "OTHER", "QUEUE", "KeyRoles", "Role", "key_name", "key_roles"]

Role = Literal["entry", "lock", "queue", "other"]
ENTRY: Role = "entry"
LOCK: Role = "lock"
QUEUE: Role = "queue"
OTHER: Role = "other"

QUEUE_COMMANDS = frozenset(
    "LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP BLPOP BRPOP RPOPLPUSH BRPOPLPUSH LMOVE BLMOVE LMPOP BLMPOP "
    "LRANGE LREM LINDEX LLEN LSET LTRIM LINSERT LPOS XADD XREAD XREADGROUP XACK XCLAIM XAUTOCLAIM "
    "XDEL XLEN XRANGE XREVRANGE XTRIM XGROUP XPENDING XINFO XSETID".split()
)
"""List and stream commands: a key any of them names is a queue."""


class KeyRoles(Mapping[str, str]):
    """Each key's role (see the module's docstring); looked up by str or bytes key."""

    def __init__(self, roles: Mapping[str, str]) -> None:
        self._roles = dict(roles)

    def __getitem__(self, key: Any) -> str:
        return self._roles[key_name(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._roles)

    def __len__(self) -> int:
        return len(self._roles)

    def __repr__(self) -> str:
        return f"KeyRoles({self._roles!r})"

    def of(self, key: Any) -> str:
        """``key``'s role, ``other`` for a key the history never names."""
        return self._roles.get(key_name(key), OTHER)

    def with_role(self, role: str) -> frozenset[str]:
        """The keys that have ``role``."""
        return frozenset(key for key, found in self._roles.items() if found == role)

    @property
    def locks(self) -> frozenset[str]:
        return self.with_role(LOCK)

    @property
    def queues(self) -> frozenset[str]:
        return self.with_role(QUEUE)

    @property
    def entries(self) -> frozenset[str]:
        return self.with_role(ENTRY)

    def of_call(self, call: Call) -> frozenset[str]:
        """The roles of the keys ``call``'s commands name (empty for SQL, sleeps, text-only calls)."""
        return frozenset(self.of(key) for key in call.keys)


def key_roles(history: History, locks: Iterable[str] = ()) -> KeyRoles:
    """The role of every key the history's Redis commands name; ``locks`` (with the history's
    own :attr:`~pytest_cachecheck.history.History.locks`) names keys, or glob patterns of keys,
    that are locks whatever the commands say (unless a list or stream command names them)."""
    named = frozenset(key_name(key) for key in (*history.locks, *locks))
    return history.cached(f"key roles {sorted(named)!r}", lambda h: _classify(h, named))


def _classify(history: History, named: frozenset[str]) -> KeyRoles:
    tokens = {e.value for e in history.events if type(e) in (Invoke, Complete) and e.value is not None}
    carries = token_finder(tokens)
    queues: set[str] = set()
    entries: set[str] = set()
    absent_only: set[str] = set()
    seen: dict[str, None] = {}
    for call in history.calls:
        if call.system != "redis":
            continue
        commands = call.commands
        replies = call.reply if len(commands) > 1 and isinstance(call.reply, list) else [call.reply]
        for position, command in enumerate(commands):
            keys = [key_name(key) for key in command.keys]
            seen.update(dict.fromkeys(keys))
            if command.name in QUEUE_COMMANDS:
                queues.update(keys)
                continue
            reply = replies[position] if position < len(replies) else None
            if carries(command.args) or carries(reply):
                entries.update(keys)
            if _only_if_absent(command):
                absent_only.update(keys)
    roles: dict[str, str] = {}
    for key in seen:
        if key in queues:
            roles[key] = QUEUE
        elif _named(key, named):
            roles[key] = LOCK
        elif key in entries:
            roles[key] = ENTRY
        elif key in absent_only:
            roles[key] = LOCK
        else:
            roles[key] = OTHER
    return KeyRoles(roles)


def _named(key: str, named: frozenset[str]) -> bool:
    """Whether ``key`` is one of ``named``, or matches one of its glob patterns."""
    return key in named or any(fnmatchcase(key, pattern) for pattern in named if any(c in pattern for c in "*?["))


def _only_if_absent(command: Command) -> bool:
    """``SETNX k v``, or ``SET k v ... NX ...``."""
    if command.name == "SETNX":
        return True
    return command.name == "SET" and any(key_name(arg).upper() == "NX" for arg in command.args if isinstance(arg, (str, bytes)))


def token_finder(tokens: set[str] | frozenset[str]):
    """A test of whether a value (str, bytes, a list or dict of them) carries one of ``tokens``,
    as a whole token: ``u1.v1`` is not carried by ``u1.v10``.  Shared with the checkers."""
    if not tokens:
        return lambda value: False
    pattern = re.compile("|".join(re.escape(token) for token in sorted(tokens, key=len, reverse=True)))

    def found(match: re.Match) -> bool:
        return match.group(0) in tokens

    def carries(value: Any) -> bool:
        if isinstance(value, (str, bytes, bytearray)):
            text = key_name(value)
            # A whole token only: u1.v1 is not carried by u1.v10.
            return any(
                found(m) and not _word(text, m.end()) and not _word(text, m.start() - 1)
                for m in pattern.finditer(text)
            )
        if isinstance(value, (list, tuple)):
            return any(carries(item) for item in value)
        if isinstance(value, dict):
            return any(carries(k) or carries(v) for k, v in value.items())
        return False

    return carries


def _word(text: str, at: int) -> bool:
    return 0 <= at < len(text) and (text[at].isalnum() or text[at] in "._")


def key_name(key: Any) -> str:
    """A key as text: a bytes key decoded as UTF-8 (undecodable bytes as ``\\xNN``)."""
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", "backslashreplace")
    return str(key)

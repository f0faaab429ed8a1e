"""How a user describes a caching layer once, so the harness can drive it.

A :class:`Target` says how to build one app instance from the Redis client and database
connection the harness provides, which of its methods read, write and delete, how to read the
source of truth, and what the layer promises (its :class:`~pytest_cachecheck.Contract`).  The
layer's own code is never changed: adapters are lambdas here.

Values are the harness's: every write stores a fresh token (``u1.v3``) that the adapter puts
where the layer keeps data (a ``name`` column, say), and ``observe`` maps what a read returns
back to that token, so a read is attributable to exactly one write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

from .contract import Contract

__all__ = ["Source", "Target", "TargetError"]

MAX_CLIENTS = 6
FAULTS = ("crash", "cache-loss", "error", "slow")


class TargetError(ValueError):
    """A target is described wrongly; the message names the field and the fix."""


@dataclass(frozen=True)
class Source:
    """The source of truth's layout: one row per key, holding the key's current value.

    ``insert`` and ``select`` use ``%s`` placeholders: ``insert`` takes ``(key, value)``,
    ``select`` takes ``(key,)`` and returns the value in its first column, or no row when the
    key is absent.  ``schema`` statements run once per example in a private database/schema.
    """

    schema: Union[str, Sequence[str]] = "CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL)"
    insert: str = "INSERT INTO users (id, name) VALUES (%s, %s)"
    select: str = "SELECT name FROM users WHERE id = %s"

    @property
    def statements(self) -> tuple[str, ...]:
        return (self.schema,) if isinstance(self.schema, str) else tuple(self.schema)

    def __post_init__(self) -> None:
        if not self.statements:
            raise TargetError("Source.schema is empty: give the CREATE TABLE statement(s) of the source.")
        if self.insert.count("%s") != 2:
            raise TargetError(f"Source.insert={self.insert!r} must take exactly two %s placeholders: (key, value).")
        if self.select.count("%s") != 1:
            raise TargetError(f"Source.select={self.select!r} must take exactly one %s placeholder: (key,).")


Operation = Union[str, Callable[..., Any], None]


def _identity(value: Any) -> Any:
    return value


_KEY = re.compile(r"^[A-Za-z0-9_.:-]+$")


@dataclass(frozen=True)
class Target:
    """A caching layer under test.

    >>> from pytest_cachecheck.strategies.cache_aside import SeedCacheAside
    >>> target = Target(
    ...     name="seed-cache-aside",
    ...     build=SeedCacheAside,                  # (redis, connection) -> one app instance
    ...     read="get_user",                       # layer.get_user(key)
    ...     write=lambda layer, key, value: layer.update_user(key, {"name": value}),
    ...     observe=lambda user: user and user["name"],
    ... )
    >>> target.clients
    2

    ``read``, ``write`` and ``delete`` are method names (called as ``method(key)``,
    ``method(key, value)``, ``method(key)``) or callables taking the instance first.
    """

    name: str
    build: Callable[[Any, Any], Any]
    read: Operation = "get"
    write: Operation = None
    delete: Operation = None
    observe: Callable[[Any], Any] = _identity
    source: Source = field(default_factory=Source)
    contract: Contract = field(default_factory=Contract)
    keys: Sequence[str] = ("u1", "u2")
    absent: Sequence[str] = ()
    """Keys with no row in the source when each example starts (the setup deletes them): a
    read returns nothing, a write creates the row (the layer's write must insert or upsert),
    so negative caching and create/delete races are reachable."""
    clients: int = 2
    decode_responses: bool = True
    background: bool = False
    """The layer starts threads of its own (a write-behind flusher): the machine steps them."""
    faults: Sequence[str] = ()
    """Faults Hypothesis may inject: ``crash`` (an app process dies and restarts),
    ``cache-loss`` (the cache loses everything), ``error`` (one Redis command or SQL
    statement fails) and ``slow`` (one Redis command or SQL statement takes one of
    :attr:`slow` virtual seconds: a slow query, a GC pause, a network hiccup)."""
    slow: Sequence[float] = (1.0, 10.0, 60.0)
    """The virtual seconds a ``slow`` fault may last; a lock's TTL or an entry's is the length
    worth listing, so that a holder may outlive its lock or a fill land after its entry expired."""
    locks: Sequence[str] = ()
    """Redis keys the layer uses as locks, by name or glob pattern (``lock:*``), for locks the
    commands alone cannot tell (one taken by a Lua script, not ``SET ... NX``): the lock
    properties judge them, and a saved history keeps them."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.match(r"^[A-Za-z0-9_.-]+$", self.name):
            raise TargetError(f"Target.name={self.name!r} must be a non-empty identifier (letters, digits, _ . -).")
        if not callable(self.build):
            raise TargetError(f"Target({self.name}).build must be callable as build(redis, connection).")
        if self.read is None and self.write is None:
            raise TargetError(f"Target({self.name}) needs at least one of read= or write=.")
        for role in ("read", "write", "delete"):
            op = getattr(self, role)
            if op is not None and not (isinstance(op, str) or callable(op)):
                raise TargetError(f"Target({self.name}).{role} must be a method name or a callable, not {op!r}.")
        if not callable(self.observe):
            raise TargetError(f"Target({self.name}).observe must be callable.")
        if not isinstance(self.contract, Contract):
            raise TargetError(f"Target({self.name}).contract must be a Contract, e.g. Contract.bounded(60).")
        keys = tuple(self.keys)
        if not keys or len(set(keys)) != len(keys) or not all(isinstance(k, str) and _KEY.match(k) for k in keys):
            raise TargetError(
                f"Target({self.name}).keys={self.keys!r} must be distinct, non-empty strings of letters, "
                "digits and _ . : -"
            )
        object.__setattr__(self, "keys", keys)
        absent = tuple(self.absent)
        if not set(absent) <= set(keys):
            raise TargetError(
                f"Target({self.name}).absent={self.absent!r} names keys not in keys={keys!r}; list them in keys too."
            )
        object.__setattr__(self, "absent", absent)
        faults = tuple(self.faults)
        unknown = sorted(set(faults) - set(FAULTS))
        if unknown:
            raise TargetError(f"Target({self.name}).faults has unknown {unknown}; choose from {list(FAULTS)}.")
        object.__setattr__(self, "faults", faults)
        locks = (self.locks,) if isinstance(self.locks, str) else tuple(self.locks)
        if not all(isinstance(lock, str) and lock for lock in locks):
            raise TargetError(f"Target({self.name}).locks={self.locks!r} must be key names or patterns, e.g. ('lock:*',).")
        object.__setattr__(self, "locks", locks)
        slow = tuple(self.slow)
        if not slow or not all(isinstance(s, (int, float)) and 0 < s < float("inf") for s in slow):
            raise TargetError(f"Target({self.name}).slow={self.slow!r} must be positive, finite seconds, e.g. (1, 30).")
        object.__setattr__(self, "slow", tuple(float(s) for s in sorted(set(slow))))
        if not (isinstance(self.clients, int) and 1 <= self.clients <= MAX_CLIENTS):
            raise TargetError(f"Target({self.name}).clients={self.clients!r} must be an integer from 1 to {MAX_CLIENTS}.")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The operation kinds this target supports, in a fixed order."""
        return tuple(k for k in ("read", "write", "delete") if getattr(self, k) is not None)

    def perform(self, instance: Any, kind: str, key: str, value: str | None) -> Any:
        """Run one operation on an app instance (inside its simulated client)."""
        op = getattr(self, kind)
        args: tuple = (key, value) if kind == "write" else (key,)
        if isinstance(op, str):
            method = getattr(instance, op, None)
            if method is None:
                raise TargetError(f"Target({self.name}).{kind}={op!r}: {type(instance).__name__} has no such method.")
            return method(*args)
        return op(instance, *args)

    def observed(self, result: Any) -> str | None:
        """The comparable value a read result stands for (a value token, or None)."""
        value = self.observe(result)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bytes):
            return value.decode("utf-8", "backslashreplace")
        return str(value)

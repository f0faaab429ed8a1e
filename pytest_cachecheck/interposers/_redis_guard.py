"""The connections a layer gets on a real Redis: what they refuse, and how a refusal reads.

Every client and pool the harness hands a layer on a real server makes its connections from
:func:`guarded`, so the rules below hold for the scheduled client, its pipelines and
transactions, and for a raw ``redis.Redis(connection_pool=r.connection_pool)`` alike.

* **Refused before sending** (:func:`refusal`): commands that reach beyond the run's keys
  (whole databases, the server, other clients, shared script and function caches), and
  ``AUTH``/``HELLO``/``RESET``, which would log the connection in as someone else (Redis never
  lets an ACL forbid those).  Nothing of a pipeline or MULTI holding one is sent.
* **Refused by the server**: whatever the run's ACL user may not do (a key outside the run's
  prefix, inside Lua too) comes back as ``NOPERM``.

Either way the layer gets a :class:`RefusedError` (a ``redis.exceptions.NoPermissionError``)
whose message begins with :data:`~pytest_cachecheck.history.REFUSED` and names the command, so
the ``confinement`` checker reports "client 1 tried to FLUSHALL".  A refusal on a connection
the layer reached around the interposer (a raw pool: no scheduling point is running) is recorded
in the history as a call of its own, so a layer that swallows the error is still reported.

Invariant: a refused command is never sent; the connection's replies stay in step with its
commands (nothing is read or skipped on the layer's behalf).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable

import redis
import redis.exceptions

from ..engine import _context
from ..history import REFUSED, Call
from ..history._calls import render_command

# Commands refused before sending: the run's ACL user may not run them either (see _redis_acl),
# but refusing them here also confines a run that was allowed to go unconfined.
REFUSED_COMMANDS = frozenset({
    "FLUSHALL", "FLUSHDB", "SWAPDB", "SELECT", "MOVE", "MIGRATE", "CONFIG", "SHUTDOWN", "DEBUG",
    "REPLICAOF", "SLAVEOF", "FAILOVER", "ACL", "MODULE", "BGSAVE", "SAVE", "BGREWRITEAOF",
    "MONITOR", "SYNC", "PSYNC", "RANDOMKEY", "DBSIZE", "INFO", "LATENCY", "SLOWLOG", "CLUSTER",
    "AUTH", "HELLO", "RESET",
})
REFUSED_SUBCOMMANDS = frozenset({
    ("SCRIPT", "FLUSH"), ("SCRIPT", "KILL"), ("SCRIPT", "DEBUG"),
    ("FUNCTION", "LOAD"), ("FUNCTION", "FLUSH"), ("FUNCTION", "DELETE"), ("FUNCTION", "RESTORE"),
    ("FUNCTION", "KILL"),
    ("CLIENT", "KILL"), ("CLIENT", "PAUSE"), ("CLIENT", "UNPAUSE"), ("CLIENT", "LIST"),
    ("CLIENT", "NO-EVICT"), ("CLIENT", "UNBLOCK"), ("CLIENT", "TRACKING"), ("CLIENT", "REPLY"),
    ("CLIENT", "CACHING"), ("MEMORY", "PURGE"), ("MEMORY", "STATS"), ("MEMORY", "DOCTOR"),
    ("MEMORY", "MALLOC-STATS"),
})
_CONTAINERS = frozenset({
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "FUNCTION", "LATENCY", "MEMORY", "MODULE", "OBJECT",
    "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
})
"""Commands whose first argument is a subcommand: a refusal names both (``CONFIG SET``)."""

# How the server words a permission refusal: NOPERM replies, and Lua's for a call inside a script.
_PERMISSION_MARKS = ("NOPERM", "no permissions to", "can't run this command", "can't access at least one of")


class RefusedError(redis.exceptions.NoPermissionError):
    """A command refused because it reached beyond the run's keys; the message begins with REFUSED."""

    def __repr__(self) -> str:  # redis-py's own repr drops the message, which a history needs
        return f"RefusedError({str(self)!r})"


def text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def split_name(args: tuple) -> tuple:
    """``("MEMORY USAGE", k)`` as redis-py packs it: ``("MEMORY", "USAGE", k)``.

    redis-py's own methods name many commands as one string with a space (``config_set``,
    ``memory_usage``, ``xgroup_create``); the packer splits it, and so must anything that reads
    a command before it is packed.
    """
    if args and isinstance(args[0], (str, bytes)) and (" " in args[0] if isinstance(args[0], str) else b" " in args[0]):
        return (*args[0].split(), *args[1:])
    return tuple(args)


def rejoin(original: tuple, rewritten: list[Any]) -> list[Any]:
    """``rewritten`` (of ``split_name(original)``) under ``original``'s own name again, so that
    redis-py picks the same reply callback (``"XGROUP CREATE"``'s, not ``"XGROUP"``'s)."""
    words = len(split_name(original)) - len(original) + 1
    return [original[0], *rewritten[words:]] if words > 1 else rewritten


def command_name(args: Iterable[Any]) -> str:
    """``FLUSHALL``, or ``CLIENT KILL`` for a container command: what the layer tried."""
    args = list(split_name(tuple(args)))
    name = text(args[0]).upper() if args else ""
    if name in _CONTAINERS and len(args) > 1:
        return f"{name} {text(args[1]).upper()}"
    return name


def refusal(args: tuple) -> str | None:
    """Why ``args`` may not be sent at all, or None."""
    args = split_name(args)
    name = text(args[0]).upper() if args else ""
    sub = text(args[1]).upper() if len(args) > 1 else ""
    if name in REFUSED_COMMANDS or (name, sub) in REFUSED_SUBCOMMANDS:
        return "refused by cachecheck, not sent"
    if name == "COPY" and any(text(arg).upper() == "DB" for arg in args[3:]):
        return "COPY ... DB reaches another database; refused by cachecheck, not sent"
    return None


def refused(args: tuple, detail: str) -> RefusedError:
    return RefusedError(f"{REFUSED}: {command_name(args)} reaches beyond the run's keys ({detail})")


def is_permission_error(error: BaseException) -> bool:
    if isinstance(error, RefusedError):
        return False
    if isinstance(error, redis.exceptions.NoPermissionError):
        return True
    return isinstance(error, redis.exceptions.ResponseError) and any(mark in str(error) for mark in _PERMISSION_MARKS)


def _server_refusal(args: tuple, error: BaseException) -> RefusedError:
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return refused(args, f"Redis ACL: {first_line}")


def _marked(args: tuple, reply: Any) -> Any:
    """A reply inside EXEC's: a permission error becomes a recorded :class:`RefusedError`."""
    if not is_permission_error(reply):
        return reply
    marked = _server_refusal(args, reply)
    _record(args, marked)
    return marked


def _record(args: tuple, error: RefusedError) -> None:
    """Log a refusal the interposer did not see (a raw pool): outside any scheduling point."""
    task = _context.current_task()
    if task is None or task.in_point or task.cancelled:
        return
    task.scheduler.log(
        Call,
        client=task.client,
        actor=task.name,
        op=task.op,
        system="redis",
        command=render_command(args),
        result=f"raised {type(error).__name__}: {error}",
    )


class _GuardedConnection:
    """Mixed into a redis-py connection class: refuses before sending, marks server refusals."""

    _cachecheck_handshake = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._cachecheck_sent: deque[tuple] = deque()
        self._cachecheck_multi: list[tuple] | None = None

    # redis-py's own handshake (HELLO/AUTH, CLIENT SETNAME, SELECT) is not the layer's doing.
    def on_connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
        previous, self._cachecheck_handshake = self._cachecheck_handshake, True
        try:
            return super().on_connect_check_health(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._cachecheck_handshake = previous

    def disconnect(self, *args: Any, **kwargs: Any) -> Any:
        self._cachecheck_sent.clear()
        self._cachecheck_multi = None
        return super().disconnect(*args, **kwargs)  # type: ignore[misc]

    def _cachecheck_guard(self, commands: list[tuple]) -> None:
        if self._cachecheck_handshake:
            return
        for args in commands:
            reason = refusal(args)
            if reason is not None:
                error = refused(args, reason)
                _record(args, error)
                raise error
        self._cachecheck_sent.extend(commands)

    def send_command(self, *args: Any, **kwargs: Any) -> Any:
        self._cachecheck_guard([args])
        return super().send_command(*args, **kwargs)  # type: ignore[misc]

    def pack_command(self, *args: Any) -> Any:
        # Packing for a later send: guarded, but not queued (send_packed_command is opaque).
        if not self._cachecheck_handshake and (reason := refusal(args)) is not None:
            raise refused(args, reason)
        return super().pack_command(*args)  # type: ignore[misc]

    def pack_commands(self, commands: Iterable[tuple]) -> Any:
        commands = [tuple(args) for args in commands]
        self._cachecheck_guard(commands)
        return super().pack_commands(commands)  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        sent = self._cachecheck_sent.popleft() if self._cachecheck_sent and not self._cachecheck_handshake else None
        name = text(sent[0]).upper() if sent else ""
        queued = self._cachecheck_multi
        # A transaction's commands are remembered from MULTI to EXEC, to name what EXEC's replies refuse.
        if name == "MULTI":
            self._cachecheck_multi = []
        elif name in ("EXEC", "DISCARD"):
            self._cachecheck_multi = None
        elif sent is not None and queued is not None:
            queued.append(sent)
        try:
            response = super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.ResponseError as error:
            if sent is not None and is_permission_error(error):
                marked = _server_refusal(sent, error)
                _record(sent, marked)
                raise marked from None
            raise
        if name == "EXEC" and queued and isinstance(response, list):
            response = [_marked(command, reply) for command, reply in zip(queued, response)] + response[len(queued):]
        return response


_classes: dict[type, type] = {}


def guarded(connection_class: type) -> type:
    """``connection_class`` with the guard mixed in (one class per base, reused)."""
    cls = _classes.get(connection_class)
    if cls is None:
        cls = _classes[connection_class] = type(
            f"Guarded{connection_class.__name__}", (_GuardedConnection, connection_class), {}
        )
    return cls

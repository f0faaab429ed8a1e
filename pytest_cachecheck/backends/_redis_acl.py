"""The run's own Redis ACL user: the server itself confines the layer to the run's keys.

Each exploration on a real Redis creates ``cachecheck-<run>`` with a random password::

    ACL SETUSER cachecheck-<run> reset on >PASSWORD ~cachecheck:<run>:* &cachecheck:<run>:*
        -@all +@read +@write +@keyspace +@string +@hash +@list +@set +@sortedset +@stream
        +@bitmap +@hyperloglog +@geo +@scripting +@transaction +@pubsub +@blocking +@connection
        -@admin -@dangerous -select +select|<db> -move -randomkey -scan -dbsize ...

and every connection the layer gets logs in as it, so the server refuses, inside pipelines,
MULTI/EXEC, Lua scripts and functions alike:

* any key outside ``cachecheck:<run>:*`` (the key rewriting puts the layer's keys there; a
  script's undeclared key, ``OBJECT``/``MEMORY USAGE`` of a foreign key, ``XGROUP CREATE ...
  MKSTREAM`` of one are refused) and any channel outside the same prefix;
* whole-database and server commands (``@admin``, ``@dangerous``: FLUSHALL, FLUSHDB, SWAPDB,
  CONFIG, SHUTDOWN, DEBUG, CLIENT KILL/PAUSE/LIST, KEYS, INFO, ...);
* commands that read or move data without naming keys, which key patterns cannot confine:
  ``SELECT`` (except the URL's own database), ``MOVE``, ``RANDOMKEY``, ``SCAN``, ``DBSIZE``,
  ``PUBSUB`` introspection, ``CLIENT TRACKING`` (invalidations name every key);
* shared server state: ``FUNCTION LOAD/DELETE/FLUSH/RESTORE/KILL``, ``SCRIPT FLUSH/KILL/DEBUG``,
  ``CLIENT REPLY``/``CACHING``, ``MEMORY`` other than ``USAGE``.

What the user keeps: every data-structure command on its own keys, ``EVAL``/``EVALSHA``/
``FCALL``, ``SCRIPT LOAD``/``EXISTS`` (redis-py's ``register_script``), MULTI/EXEC/WATCH,
PUBLISH/SUBSCRIBE on its own channels, PING/ECHO/TIME/CLIENT SETNAME/ID/INFO.  The harness's
own work (cleanup, expiry, ``KEYS``/``SCAN`` confined to the prefix) runs on the login the
user gave.  Limits: Redis always allows ``AUTH``, ``HELLO`` and ``RESET`` (the guard in
``_redis_guard`` refuses them on the connections the harness hands out), and code that opens a
connection of its own logs in as whoever it can.
"""

from __future__ import annotations

import secrets
from typing import Any

import redis

USER_PREFIX = "cachecheck-"
"""ACL users are ``cachecheck-<run>``; the run's key prefix is ``cachecheck:<run>:``."""

CATEGORIES = (
    "read", "write", "keyspace", "string", "hash", "list", "set", "sortedset", "stream", "bitmap",
    "hyperloglog", "geo", "scripting", "transaction", "pubsub", "blocking", "connection",
)
DENIED = (
    "select", "move", "randomkey", "scan", "dbsize", "pubsub", "client|tracking", "client|reply",
    "client|caching", "client|getredir", "client|trackinginfo", "function|load", "function|delete",
    "function|flush", "function|restore", "function|kill", "script|flush", "script|kill",
    "script|debug", "memory|purge", "memory|stats", "memory|doctor", "memory|malloc-stats",
)
"""Removed after ``-@admin -@dangerous``; names the server does not know are left out."""

MIN_VERSION = (7, 0)


def user_name(run: str) -> str:
    return USER_PREFIX + run


def rules(run: str, password: str, db: int, known: set[str]) -> list[str]:
    """The ``ACL SETUSER`` rules of run ``run``'s user; ``known``: the server's command names."""
    prefix = f"cachecheck:{run}:*"
    out = ["reset", "on", f">{password}", f"~{prefix}", f"&{prefix}", "-@all"]
    out += [f"+@{category}" for category in CATEGORIES]
    out += ["-@admin", "-@dangerous"]
    out += [f"-{name}" for name in DENIED if name in known]
    out.append(f"+select|{db}")
    return out


class RunUser:
    """The ACL user of one run: :meth:`create` (again after a server restart), :meth:`delete`."""

    def __init__(self, admin: redis.Redis, run: str, db: int, known: set[str]) -> None:
        self.admin = admin
        self.name = user_name(run)
        self.password = secrets.token_hex(24)
        self.rules = rules(run, self.password, db, known)

    def create(self) -> None:
        self.admin.execute_command("ACL", "SETUSER", self.name, *self.rules)

    def delete(self) -> None:
        """Deleting the user also disconnects every connection logged in as it."""
        self.admin.execute_command("ACL", "DELUSER", self.name)


def known_commands(commands: dict[str, Any]) -> set[str]:
    """Lower-case names in the server's ``COMMAND`` reply, ``container|sub`` included, as ACL rules spell them."""
    names: set[str] = set()
    for name, info in commands.items():
        names.add(str(name).lower())
        for sub in info.get("subcommands") or ():
            names.add(_text(sub[0]).lower())
    return names


def version(client: redis.Redis) -> tuple[int, ...] | None:
    """The server's version, from the handshake of a fresh connection (needs no rights)."""
    try:
        info = client.execute_command("HELLO")
    except redis.RedisError:
        return None
    raw = info.get(b"version", info.get("version")) if isinstance(info, dict) else None
    if raw is None and isinstance(info, list):  # RESP2 flattens the map
        pairs = dict(zip(info[::2], info[1::2]))
        raw = pairs.get(b"version", pairs.get("version"))
    try:
        return tuple(int(part) for part in _text(raw).split(".")[:3])
    except (TypeError, ValueError):
        return None


def missing(client: redis.Redis, *, unconfined: bool = False) -> str | None:
    """What keeps the login of ``client`` from running a confined run, and the fix; None if nothing.

    The version is always checked (the safety TTL needs ``PEXPIRETIME``, Redis 7.0); the rights
    unless ``unconfined``: an ACL user is created, disabled and with no rights, and deleted.
    """
    found = version(client)
    if found is not None and found < MIN_VERSION:
        shown = ".".join(map(str, found))
        return (
            f"the server is Redis {shown}; cachecheck needs Redis 7.0 or newer (per-run ACL users, "
            "PEXPIRETIME for the safety TTL): upgrade the server or use the embedded default"
        )
    if unconfined:
        return None
    probe = f"{USER_PREFIX}probe-{secrets.token_hex(4)}"
    try:
        client.execute_command("ACL", "SETUSER", probe, "reset", "off")
        client.execute_command("ACL", "DELUSER", probe)
    except redis.ResponseError as error:
        first = (str(error).strip().splitlines() or ["refused"])[0]
        return (
            f"the login {_whoami(client)!r} cannot create ACL users ({first}), which cachecheck needs to "
            "confine the layer to the run's keys; log in as a user with ACL rights (e.g. +acl|setuser "
            "+acl|deluser +acl|users +client|list), or pass --cachecheck-unconfined to run without it"
        )
    return None


def _whoami(client: redis.Redis) -> str:
    try:
        return _text(client.execute_command("ACL", "WHOAMI"))
    except redis.RedisError:
        return _text(client.connection_pool.connection_kwargs.get("username") or "default")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)

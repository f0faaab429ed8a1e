"""A real Redis server as the cache side, confined to a key prefix, with expiry in virtual time.

Confinement.  Every key a layer names is rewritten to ``cachecheck:<run>:<example>:<key>``,
at the positions the server's own ``COMMAND INFO`` gives (and the ``numkeys`` of
``EVAL``/``EVALSHA``/``FCALL``); ``KEYS`` and ``SCAN`` patterns are confined too, and the keys
they return are given back unprefixed.  A command whose keys cannot be located
(``movablekeys`` other than scripts) is refused with an error, never sent; so is any command
that reaches beyond a prefix (FLUSHALL, FLUSHDB, SELECT, CONFIG, SCRIPT FLUSH, ...).  Between examples,
and when the exploration ends, exactly the keys under the run's prefix are unlinked: never
FLUSHALL, never FLUSHDB.  Scripts run by the layer are cached by the server (``SCRIPT LOAD``)
and left there: the script cache is shared and the harness does not own it.

Virtual time.  The server's clock cannot be moved, so the harness owns expiry: any command that
can set a TTL (``SET ... EX``, ``SETEX``, ``EXPIRE``, a script, ...) runs inside a MULTI/EXEC
with ``PTTL`` and ``PERSIST`` of its keys, so the TTL the server computed is read atomically and
taken over as a virtual deadline; the key itself never expires on the server.  Before every
command, keys whose virtual deadline has passed are deleted; ``TTL``/``PTTL``/``EXPIRETIME``
answer from the deadlines.  Limits: a script that sets a TTL on a key it did not declare in
``KEYS``, and ``OBJECT``/``DEBUG`` introspection, see the server's view, not the virtual one.
"""

from __future__ import annotations

import itertools
import math
import secrets
from typing import Any, Callable

import redis
import redis.client

from ._clock import EPOCH
from ._redis import scheduled_client
from ._scheduler import Scheduler

_SCRIPTS = {"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"}
_TTL_SETTERS = {
    "SET", "SETEX", "PSETEX", "GETEX", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "RESTORE",
    "PERSIST", "GETSET", "RENAME", "RENAMENX", "COPY", "MOVE",
}
_TTL_READERS = {"TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"}
_DELETERS = {"DEL", "UNLINK", "GETDEL"}
# Commands that reach beyond any prefix: whole databases, the server itself, shared caches.
_REFUSED = {
    "FLUSHALL", "FLUSHDB", "SWAPDB", "SELECT", "MOVE", "MIGRATE", "CONFIG", "SHUTDOWN", "DEBUG",
    "REPLICAOF", "SLAVEOF", "FAILOVER", "ACL", "MODULE", "BGSAVE", "SAVE", "BGREWRITEAOF",
}
_REFUSED_SUBCOMMANDS = {("SCRIPT", "FLUSH"), ("FUNCTION", "FLUSH"), ("FUNCTION", "DELETE"), ("CLIENT", "KILL")}


class UnsupportedCommand(redis.RedisError):
    """A command whose keys the harness cannot confine to its prefix on a shared server."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


class RealRedisCache:
    """The cache side on a real server at ``url``."""

    def __init__(self, url: str, *, private: Any = None) -> None:
        self.url = url
        self.private = private
        """A :class:`~pytest_cachecheck._private_redis.PrivateRedis` the harness may kill -9."""
        self.name = f"Redis at {redis.connection.parse_url(url).get('host', url)}"
        self.admin = redis.Redis.from_url(url)
        self.specs = {
            _text(name).upper(): (
                info.get("first_key_pos", 0),
                info.get("last_key_pos", 0),
                info.get("step_count", 0),
                "movablekeys" in [_text(flag) for flag in info.get("flags", ())],
            )
            for name, info in self.admin.command().items()
        }
        self.base = f"cachecheck:{secrets.token_hex(4)}:"
        self._examples = itertools.count(1)
        self.prefix = self.base + "0:"
        self.deadlines: dict[str, float] = {}
        self._clients: dict[tuple[int, bool], redis.Redis] = {}

    # -- the cache side --------------------------------------------------------------------

    def reset(self) -> None:
        self._unlink_under(self.prefix)
        self.prefix = f"{self.base}{next(self._examples)}:"
        self.deadlines = {}

    def client(self, slot: int, scheduler: Scheduler, decode_responses: bool) -> Any:
        client = self._clients.get((slot, decode_responses))
        if client is None:
            client = redis.Redis.from_url(self.url, decode_responses=decode_responses)
            self._clients[slot, decode_responses] = client
        scheduled = scheduled_client(client, scheduler)
        scheduled._cachecheck_policy = Confinement(self, scheduler)  # type: ignore[attr-defined]
        return scheduled

    def next_expiry(self, clock: Any) -> float | None:
        pending = [deadline - clock.now for deadline in self.deadlines.values() if deadline >= clock.now]
        return min(pending) if pending else None

    def lose_everything(self) -> None:
        """The cache loses what it holds: kill -9 and restart of a private server (which keeps
        what its AOF, if any, had synced), or on a shared server the example's keys only."""
        if self.private is not None:
            self.private.restart()
            self.deadlines = {key: t for key, t in self.deadlines.items() if self.admin.exists(self.prefix + key)}
        else:
            self._unlink_under(self.prefix)
            self.deadlines = {}

    def close(self) -> None:
        try:
            self._unlink_under(self.base)
        finally:
            for client in [*self._clients.values(), self.admin]:
                client.close()

    def _unlink_under(self, prefix: str) -> None:
        batch: list[bytes] = []
        for key in self.admin.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                self.admin.unlink(*batch)
                batch = []
        if batch:
            self.admin.unlink(*batch)


class Confinement:
    """Rewrites one client's commands into the run's prefix and owns their expiry."""

    def __init__(self, cache: RealRedisCache, scheduler: Scheduler) -> None:
        self.cache = cache
        self.clock = scheduler.clock

    def execute(self, client: redis.Redis, args: tuple, send: Callable[..., Any]) -> Any:
        """Run one command for the layer: ``send(*args)`` sends it as the layer's client would."""
        self._expire_due()
        name = _text(args[0]).upper()
        sub = _text(args[1]).upper() if len(args) > 1 else ""
        if name in _REFUSED or (name, sub) in _REFUSED_SUBCOMMANDS:
            raise UnsupportedCommand(
                f"{' '.join([name, sub]).strip()} is refused on a shared Redis server: it reaches beyond the "
                "run's key prefix (run the layer on the embedded default to test it)"
            )
        if name in _TTL_READERS:
            return self._read_ttl(name, _text(args[1]), send)
        keys, rewritten = self.rewrite(name, args)
        if name in _TTL_SETTERS or name in _SCRIPTS:
            result = self._capturing_ttls(client, rewritten, keys)
        else:
            result = send(*rewritten)
        if name in _DELETERS:
            for key in keys:
                self.cache.deadlines.pop(key, None)
        return self._unprefixed(name, result)

    def rewrite(self, name: str, args: tuple) -> tuple[list[str], list[Any]]:
        """The layer's keys in ``args``, and ``args`` with those keys prefixed."""
        prefix = self.cache.prefix
        out = list(args)
        if name in _SCRIPTS:
            count = int(out[2])
            positions = range(3, 3 + count)
        elif name == "KEYS":
            out[1] = prefix + _text(out[1])
            return [], out
        elif name == "SCAN":
            return [], self._confined_scan(out)
        else:
            first, last, step, movable = self.cache.specs.get(name, (0, 0, 0, False))
            if movable:
                raise UnsupportedCommand(
                    f"{name} takes keys at positions cachecheck cannot locate; on a real server it is "
                    "refused so that nothing outside the run's prefix is touched"
                )
            if first == 0:
                return [], out
            end = len(out) + last if last < 0 else last
            positions = range(first, end + 1, step or 1)
        keys = []
        for position in positions:
            key = _text(out[position])
            keys.append(key)
            out[position] = prefix + key
        return keys, out

    def _confined_scan(self, args: list[Any]) -> list[Any]:
        out = list(args)
        upper = [_text(a).upper() for a in out]
        if "MATCH" in upper:
            i = upper.index("MATCH") + 1
            out[i] = _glob_escape(self.cache.prefix) + _text(out[i])
        else:
            out += ["MATCH", _glob_escape(self.cache.prefix) + "*"]
        return out

    def _unprefixed(self, name: str, result: Any) -> Any:
        prefix = self.cache.prefix

        def strip(key: Any) -> Any:
            if isinstance(key, bytes):
                return key[len(prefix):] if key.startswith(prefix.encode()) else key
            return key[len(prefix):] if isinstance(key, str) and key.startswith(prefix) else key

        if name == "KEYS":
            return [strip(key) for key in result]
        if name == "SCAN":
            cursor, keys = result
            return cursor, [strip(key) for key in keys]
        return result

    def _capturing_ttls(self, client: redis.Redis, args: list[Any], keys: list[str]) -> Any:
        """Run a command that may set TTLs, taking them over as virtual deadlines atomically."""
        pipe = redis.client.Pipeline(client.connection_pool, client.response_callbacks, True, None)
        pipe.execute_command(*args)
        self.capture(pipe, keys)
        results = pipe.execute(raise_on_error=False)
        self.captured(keys, results[1:])
        if isinstance(results[0], Exception):
            raise results[0]
        return results[0]

    def capture(self, pipe: Any, keys: list[str]) -> int:
        """Queue ``PTTL`` and ``PERSIST`` of ``keys`` on ``pipe``; returns how many replies they add."""
        for key in keys:
            pipe.execute_command("PTTL", self.cache.prefix + key)
            pipe.execute_command("PERSIST", self.cache.prefix + key)
        return 2 * len(keys)

    def captured(self, keys: list[str], replies: list[Any]) -> None:
        """Take over the TTLs read by :meth:`capture` as virtual deadlines."""
        for key, ttl in zip(keys, replies[::2]):
            if isinstance(ttl, int) and ttl >= 0:
                self.cache.deadlines[key] = self.clock.now + ttl / 1000.0
            else:
                self.cache.deadlines.pop(key, None)

    def is_ttl_setter(self, name: str) -> bool:
        return name in _TTL_SETTERS or name in _SCRIPTS

    def _read_ttl(self, name: str, key: str, send: Callable[..., Any]) -> Any:
        if not send("EXISTS", self.cache.prefix + key):
            return -2
        deadline = self.cache.deadlines.get(key)
        if deadline is None:
            return -1
        remaining = deadline - self.clock.now
        return {
            "TTL": math.ceil(remaining) if remaining > 0 else 0,
            "PTTL": math.ceil(remaining * 1000),
            "EXPIRETIME": int(EPOCH + deadline),
            "PEXPIRETIME": int((EPOCH + deadline) * 1000),
        }[name]

    def _expire_due(self) -> None:
        """Delete the keys whose virtual deadline has passed (strictly, as Redis does)."""
        due = [key for key, deadline in self.cache.deadlines.items() if deadline < self.clock.now]
        if due:
            self.cache.admin.unlink(*(self.cache.prefix + key for key in due))
            for key in due:
                del self.cache.deadlines[key]


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)

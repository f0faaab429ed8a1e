"""A real Redis server as the cache side: the run's own keys, expiry in virtual time.

Safety.  The server confines the layer: every connection handed to it logs in as the run's own
ACL user (``_redis_acl``: keys and channels under ``cachecheck:<run>:``, harmless commands
only), and refuses some commands before sending (``_redis_guard``); a refusal reaches the layer
as a ``cachecheck: refused`` error and the ``confinement`` checker reports it.  The harness's
own work (cleanup, expiry, confined ``KEYS``/``SCAN``, bookkeeping) runs on the login the user
gave.  With ``unconfined=True`` no ACL user is made and the layer's connections use that login
(only the guard and the key rewriting then keep the layer in its lane).  Each run keeps a
heartbeat and, when it starts, sweeps what dead runs left (``_sweep_redis``); the one-line
account is :attr:`RealRedisCache.swept`.

Layout.  Every key a layer names is rewritten to ``cachecheck:<run>:<example>:<key>``, at the
positions the server's own ``COMMAND INFO`` gives for the command or its subcommand (and the
``numkeys`` of ``EVAL``/``EVALSHA``/``FCALL``); ``PUBLISH`` channels likewise; ``KEYS`` and
``SCAN`` patterns are confined and the keys they return given back unprefixed.  A command whose
keys cannot be located (``movablekeys`` other than scripts) is refused, never sent.  Between
examples the keys the interposer named are unlinked, without scanning the shared keyspace; a
key a script wrote without declaring it stays under its example's prefix, which no later
example uses, until the exploration ends and one ``SCAN`` of the run's prefix unlinks the rest.
Never FLUSHALL, never FLUSHDB.

Safety TTL.  Every key written under the prefix carries a server-side expiry at
``safety_at`` = the server's time at the start of the example + :data:`SAFETY_TTL`, so what a
killed run leaves expires on its own.  Every write command, script and TTL setter runs inside
one MULTI/EXEC with ``PTTL``, ``PEXPIRETIME`` and ``PEXPIREAT <safety_at>`` of its keys.

Virtual time.  The server's clock cannot be moved, so the harness owns expiry: the TTL the
server computed for a command becomes a virtual deadline, and the server's own expiry is the
safety one.  The rule, per key, after each such command: ``PTTL`` -2 (gone) drops the deadline;
``PEXPIRETIME`` equal to ``safety_at`` means the command left the TTL alone (``KEEPTTL``,
``GETEX`` without options, ``HSET``...) and keeps the deadline; ``PTTL`` -1 (``SET`` without
options, ``PERSIST``) drops it; any other ``PTTL`` is the layer's TTL: deadline = now + PTTL.
``RENAME``/``COPY`` carry the source's deadline.  Absolute expiries (``EXPIREAT``, ``EXAT``,
``PXAT``) are read in virtual time and sent relative; ``EXPIRE``'s ``NX``/``XX``/``GT``/``LT``
are decided against the virtual deadline (inside a pipeline, the one at its start).  Before
every command, keys whose virtual deadline has passed are deleted; ``TTL``/``PTTL``/
``EXPIRETIME`` answer from the deadlines.  Limits: a script that sets a TTL on a key it did not
declare in ``KEYS``, and ``OBJECT``/``DEBUG`` introspection, see the server's view.
"""

from __future__ import annotations

import itertools
import math
import secrets
from typing import Any, Callable

import redis
import redis.client

from ..engine._clock import EPOCH
from ..engine._scheduler import Scheduler
from ..interposers._redis import KeySpec, key_positions, key_specs, scheduled_client
from ..interposers._redis_guard import guarded, rejoin, split_name
from ._redis_acl import RunUser, known_commands
from ._server_error import ServerError, safe_url
from ._sweep_redis import HEARTBEAT_NAME, Heartbeat, sweep

SAFETY_TTL = 3600
"""Seconds after an example starts by which the server expires every key it wrote, whatever
TTL the layer set (that one is kept as a virtual deadline).  Longer than any example's wall
time; short enough that a killed run's keys do not pile up."""

_SCRIPTS = {"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"}
_TTL_SETTERS = {
    "SET", "SETEX", "PSETEX", "GETEX", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "RESTORE",
    "PERSIST", "GETSET", "RENAME", "RENAMENX", "COPY", "MOVE",
}
_TTL_READERS = {"TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"}
_LISTINGS = {"KEYS", "SCAN"}
_CHANNELS = {"PUBLISH", "SPUBLISH"}
_MOVABLE_KNOWN = {"XREAD", "XREADGROUP", "BLMPOP", "BZMPOP", "LMPOP", "ZMPOP", "SINTERCARD", "ZINTERCARD",
                  "ZUNION", "ZINTER", "ZDIFF", "ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"}
"""Commands with movable keys whose positions the interposer locates (``numkeys``, ``STREAMS``)."""
_REPLY_LEADS_WITH_KEY = {"BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "BLMPOP", "LMPOP", "BZMPOP", "ZMPOP"}
_REPLIES_WITH_KEYS = _REPLY_LEADS_WITH_KEY | {"XREAD", "XREADGROUP"}
"""Commands whose reply names the keys it came from: given back without the run's prefix."""
_CONDITIONS = {"NX", "XX", "GT", "LT"}
_CARRY_DEADLINE = {"RENAME", "RENAMENX", "COPY"}
_BATCH = 500


class UnsupportedCommand(redis.RedisError):
    """A command whose keys the harness cannot confine to its prefix on a shared server."""


_Spec = KeySpec
_specs = key_specs  # shared with the interposer, which records the keys the layer named


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, (bytes, bytearray)) else str(value)


def _raw(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode()


class RealRedisCache:
    """The cache side on a real server at ``url``."""

    def __init__(self, url: str, *, private: Any = None, unconfined: bool = False) -> None:
        self.url = url
        self.private = private
        """A :class:`~pytest_cachecheck.backends._private_redis.PrivateRedis` the harness may kill -9."""
        self.unconfined = unconfined
        parsed = redis.connection.parse_url(url)
        host = parsed.get("host", url)
        self.name = f"Redis at {host}"
        self.where = parsed.get("path") or f"{host}:{parsed.get('port', 6379)}"
        self.db = int(parsed.get("db") or 0)
        self.run = secrets.token_hex(4)
        self.base = f"cachecheck:{self.run}:"
        # The heartbeat comes first: from here on, no other run's sweep touches this one.
        self.admin = redis.Redis.from_url(url, client_name=HEARTBEAT_NAME.format(run=self.run))
        self.heartbeat = Heartbeat(self.admin, self.run)
        commands = self.admin.command()
        self.specs = _specs(commands)
        self.swept: str | None = sweep(self.admin, self.run, self.where)
        """One line saying what dead runs' leftovers this run removed when it started, or None."""
        self.user: RunUser | None = None
        if not unconfined:
            self.user = RunUser(self.admin, self.run, self.db, known_commands(commands))
            try:
                self.user.create()
            except redis.ResponseError as error:
                self.heartbeat.stop()
                self.admin.close()
                raise ServerError(
                    f"--cachecheck-redis={safe_url(url)}: cannot create the run's ACL user ({error}); log in as a "
                    "user with ACL rights, or pass --cachecheck-unconfined to run without the server's confinement"
                ) from None
        self._examples = itertools.count(1)
        self.prefix = self.base + "0:"
        self.deadlines: dict[bytes, float] = {}
        """Virtual deadlines of this example's keys, by full server key."""
        self.touched: set[bytes] = set()
        """Full server keys the interposer named in this example."""
        self.safety_at = self._server_ms() + SAFETY_TTL * 1000
        self._clients: dict[tuple[int, bool], redis.Redis] = {}

    # -- the cache side --------------------------------------------------------------------

    def reset(self) -> None:
        self._clear_example()
        self.prefix = f"{self.base}{next(self._examples)}:"
        self.deadlines = {}
        self.safety_at = self._server_ms() + SAFETY_TTL * 1000

    def client(self, slot: int, scheduler: Scheduler, decode_responses: bool) -> Any:
        client = self._clients.get((slot, decode_responses))
        if client is None:
            base = redis.connection.parse_url(self.url).get("connection_class", redis.Connection)
            client = redis.Redis.from_url(self.url, decode_responses=decode_responses, connection_class=guarded(base))
            # The guard pairs each reply with its command; a health-check PING sent in between would not be.
            client.connection_pool.connection_kwargs["health_check_interval"] = 0
            if self.user is not None:
                client.connection_pool.connection_kwargs.update(username=self.user.name, password=self.user.password)
            self._clients[slot, decode_responses] = client
        scheduled = scheduled_client(client, scheduler, self.specs)  # the record names keys as the layer did
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
            self.heartbeat.start()
            if self.user is not None:
                self.user.create()  # ACL users live in memory only
            self.deadlines = {key: t for key, t in self.deadlines.items() if self.admin.exists(key)}
        else:
            self._clear_example()
            self._unlink_under(self.prefix)  # what scripts wrote undeclared is lost too
            self.deadlines = {}

    def close(self) -> None:
        try:
            if self.user is not None:
                self.user.delete()
        finally:
            try:
                self._unlink_under(self.base)
            finally:
                self.heartbeat.stop()
                for client in [*self._clients.values(), self.admin]:
                    client.close()

    def _clear_example(self) -> None:
        """Unlink the keys the interposer named in this example: no SCAN of a shared keyspace.

        Keys a script wrote without declaring them stay, under this example's prefix (which no
        later example uses), until :meth:`close` scans the run's prefix.
        """
        touched = list(self.touched)
        for start in range(0, len(touched), _BATCH):
            self.admin.unlink(*touched[start : start + _BATCH])
        self.touched = set()

    def _unlink_under(self, prefix: str) -> None:
        batch: list[bytes] = []
        for key in self.admin.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) >= _BATCH:
                self.admin.unlink(*batch)
                batch = []
        if batch:
            self.admin.unlink(*batch)

    def _server_ms(self) -> int:
        seconds, micros = self.admin.time()
        return int(seconds) * 1000 + int(micros) // 1000


class Confinement:
    """Rewrites one client's commands into the run's prefix and owns their expiry."""

    def __init__(self, cache: RealRedisCache, scheduler: Scheduler) -> None:
        self.cache = cache
        self.clock = scheduler.clock

    def execute(self, client: redis.Redis, args: tuple, send: Callable[..., Any]) -> Any:
        """Run one command for the layer: ``send(*args)`` sends it as the layer's client would."""
        self._expire_due()
        original, args = args, split_name(args)
        name = _text(args[0]).upper()
        if name in _TTL_READERS and len(args) == 2:
            return self._read_ttl(name, args[1], send)
        if name in _LISTINGS:
            return self._listing(client, name, args)
        keys, rewritten = self.rewrite(name, args)
        rewritten = rejoin(original, rewritten)
        if self.captures(name, args):
            reply = self._capturing_ttls(client, name, rewritten, keys, send)
        else:
            reply = send(*rewritten)
        return self._keys_in_reply(client, name, reply) if name in _REPLIES_WITH_KEYS else reply

    # -- key layout ------------------------------------------------------------------------

    def rewrite(self, name: str, args: tuple) -> tuple[list[bytes], list[Any]]:
        """The full server keys ``args`` names, and ``args`` with those keys prefixed."""
        out = list(args)
        if name in _LISTINGS:
            raise UnsupportedCommand(
                f"{name} inside a pipeline or transaction is not supported on a real server; call it on its own"
            )
        if name in _CHANNELS and len(out) > 1:
            out[1] = self._prefixed(out[1])
            return [], out
        if name in _SCRIPTS:
            positions = range(3, 3 + int(out[2]))
        elif name in _MOVABLE_KNOWN:
            positions = key_positions(self.cache.specs, name, tuple(args))
        else:
            spec = self._spec(name, args)
            if spec is None or spec.first == 0:
                return [], out
            if spec.movable:
                raise UnsupportedCommand(
                    f"{name} takes keys at positions cachecheck cannot locate; on a real server it is "
                    "refused so that nothing outside the run's prefix is touched"
                )
            end = len(out) + spec.last if spec.last < 0 else spec.last
            positions = range(spec.first, end + 1, spec.step or 1)
        keys = []
        for position in positions:
            out[position] = self._prefixed(out[position])
            keys.append(_raw(out[position]))
        self.cache.touched.update(keys)
        out = self._relative_expiry(name, out)
        if name == "XADD":
            out = self._virtual_stream_id(out)
        sent = _text(out[0]).upper()
        if keys and sent in ("EXPIRE", "PEXPIRE"):
            out = self._conditional_expire(sent, out, keys[0])
        return keys, out

    def captures(self, name: str, args: tuple) -> bool:
        """Whether the command may write keys or set TTLs (then it carries the capture)."""
        if name in _SCRIPTS or name in _TTL_SETTERS:
            return True
        spec = self._spec(name, args)
        return spec is not None and spec.write

    def _spec(self, name: str, args: tuple) -> _Spec | None:
        if len(args) > 1:
            sub = self.cache.specs.get(f"{name}|{_text(args[1]).upper()}")
            if sub is not None:
                return sub
        return self.cache.specs.get(name)

    def _prefixed(self, key: Any) -> Any:
        if isinstance(key, (bytes, bytearray, memoryview)):
            return self.cache.prefix.encode() + bytes(key)
        return self.cache.prefix + str(key)

    def _listing(self, client: redis.Redis, name: str, args: tuple) -> Any:
        """``KEYS``/``SCAN`` confined to the prefix, on the harness's login (the run's user may not)."""
        pattern = _glob_escape(self.cache.prefix)
        out = list(args)
        if name == "KEYS":
            out[1] = pattern + _text(out[1])
        else:
            upper = [_text(arg).upper() for arg in out]
            if "MATCH" in upper:
                i = upper.index("MATCH") + 1
                out[i] = pattern + _text(out[i])
            else:
                out += ["MATCH", pattern + "*"]
        result = self.cache.admin.execute_command(*out)
        unprefixed = self._unprefixer(client)
        if name == "KEYS":
            return [unprefixed(key) for key in result]
        cursor, keys = result
        return cursor, [unprefixed(key) for key in keys]

    def _unprefixer(self, client: redis.Redis) -> Callable[[Any], Any]:
        """A server key made the layer's again: the prefix stripped, decoded as the client decodes."""
        decode = client.connection_pool.connection_kwargs.get("decode_responses", False)
        strip = len(self.cache.prefix.encode())

        def unprefixed(key: Any) -> Any:
            key = _raw(key)[strip:]
            return key.decode() if decode else key

        return unprefixed

    def _keys_in_reply(self, client: redis.Redis, name: str, reply: Any) -> Any:
        """Replies that name the key they came from (``BLPOP``, ``ZMPOP``, ``XREAD`` ...), unprefixed."""
        if not reply:
            return reply
        unprefixed = self._unprefixer(client)
        if name in _REPLY_LEADS_WITH_KEY:
            return type(reply)([unprefixed(reply[0]), *reply[1:]])
        if isinstance(reply, dict):  # XREAD under RESP3
            return {unprefixed(stream): entries for stream, entries in reply.items()}
        return [type(pair)([unprefixed(pair[0]), *pair[1:]]) for pair in reply]

    # -- virtual time ----------------------------------------------------------------------

    def _now_absolute(self) -> float:
        return EPOCH + self.clock.now

    def _relative_expiry(self, name: str, out: list[Any]) -> list[Any]:
        """Absolute expiry times are virtual: send them as the equivalent relative ones."""
        if name in ("EXPIREAT", "PEXPIREAT") and len(out) > 2:
            scale = 1.0 if name == "EXPIREAT" else 0.001
            millis = round((float(_text(out[2])) * scale - self._now_absolute()) * 1000)
            return ["PEXPIRE", out[1], millis, *out[3:]]
        if name in ("SET", "GETEX"):
            upper = [_text(arg).upper() for arg in out]
            for option, scale in (("EXAT", 1.0), ("PXAT", 0.001)):
                if option in upper[2:] and upper.index(option, 2) + 1 < len(out):
                    i = upper.index(option, 2)
                    millis = round((float(_text(out[i + 1])) * scale - self._now_absolute()) * 1000)
                    # Already past: an absolute time in the past, as Redis itself would be given.
                    out[i : i + 2] = ["PX", millis] if millis > 0 else ["PXAT", 1]
        return out

    def _virtual_stream_id(self, out: list[Any]) -> list[Any]:
        """``XADD key ... *``: the entry's id from the virtual clock (``<ms>-*``), not the server's.

        The embedded cache numbers entries from the virtual clock too, so both backends give
        the same ids for the same decisions.
        """
        i = 2
        upper = [_text(arg).upper() if isinstance(arg, (str, bytes)) else "" for arg in out]
        while i < len(out):
            if upper[i] == "NOMKSTREAM":
                i += 1
            elif upper[i] in ("MAXLEN", "MINID"):
                i += 3 if i + 1 < len(out) and upper[i + 1] in ("=", "~") else 2
            elif upper[i] == "LIMIT":
                i += 2
            else:
                break
        if i < len(out) and upper[i] == "*":
            out[i] = f"{int(round(self._now_absolute() * 1000))}-*"
        return out

    def _conditional_expire(self, name: str, out: list[Any], key: bytes) -> list[Any]:
        """Decide ``NX``/``XX``/``GT``/``LT`` against the virtual deadline (the server's is the safety one)."""
        flags = {_text(arg).upper() for arg in out[3:]} & _CONDITIONS
        if not flags:
            return out
        seconds = float(_text(out[2])) / (1.0 if name == "EXPIRE" else 1000.0)
        current = self.cache.deadlines.get(key)
        new = self.clock.now + seconds
        applies = all(
            {
                "NX": current is None,
                "XX": current is not None,
                "GT": current is not None and new > current,
                "LT": current is None or new < current,
            }[flag]
            for flag in flags
        )
        if applies:
            return out[:3]
        return ["PEXPIRE", out[1], 0, "GT"]  # changes nothing, answers 0: every key here expires later

    def _capturing_ttls(
        self, client: redis.Redis, name: str, args: list[Any], keys: list[bytes], send: Callable[..., Any]
    ) -> Any:
        """Run a command that may write or set TTLs, taking TTLs over as virtual deadlines."""
        spec = self._spec(name, tuple(args))
        pipe = redis.client.Pipeline(client.connection_pool, client.response_callbacks, True, None)
        if spec is not None and spec.blocking:  # inside MULTI it would not block: capture after it
            result = send(*args)
            self.capture(pipe, keys)
            self.captured(name, keys, pipe.execute(raise_on_error=False), result)
            return result
        pipe.execute_command(*args)
        self.capture(pipe, keys)
        results = pipe.execute(raise_on_error=False)
        self.captured(name, keys, results[1:], results[0])
        if isinstance(results[0], Exception):
            raise results[0]
        return results[0]

    def capture(self, pipe: Any, keys: list[bytes]) -> int:
        """Queue ``PTTL``, ``PEXPIRETIME`` and ``PEXPIREAT <safety_at>`` of ``keys``; how many replies."""
        for key in keys:
            pipe.execute_command("PTTL", key)
            pipe.execute_command("PEXPIRETIME", key)
            pipe.execute_command("PEXPIREAT", key, self.cache.safety_at)
        return 3 * len(keys)

    def captured(self, name: str, keys: list[bytes], replies: list[Any], result: Any) -> None:
        """Take over the TTLs read by :meth:`capture` as virtual deadlines (the module's rule)."""
        deadlines = self.cache.deadlines
        before = {key: deadlines.get(key) for key in keys}
        for key, pttl, expires_at in zip(keys, replies[0::3], replies[1::3]):
            if not isinstance(pttl, int) or pttl == -2:
                deadlines.pop(key, None)
            elif expires_at == self.cache.safety_at:
                continue
            elif pttl < 0:
                deadlines.pop(key, None)
            else:
                deadlines[key] = self.clock.now + layer_ttl(pttl)
        done = not isinstance(result, Exception) and bool(result)
        if name in _CARRY_DEADLINE and len(keys) >= 2 and done:
            source, target = keys[0], keys[1]
            if before[source] is None:
                deadlines.pop(target, None)
            else:
                deadlines[target] = before[source]

    def _read_ttl(self, name: str, key: Any, send: Callable[..., Any]) -> Any:
        full = self._prefixed(key)
        if not send("EXISTS", full):
            return -2
        deadline = self.cache.deadlines.get(_raw(full))
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
            self.cache.admin.unlink(*due)
            for key in due:
                del self.cache.deadlines[key]


def layer_ttl(pttl: int) -> float:
    """The TTL (seconds) the layer set, from the ``PTTL`` read back after its command.

    The server reads its clock again for ``PTTL`` (Redis 7.0 does so even inside MULTI/EXEC and
    scripts), so a 10 s TTL reads 10000 or 9999 ms depending on whether a millisecond ticked in
    between: a wall-clock accident that would move a virtual deadline across a tick of the clock
    (expired at t=10 or not).  The reading is rounded up to 10 ms, which gives back exactly any
    TTL that is a multiple of 10 ms (whole seconds, ``PX 500``) when less than 10 ms passed.
    """
    return math.ceil(pttl / 10) / 100


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)

"""The real servers a user points the harness at: checked before anything runs.

A Redis URL or PostgreSQL DSN is parsed, its host must be on this machine (loopback, or a unix
socket) unless remote hosts were allowed explicitly, and a connection is tried with a short
timeout.  Every problem is a :class:`ServerError` whose message names the option, the cause and
the fix, on one line: the plugin turns it into a pytest usage error.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict

from . import _redis_acl
from ._backend import Backend
from ._server_error import CONNECT_TIMEOUT, ServerError, safe_dsn, safe_url


@dataclass(frozen=True)
class Servers:
    """Which real servers to use; None means the embedded side."""

    redis_url: str | None = None
    db_dsn: str | None = None
    allow_remote: bool = False
    unconfined: bool = False
    """Run without the servers' own confinement (a per-run Redis ACL user, a per-run PostgreSQL
    role) where the login given cannot create them; only the harness's key prefix and schema
    then keep the layer apart from others' data, which a misbehaving layer can escape."""

    def backend(self) -> Backend:
        """A fresh backend for one exploration."""
        from ._fake_cache import FakeCache
        from ._postgres import PostgresSource
        from ._real_redis import RealRedisCache
        from ._sqlite_source import SQLiteSource

        if self.redis_url is None and self.db_dsn is None:
            from ._backend import embedded

            return embedded()
        cache = RealRedisCache(self.redis_url, unconfined=self.unconfined) if self.redis_url else FakeCache()
        source = PostgresSource(self.db_dsn, unconfined=self.unconfined) if self.db_dsn else SQLiteSource()
        return Backend(cache, source)

    def describe(self) -> str:
        if self.redis_url is None and self.db_dsn is None:
            return "embedded (fakeredis + SQLite)"
        cache = f"Redis {safe_url(self.redis_url)}" if self.redis_url else "fakeredis"
        source = f"PostgreSQL {safe_dsn(self.db_dsn)}" if self.db_dsn else "SQLite"
        confinement = " (UNCONFINED: the servers do not confine the layer)" if self.unconfined else ""
        return f"{cache} + {source}{confinement}"


def check_redis(
    url: str, *, allow_remote: bool, connect: bool, unconfined: bool = False, option: str = "--cachecheck-redis"
) -> None:
    try:
        parsed = redis.connection.parse_url(url)
    except (ValueError, TypeError) as error:
        raise ServerError(
            f"{option}={url!r} is not a Redis URL ({error}); expected e.g. redis://127.0.0.1:6379/0"
        ) from None
    host = parsed.get("host")
    if host is not None:
        _require_local(option, url, host, allow_remote)
    if not connect:
        return
    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT)
    try:
        client.ping()
        # The server must confine each run itself (a per-run ACL user), unless the user opted out.
        problem = _redis_acl.missing(client, unconfined=unconfined)
    except redis.AuthenticationError:
        raise ServerError(
            f"{option}={safe_url(url)}: authentication failed; give the right password in the URL, "
            "e.g. redis://:PASSWORD@127.0.0.1:6379/0"
        ) from None
    except redis.ResponseError as error:
        if "NOAUTH" in str(error) or "WRONGPASS" in str(error):
            raise ServerError(
                f"{option}={safe_url(url)}: authentication failed ({error}); give the password in the URL, "
                "e.g. redis://:PASSWORD@127.0.0.1:6379/0"
            ) from None
        raise ServerError(f"{option}={safe_url(url)}: the server refused PING ({error})") from None
    except redis.ConnectionError as error:
        where = parsed.get("path") or f"{host}:{parsed.get('port', 6379)}"
        raise ServerError(
            f"{option}={safe_url(url)}: cannot connect to {where} ({_first_line(error)}); start redis-server "
            "there or fix the URL"
        ) from None
    finally:
        client.close()
    if problem is not None:
        raise ServerError(f"{option}={safe_url(url)}: {problem}")


def check_db(
    dsn: str, *, allow_remote: bool, connect: bool, unconfined: bool = False, option: str = "--cachecheck-db"
) -> str | None:
    """Check ``dsn`` (and, when ``connect``, that a run can be confined there, by trying one).

    Returns the line saying what dead runs' leftovers the trial swept, or None.
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as error:
        raise ServerError(
            f"{option}={dsn!r} is not a PostgreSQL DSN ({_first_line(error)}); expected e.g. "
            "postgresql://postgres@127.0.0.1:5432/test"
        ) from None
    for host in str(params.get("host") or "").split(","):
        if host and not host.startswith("/"):
            _require_local(option, dsn, host, allow_remote)
    if not connect:
        return
    try:
        psycopg.connect(dsn, connect_timeout=int(CONNECT_TIMEOUT)).close()
    except psycopg.OperationalError as error:
        text = _first_line(error)
        if "authentication" in text or "password" in text or ("role" in text and "does not exist" in text):
            fix = "give a user and password the server accepts, e.g. postgresql://USER:PASSWORD@127.0.0.1:5432/test"
            raise ServerError(f"{option}={safe_dsn(dsn)}: authentication failed ({text}); {fix}") from None
        if "database" in text and "does not exist" in text:
            raise ServerError(f"{option}={safe_dsn(dsn)}: {text}; create it or name an existing one") from None
        raise ServerError(
            f"{option}={safe_dsn(dsn)}: cannot connect ({text}); start PostgreSQL there or fix the DSN"
        ) from None
    return _try_a_run(dsn, unconfined=unconfined, option=option)


def _try_a_run(dsn: str, *, unconfined: bool, option: str) -> str | None:
    """Set up and remove one run's role and schema, as an exploration would; the sweep's line."""
    from ._pg_confinement import ConfinementError
    from ._postgres import PostgresSource
    from ._teardown import TeardownError

    try:
        source = PostgresSource(dsn, unconfined=unconfined)
        try:
            source.reset(None)  # the run's schema, and its role's rights on it
        finally:
            source.close()
    except ConfinementError as error:
        raise ServerError(f"{option}={safe_dsn(dsn)}: {error.problem}") from None
    except (psycopg.Error, TeardownError) as error:
        reason = error.reason if isinstance(error, TeardownError) else _first_line(error)
        raise ServerError(
            f"{option}={safe_dsn(dsn)}: cannot set up a run there ({reason}); check the login's rights"
        ) from None
    return source.swept


def _require_local(option: str, value: str, host: str, allow_remote: bool) -> None:
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host.strip("[]")))
    except (OSError, ValueError):
        raise ServerError(f"{option}: cannot resolve host {host!r}; use 127.0.0.1 or fix the name") from None
    if not address.is_loopback and not allow_remote:
        raise ServerError(
            f"{option}: refusing {host} ({address}), which is not this machine; the harness talks only to "
            "loopback servers unless --cachecheck-allow-remote is given"
        )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]

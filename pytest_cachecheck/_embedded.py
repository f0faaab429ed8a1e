"""The embedded default: fakeredis and SQLite, in-process, fresh for every example.

Each example gets its own ``FakeServer`` (so nothing is shared between runs and nothing needs
flushing) and its own SQLite database file in WAL mode, which behaves like PostgreSQL's READ
COMMITTED for a cache's purposes: readers never block and see the last committed value; one
writer at a time.  Its write lock is database-wide, coarser than PostgreSQL's row locks, so a
layer may wait here where it would not on PostgreSQL; it never sees a value it would not see
there.

fakeredis reads ``time.time()`` when it executes a command, so under the patched clock its TTLs
run in virtual time.  The harness's own reads (expiry peeks) happen inside ``virtual_time``.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from typing import Any

import fakeredis

from . import _context
from ._clock import VirtualClock
from ._redis import scheduled_client
from ._scheduler import Scheduler
from ._sql import ScheduledConnection, WriteLock, to_qmark
from .target import Source


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or "database is locked" in str(exc)
    )


class EmbeddedBackend:
    """One fakeredis server and one SQLite database for a whole exploration, reset per example.

    Building clients and connections costs more than an example's work, so they are kept per
    client slot and reset between examples: the cache by FLUSHALL and SCRIPT FLUSH (the server
    is ours alone, in-process, and a cached script would make the next example skip its
    NOSCRIPT round trip: a different trace), the source by dropping every table and re-running
    the target's schema.
    """

    name = "embedded (fakeredis + SQLite)"

    def __init__(self) -> None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self._dir = tempfile.TemporaryDirectory(prefix="cachecheck-", dir=base)
        self.path = os.path.join(self._dir.name, "source.db")
        self.server = fakeredis.FakeServer()
        self.admin_redis = fakeredis.FakeRedis(server=self.server)
        self.admin_sql = sqlite3.connect(self.path, timeout=0, check_same_thread=False)
        self.admin_sql.execute("PRAGMA journal_mode=WAL")
        self._redis: dict[tuple[int, bool], Any] = {}
        self._sql: dict[int, sqlite3.Connection] = {}

    def world(self, scheduler: Scheduler, *, decode_responses: bool) -> "EmbeddedWorld":
        return EmbeddedWorld(self, scheduler, decode_responses=decode_responses)

    def redis_slot(self, slot: int, decode_responses: bool) -> Any:
        client = self._redis.get((slot, decode_responses))
        if client is None:
            client = fakeredis.FakeRedis(server=self.server, decode_responses=decode_responses)
            self._redis[slot, decode_responses] = client
        return client

    def sql_slot(self, slot: int) -> sqlite3.Connection:
        raw = self._sql.get(slot)
        if raw is None:
            raw = self._sql[slot] = sqlite3.connect(self.path, timeout=0, check_same_thread=False)
        return raw

    def reset(self) -> None:
        self.admin_redis.flushall()
        self.admin_redis.script_flush()
        for raw in self._sql.values():
            raw.rollback()
        tables = [row[0] for row in self.admin_sql.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )]
        for table in tables:
            self.admin_sql.execute(f'DROP TABLE "{table}"')
        self.admin_sql.commit()

    def close(self) -> None:
        for raw in [*self._sql.values(), self.admin_sql]:
            raw.close()
        self._dir.cleanup()


class EmbeddedWorld:
    """One example's view of the backend: scheduled clients and connections for its slots."""

    def __init__(self, backend: EmbeddedBackend, scheduler: Scheduler, *, decode_responses: bool) -> None:
        backend.reset()
        self.backend = backend
        self.scheduler = scheduler
        self.decode_responses = decode_responses
        self.write_lock = WriteLock()

    # for app instances: slot N is the same client or connection in every example

    def redis_client(self, slot: int) -> Any:
        return scheduled_client(self.backend.redis_slot(slot, self.decode_responses), self.scheduler)

    def connection(self, slot: int) -> ScheduledConnection:
        return ScheduledConnection(
            self.backend.sql_slot(slot), self.scheduler, self.write_lock, translate=to_qmark, is_busy=_is_busy
        )

    # for the harness (unscheduled, unrecorded)

    def setup_source(self, source: Source, rows: list[tuple[str, str]]) -> None:
        admin = self.backend.admin_sql
        for statement in source.statements:
            admin.execute(to_qmark(statement, None))
        admin.executemany(to_qmark(source.insert, ()), rows)
        admin.commit()

    def read_source(self, source: Source, key: str) -> str | None:
        admin = self.backend.admin_sql
        row = admin.execute(to_qmark(source.select, ()), (key,)).fetchone()
        admin.rollback()
        return None if row is None or row[0] is None else str(row[0])

    def next_expiry(self, clock: VirtualClock) -> float | None:
        """Virtual seconds until the soonest key with a TTL expires, or None if none will."""
        peek = self.backend.admin_redis
        with _context.virtual_time(clock):
            ttls = [peek.pttl(key) for key in peek.scan_iter(count=1000)]
        pending = [ttl for ttl in ttls if ttl is not None and ttl >= 0]
        return min(pending) / 1000.0 if pending else None

    def close(self) -> None:
        for raw in self.backend._sql.values():
            raw.rollback()

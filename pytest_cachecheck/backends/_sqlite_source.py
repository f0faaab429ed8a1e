"""The embedded source: one SQLite database file per exploration, in WAL mode.

WAL behaves like PostgreSQL's READ COMMITTED for a cache's purposes: readers never block and
see the last committed value; one writer at a time.  That write lock is database-wide, coarser
than PostgreSQL's row locks, so a layer may wait here where it would not on PostgreSQL; it
never sees a value it would not see there.  A reset drops every table, and the target's schema
is created again.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile

from ..engine._scheduler import Scheduler
from ..interposers._sql import ScheduledConnection, SQLiteDriver, WriteLock, to_qmark
from ..target import Source


class SQLiteSource:
    name = "SQLite"

    def __init__(self) -> None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self._dir = tempfile.TemporaryDirectory(prefix="cachecheck-", dir=base)
        self.path = os.path.join(self._dir.name, "source.db")
        self.admin = self._connect()
        self.admin.execute("PRAGMA journal_mode=WAL")
        self._raw: dict[int, sqlite3.Connection] = {}
        self.write_lock = WriteLock()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=0, check_same_thread=False)

    def reset(self, scheduler: Scheduler) -> None:
        self.write_lock = WriteLock()
        tables = [
            row[0]
            for row in self.admin.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in tables:
            self.admin.execute(f'DROP TABLE "{table}"')
        self.admin.commit()

    def connection(self, slot: int, scheduler: Scheduler) -> ScheduledConnection:
        raw = self._raw.get(slot)
        if raw is None:
            raw = self._raw[slot] = self._connect()
        return ScheduledConnection(raw, scheduler, SQLiteDriver(self.write_lock))

    def setup(self, source: Source, rows: list[tuple[str, str]]) -> None:
        for statement in source.statements:
            self.admin.execute(to_qmark(statement, None))
        self.admin.executemany(to_qmark(source.insert, ()), rows)
        self.admin.commit()

    def read(self, source: Source, key: str) -> str | None:
        row = self.admin.execute(to_qmark(source.select, ()), (key,)).fetchone()
        self.admin.rollback()
        return None if row is None or row[0] is None else str(row[0])

    def end_example(self) -> None:
        for raw in self._raw.values():
            raw.rollback()

    def close(self) -> None:
        for raw in [*self._raw.values(), self.admin]:
            raw.close()
        self._dir.cleanup()

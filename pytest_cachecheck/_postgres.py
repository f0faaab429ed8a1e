"""PostgreSQL as the source side: a private schema per exploration, row locks waited on
cooperatively.

Confinement.  The exploration creates ``cachecheck_<run>`` and sets every connection's
``search_path`` to it; each example drops and re-creates that schema, and the exploration's end
drops it.  Nothing outside it is read or written.

Blocking.  A statement that needs a row lock held by a paused client would block inside libpq,
with the baton held.  So statements run on a helper thread while the task watches: if the
statement does not finish at once, ``pg_blocking_pids`` says whether it waits for another
client's backend; then the task returns :class:`Blocked` on :class:`RowLocks` (whose holders
are those clients, for the deadlock detector) and the statement stays in flight.  When a
transaction ends, the statements it blocked are allowed to settle (finish, or block on someone
else) before the ``COMMIT`` point returns, so what happens next does not depend on timing.  A
wait cycle between clients is found at once by the scheduler, before PostgreSQL's own deadlock
timer (1 s) fires.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import psycopg
from psycopg import sql as pgsql

from ._scheduler import Blocked, Scheduler, Task, Waitable
from ._sql import Result, ScheduledConnection, fetch_whole
from .target import Source

_real_monotonic = time.monotonic  # captured before the clock is patched: a wall-clock bound
SETTLE_SECONDS = 5.0
"""How long a woken statement may take to finish or block again after a COMMIT."""


class RowLockWait(Waitable):
    """One statement's wait for row locks held by ``blockers`` (other clients' transactions)."""

    def __init__(self, blockers: list[Task]) -> None:
        super().__init__()
        self.blockers = blockers
        self.label = "a row lock"

    def holders(self) -> list[Task]:
        return list(self.blockers)


class _InFlight:
    """One statement running on a helper thread (never a simulated task)."""

    def __init__(self, raw: psycopg.Connection, sql: str, params: Any, many: bool) -> None:
        self.done = threading.Event()
        self.result: Result | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(raw, sql, params, many), daemon=True)
        self._thread.start()

    def _run(self, raw: psycopg.Connection, sql: str, params: Any, many: bool) -> None:
        try:
            with raw.cursor() as cursor:
                if many:
                    cursor.executemany(sql, params)
                else:
                    cursor.execute(sql, params)
                self.result = fetch_whole(cursor)
        except BaseException as exc:  # handed to the task that issued the statement
            self.error = exc
        finally:
            self.done.set()


class PostgresDriver:
    """Runs a client's statements so that a wait for another client's lock is cooperative."""

    operational_error = psycopg.OperationalError

    def __init__(self, source: "PostgresSource") -> None:
        self.source = source

    def run(self, conn: ScheduledConnection, sql: str, params: Any, many: bool) -> Result | Blocked:
        flight = self.source.flights.get(conn)
        if flight is None:
            flight = self.source.flights[conn] = _InFlight(conn.raw, sql, params, many)
        blockers = self.source.wait_or_blockers(conn, flight)
        if blockers:
            wait = RowLockWait(blockers)
            self.source.waits.append(wait)
            names = ", ".join(task.name for task in blockers)
            return Blocked(wait, None, f"row lock held by {names}")
        del self.source.flights[conn]
        if flight.error is not None:
            raise flight.error
        assert flight.result is not None
        return flight.result

    def end(self, conn: ScheduledConnection, commit: bool) -> None:
        conn.raw.commit() if commit else conn.raw.rollback()
        self.source.settle()

    def release(self, conn: ScheduledConnection) -> None:
        self.source.flights.pop(conn, None)

    def abort(self, conn: ScheduledConnection) -> None:
        """The client died: cancel what it has in flight, roll back, let the others settle."""
        flight = self.source.flights.pop(conn, None)
        if flight is not None:
            cancel = getattr(conn.raw, "cancel_safe", None) or conn.raw.cancel
            cancel()
            flight.done.wait(SETTLE_SECONDS)
        conn.raw.rollback()
        self.source.settle()


class PostgresSource:
    """The source side on a PostgreSQL server at ``dsn``."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.schema = f"cachecheck_{secrets.token_hex(4)}"
        self.admin = psycopg.connect(dsn, autocommit=True)
        self.name = f"PostgreSQL at {self.admin.info.host or 'socket'}"
        self._raw: dict[int, psycopg.Connection] = {}
        self._owners: dict[int, Task] = {}
        self.flights: dict[ScheduledConnection, _InFlight] = {}
        self.waits: list[RowLockWait] = []
        self._created = False

    # -- the source side -------------------------------------------------------------------

    def reset(self, scheduler: Scheduler) -> None:
        self._abandon_flights()
        schema = pgsql.Identifier(self.schema)
        if self._created:
            self.admin.execute(pgsql.SQL("DROP SCHEMA {} CASCADE").format(schema))
        self.admin.execute(pgsql.SQL("CREATE SCHEMA {}").format(schema))
        self.admin.execute(pgsql.SQL("SET search_path TO {}").format(schema))
        self._created = True

    def connection(self, slot: int, scheduler: Scheduler) -> ScheduledConnection:
        raw = self._raw.get(slot)
        if raw is None:
            raw = psycopg.connect(self.dsn, autocommit=False, options=f"-c search_path={self.schema}")
            self._raw[slot] = raw
        return ScheduledConnection(raw, scheduler, PostgresDriver(self))

    def setup(self, source: Source, rows: list[tuple[str, str]]) -> None:
        for statement in source.statements:
            self.admin.execute(statement)
        with self.admin.cursor() as cursor:
            cursor.executemany(source.insert, rows)

    def read(self, source: Source, key: str) -> str | None:
        row = self.admin.execute(source.select, (key,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def end_example(self) -> None:
        self._abandon_flights()
        for raw in self._raw.values():
            raw.rollback()

    def close(self) -> None:
        try:
            self.end_example()
            if self._created:
                self.admin.execute(pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(pgsql.Identifier(self.schema)))
        finally:
            for raw in [*self._raw.values(), self.admin]:
                raw.close()

    # -- cooperative waiting ---------------------------------------------------------------

    def task_of(self, conn: ScheduledConnection) -> Task:
        from . import _context

        task = _context.current_task()
        assert task is not None
        self._owners[conn.raw.info.backend_pid] = task
        return task

    def wait_or_blockers(self, conn: ScheduledConnection, flight: _InFlight) -> list[Task]:
        """Wait for ``flight`` to finish; or, if another client's backend blocks it, name that client."""
        self.task_of(conn)
        pid = conn.raw.info.backend_pid
        while not flight.done.wait(0.002):
            pids = self.admin.execute("SELECT pg_blocking_pids(%s)", (pid,)).fetchone()[0]
            blockers = [self._owners[p] for p in pids if p in self._owners]
            if blockers:
                return blockers
        return []

    def settle(self) -> None:
        """Let statements woken by a transaction's end finish, or block again, before going on."""
        deadline = _real_monotonic() + SETTLE_SECONDS
        for conn, flight in list(self.flights.items()):
            pid = conn.raw.info.backend_pid
            while not flight.done.wait(0.002) and _real_monotonic() < deadline:
                if self.admin.execute("SELECT pg_blocking_pids(%s)", (pid,)).fetchone()[0]:
                    break
        waits, self.waits = self.waits, []
        for wait in waits:
            wait.wake_all()

    def _abandon_flights(self) -> None:
        for conn, flight in list(self.flights.items()):
            cancel = getattr(conn.raw, "cancel_safe", None) or conn.raw.cancel
            cancel()
            flight.done.wait(SETTLE_SECONDS)
        self.flights.clear()
        self._owners.clear()
        self.waits = []

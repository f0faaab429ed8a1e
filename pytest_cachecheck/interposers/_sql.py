"""The SQL interposer: a DB-API 2 connection whose statements and commits are scheduling points.

The layer gets a connection with psycopg's conventions (``paramstyle = "format"``: ``%s`` and
``%(name)s`` placeholders; ``conn.execute`` as a shortcut), whatever database sits beneath, so
the same layer code runs on the embedded SQLite source and on PostgreSQL.

Statements finish whole under the baton: a statement executes and all its rows are fetched
inside its point, and ``fetch*`` then serve rows from memory.  No cursor is ever left open
across a point, so nothing a paused client holds can block another client inside C code.  The
one thing that can is the source's write lock, held by a client inside an open transaction: a
statement that finds it taken does not wait in the driver; it returns :class:`Blocked`, its
task waits cooperatively, and the lock's holders feed the deadlock detector.  A :class:`Driver`
says how, per database: SQLite here (busy timeout 0), PostgreSQL in ``_postgres``.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any, Iterator, Protocol, Sequence

from ..engine import _context
from ..engine._faults import NextCall
from ..engine._scheduler import Blocked, Scheduler, Task, Waitable
from ..history import INJECTED
from ..history._calls import PLACEHOLDER, Rows, Statement, to_data

_PLACEHOLDER = PLACEHOLDER


def to_qmark(sql: str, params: Any) -> str:
    """Translate ``%s``/``%(name)s`` placeholders into SQLite's ``?``/``:name``."""
    if params is None:
        return sql

    def swap(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        return f":{match.group(1)}" if match.group(1) else "?"

    return _PLACEHOLDER.sub(swap, sql)


class WriteLock(Waitable):
    """The source's write lock, as far as the scheduler can see it: who holds a transaction."""

    label = "the source's write lock"

    def __init__(self) -> None:
        super().__init__()
        # Invariant: a connection is listed while its transaction may hold the lock.
        self.holding: list["ScheduledConnection"] = []

    def holders(self) -> list[Task]:
        return [conn.holder for conn in self.holding if conn.holder is not None]

    def taken_by(self, conn: "ScheduledConnection") -> None:
        if conn not in self.holding:
            self.holding.append(conn)
        conn.holder = _context.current_task()

    def released_by(self, conn: "ScheduledConnection") -> None:
        if conn in self.holding:
            self.holding.remove(conn)
            conn.holder = None
            self.wake_all()


class Result:
    """What one statement returned, fetched in full."""

    def __init__(self, rows: list[tuple] | None, description: Any, rowcount: int, lastrowid: Any) -> None:
        self.rows = rows
        self.description = description
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def __repr__(self) -> str:
        if self.rows is not None:
            return repr(self.rows)
        return f"{self.rowcount} row{'s' if self.rowcount != 1 else ''}"


class ScheduledCursor:
    """A DB-API cursor over rows already fetched; ``execute`` is the scheduling point."""

    arraysize = 1

    def __init__(self, connection: "ScheduledConnection") -> None:
        self.connection = connection
        self._rows: list[tuple] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: Any = None

    def execute(self, sql: str, params: Any = None) -> "ScheduledCursor":
        result = self.connection._run(sql, params, many=False)
        self._take(result)
        return self

    def executemany(self, sql: str, seq_of_params: Sequence[Any]) -> "ScheduledCursor":
        result = self.connection._run(sql, list(seq_of_params), many=True)
        self._take(result)
        return self

    def _take(self, result: Result) -> None:
        self._rows = list(result.rows or [])
        self.description = result.description
        self.rowcount = result.rowcount
        self.lastrowid = result.lastrowid

    def fetchone(self) -> tuple | None:
        return self._rows.pop(0) if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[tuple]:
        size = self.arraysize if size is None else size
        taken, self._rows = self._rows[:size], self._rows[size:]
        return taken

    def fetchall(self) -> list[tuple]:
        taken, self._rows = self._rows, []
        return taken

    def __iter__(self) -> Iterator[tuple]:
        while self._rows:
            yield self._rows.pop(0)

    def close(self) -> None:
        self._rows = []

    def __enter__(self) -> "ScheduledCursor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Driver(Protocol):
    """How statements run on one kind of database, so that no wait happens inside C code.

    ``run`` executes a statement whole and returns its :class:`Result`, or :class:`Blocked`
    when another transaction holds what it needs (it is called again when the task is
    resumed); ``end`` commits or rolls back; ``release`` forgets a connection's locks (and
    cancels what it has in flight); ``abort`` ends a dead client's transaction, whatever it had
    in flight.  A driver may also define ``refused(exc)``: the error to raise instead of ``exc``
    when the server refused the statement for reaching beyond the run (its message begins with
    :data:`~pytest_cachecheck.history.REFUSED`), or None.
    """

    def run(self, conn: "ScheduledConnection", sql: str, params: Any, many: bool) -> "Result | Blocked": ...
    def end(self, conn: "ScheduledConnection", commit: bool) -> None: ...
    def release(self, conn: "ScheduledConnection") -> None: ...
    def abort(self, conn: "ScheduledConnection") -> None: ...


class ScheduledConnection:
    """A DB-API 2 connection (psycopg conventions) over a raw driver connection."""

    paramstyle = "format"

    def __init__(self, raw: Any, scheduler: Scheduler, driver: Driver) -> None:
        self.raw = raw
        self.scheduler = scheduler
        self.driver = driver
        self.holder: Task | None = None
        self.closed = False
        self.next_call = NextCall()

    # DB-API surface

    def cursor(self, *args: Any, **kwargs: Any) -> ScheduledCursor:
        return ScheduledCursor(self)

    def execute(self, sql: str, params: Any = None) -> ScheduledCursor:
        return self.cursor().execute(sql, params)

    def commit(self) -> None:
        self.scheduler.point("sql", _COMMIT, lambda: self.driver.end(self, commit=True))

    def rollback(self) -> None:
        self.scheduler.point("sql", _ROLLBACK, lambda: self.driver.end(self, commit=False))

    def close(self) -> None:
        self.driver.release(self)
        self.closed = True

    def __enter__(self) -> "ScheduledConnection":
        return self

    def __exit__(self, exc_type: Any, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def _run(self, sql: str, params: Any, *, many: bool) -> Result:
        statement = Statement(sql, to_data(params), many)
        return self.scheduler.point("sql", statement, lambda: self._run_or_fail(sql, params, many), reply=_rows)

    next_call: NextCall
    """Armed by the ``error`` fault (the next statement raises the driver's OperationalError) and
    the ``slow`` fault (it takes stated virtual seconds)."""
    blocked = False
    """Whether this connection's statement is blocked, to be retried when its task is woken.

    Invariant: the retry is the same statement, already issued (on PostgreSQL it is still in
    flight on the server), so no fault fires on it but on the next statement.
    Failing the retry would leave the statement in flight: the next statement would be answered
    with its result without ever running (a correct layer then "loses" a write)."""

    def _run_or_fail(self, sql: str, params: Any, many: bool) -> Any:
        fault = False if self.blocked else self.next_call.take(self.scheduler, "sql")
        if isinstance(fault, Blocked):
            return fault  # slow: nothing is in flight yet; the statement runs once the clock is there
        if fault:
            raise self.driver.operational_error(f"{INJECTED} failure of this statement")
        self.blocked = False
        try:
            outcome = self.driver.run(self, sql, params, many)
            self.blocked = isinstance(outcome, Blocked)
            return outcome
        except Exception as exc:
            # A statement the server refused for reaching beyond the run: the driver's own error
            # class, with a message that makes it a confinement finding.
            refused = getattr(self.driver, "refused", None)
            mapped = refused(exc) if refused is not None else None
            if mapped is None:
                raise
            raise mapped from exc


_COMMIT = Statement("COMMIT")
_ROLLBACK = Statement("ROLLBACK")


def _rows(result: Any) -> Any:
    """What a statement returned, as the history keeps it: its rows (or rowcount) as data."""
    if not isinstance(result, Result):
        return to_data(result)
    rows = None if result.rows is None else tuple(tuple(to_data(value) for value in row) for row in result.rows)
    return Rows(rows, result.rowcount)


def fetch_whole(cursor: Any) -> Result:
    """Everything a statement returned, read off ``cursor`` at once."""
    rows = [tuple(row) for row in cursor.fetchall()] if cursor.description else None
    return Result(rows, cursor.description, cursor.rowcount, getattr(cursor, "lastrowid", None))


class SQLiteDriver:
    """SQLite: a busy database (another connection's write transaction) is a cooperative wait."""

    operational_error = sqlite3.OperationalError

    def __init__(self, write_lock: WriteLock) -> None:
        self.write_lock = write_lock

    def run(self, conn: ScheduledConnection, sql: str, params: Any, many: bool) -> "Result | Blocked":
        cursor = conn.raw.cursor()
        try:
            if many:
                cursor.executemany(to_qmark(sql, params[0] if params else None), params)
            else:
                cursor.execute(to_qmark(sql, params), () if params is None else params)
            result = fetch_whole(cursor)
        except sqlite3.OperationalError as exc:
            if _sqlite_busy(exc):
                holders = ", ".join(task.name for task in self.write_lock.holders()) or "another transaction"
                return Blocked(self.write_lock, None, f"write lock held by {holders}")
            raise
        finally:
            cursor.close()
        if conn.raw.in_transaction:
            self.write_lock.taken_by(conn)
        return result

    def end(self, conn: ScheduledConnection, commit: bool) -> None:
        try:
            conn.raw.commit() if commit else conn.raw.rollback()
        finally:
            self.write_lock.released_by(conn)

    def release(self, conn: ScheduledConnection) -> None:
        self.write_lock.released_by(conn)

    def abort(self, conn: ScheduledConnection) -> None:
        """The client died: its transaction is rolled back and its lock released."""
        self.end(conn, commit=False)


def _sqlite_busy(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or "database is locked" in str(exc)

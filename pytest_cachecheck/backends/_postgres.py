"""PostgreSQL as the source side: a role and schema of the run's own, row locks waited on
cooperatively, and a teardown that cannot hang.

Confinement (``_pg_confinement``).  Each exploration creates a role ``cachecheck_<run>`` with
rights on the schema ``cachecheck_<run>`` only (or, on a database whose PUBLIC privileges leave a
hole, a database of its own); the layer's connections and the harness's own setup and reads log
in as that role, so the server refuses whatever reaches further, and a refusal reaches the layer
as the driver's error with a message that makes it a ``confinement`` finding.  The admin login
creates, resets and drops, on a session holding the run's advisory lock (``_pg_sweep``), so a
later run sweeps what a killed one left.  Unconfined (explicitly), the private schema alone keeps
runs apart.

Examples do not leak into each other: each example re-creates the schema, and at its end every
client connection is rolled back and reset (``DISCARD ALL``), so a ``SET search_path`` or any
session state the layer left is gone.  A connection that cannot be reset is replaced.

Blocking.  A statement that needs a row lock held by a paused client would block inside libpq,
with the baton held.  So statements run on a helper thread while the task watches: if the
statement does not finish at once, ``pg_blocking_pids`` says whether it waits for another
client's backend; then the task returns :class:`Blocked` on :class:`RowLocks` (whose holders
are those clients, for the deadlock detector) and the statement stays in flight.  When a
transaction ends, the statements it blocked are allowed to settle (finish, or block on someone
else) before the ``COMMIT`` point returns, so what happens next does not depend on timing.  A
wait cycle between clients is found at once by the scheduler, before PostgreSQL's own deadlock
timer (1 s) fires.

Teardown never hangs.  A statement still in flight when its client is closed, crashed or its
example ends is cancelled; if the cancel does not stop it, its backend (only ever one of the
run's own) is terminated.  Every step (cancel, roll back and reset, drop the schema, database
and role) has a wall-time limit (``_teardown.within``, and the admin session's ``lock_timeout``
and ``statement_timeout``); a step that still fails raises
:class:`~pytest_cachecheck.backends._teardown.TeardownError`, one line naming the server and the step.
"""
from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import psycopg
from psycopg import sql as pgsql

from ..engine._scheduler import Blocked, Scheduler, Task, Waitable
from ..interposers._sql import Result, ScheduledConnection, fetch_whole
from ..target import Source
from . import _pg_sweep
from ._pg_confinement import UNCONFINED_BOUNDARY, Confinement, ConfinementError, conninfo, plan, refusal
from ._pg_sweep import MARK
from ._teardown import StepTimeout, TeardownError, wait_until, within

_real_monotonic = time.monotonic  # captured before the clock is patched: a wall-clock bound
SETTLE_SECONDS = 5.0
"""Wall seconds a statement may take to finish or to wait for another client's lock.  Past it
the server is not answering: an environment error, never a run that goes on regardless."""
STEP_SECONDS = 5.0
"""Wall seconds one teardown step on a client connection may take (cancel, roll back, reset)."""
ADMIN_SECONDS = 12.0
"""Wall seconds one admin statement may take in teardown (the server's statement_timeout, 10 s,
ends it first)."""
ADMIN_OPTIONS = "-c search_path=pg_catalog -c lock_timeout=3000 -c statement_timeout=10000"
"""The admin session: a pinned path, and no statement of its waits without a limit."""
HARNESS_OPTIONS = "-c statement_timeout=10000"
"""The harness's own connection (setup and reads, as the run's role); its path is the run's schema."""


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
        """The connection is closed: a statement it has in flight is cancelled, never left running."""
        self.source.drop_flight(conn)

    def abort(self, conn: ScheduledConnection) -> None:
        """The client died: stop what it has in flight, end its transaction and session (as a dead
        process's connection would end), let the others settle."""
        self.source.abort_client(conn)
        self.source.settle()

    def refused(self, exc: BaseException) -> BaseException | None:
        """The error the layer gets for a statement the server refused for privilege, or None."""
        return refusal(exc, self.source.boundary)


class PostgresSource:
    """The source side on a PostgreSQL server at ``dsn``.

    ``swept`` is the line saying what dead runs' leftovers this source removed when it started
    (None when there were none), for the caller to print.
    """

    def __init__(self, dsn: str, *, unconfined: bool = False) -> None:
        self.dsn = dsn
        self.unconfined = unconfined
        self.run = secrets.token_hex(4)
        self.schema = f"cachecheck_{self.run}"
        self.admin = psycopg.connect(conninfo(dsn, options=ADMIN_OPTIONS, application_name=self.schema), autocommit=True)
        self.name = f"PostgreSQL at {self.admin.info.host or 'socket'}"
        self._raw: dict[int, psycopg.Connection] = {}
        self._pids: dict[psycopg.Connection, int] = {}
        self._owners: dict[int, Task] = {}
        self.flights: dict[ScheduledConnection, _InFlight] = {}
        self.waits: list[RowLockWait] = []
        self._stopping: list[tuple[psycopg.Connection, _InFlight]] = []
        self._owner = False
        """Whether this source holds the run's lock: only then is anything named after the run its own."""
        self._admin_stuck = False
        self.confinement: Confinement | None = None
        self.boundary = UNCONFINED_BOUNDARY
        self.swept: str | None = None
        self.home = self.admin
        """The admin session where the run's schema lives (the run's own database, if it has one)."""
        self.keeper: psycopg.Connection | None = None
        """The harness's own session for setup and reads: the run's role, its path the run's schema."""
        try:
            _pg_sweep.hold(self.admin, self.run)
            self._owner = True
            self.swept = _pg_sweep.sweep(self.admin, self.name)
            if unconfined:
                problem = plan(self.admin, unconfined=True).problem
                if problem:
                    raise ConfinementError(self.name, problem)
            else:
                self.confinement = Confinement.create(self.admin, dsn, self.run, self.name)
                self.boundary = self.confinement.boundary
                if self.confinement.database:
                    self.home = psycopg.connect(self.confinement.admin_conninfo(ADMIN_OPTIONS), autocommit=True)
            self.keeper = self._connect(autocommit=True, options=HARNESS_OPTIONS)
        except BaseException:
            self._teardown(quiet=True)
            raise

    # -- the source side -------------------------------------------------------------------

    def reset(self, scheduler: Scheduler) -> None:
        self._abandon_flights()
        schema = pgsql.Identifier(self.schema)
        statements = [
            pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema),
            pgsql.SQL("CREATE SCHEMA {}").format(schema),
            pgsql.SQL("COMMENT ON SCHEMA {} IS {}").format(schema, pgsql.Literal(MARK)),
        ]
        if self.confinement is not None:
            role = pgsql.Identifier(self.confinement.role)
            statements += [
                pgsql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(schema, role),
                # What the role may have set for its own new sessions (ALTER ROLE on oneself is allowed).
                pgsql.SQL("ALTER ROLE {} RESET ALL").format(role),
            ]
        script = pgsql.SQL("; ").join(statements)

        def recreate() -> None:
            try:
                self.home.execute(script)
            except psycopg.errors.LockNotAvailable:
                # A session of the run still holds a lock on its schema: end the clients' sessions.
                self._end_sessions(list(self._raw.values()))
                self.home.execute(script)

        self._admin_step(f"re-creating the schema {self.schema}", recreate)

    def connection(self, slot: int, scheduler: Scheduler) -> ScheduledConnection:
        raw = self._raw.get(slot)
        if raw is None or raw.closed:
            raw = self._raw[slot] = self._connect(autocommit=False)
        return ScheduledConnection(raw, scheduler, PostgresDriver(self))

    def setup(self, source: Source, rows: list[tuple[str, str]]) -> None:
        assert self.keeper is not None
        for statement in source.statements:
            self.keeper.execute(statement)
        with self.keeper.cursor() as cursor:
            cursor.executemany(source.insert, rows)

    def read(self, source: Source, key: str) -> str | None:
        assert self.keeper is not None
        row = self.keeper.execute(source.select, (key,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def end_example(self) -> None:
        """Stop every statement in flight, then roll back and reset every client's session."""
        self._abandon_flights()
        for raw in list(self._raw.values()):
            self._reset_session(raw)

    def close(self) -> None:
        """Remove everything the run created; raises :class:`TeardownError` if a step fails."""
        self._teardown(quiet=False)

    # -- connections -----------------------------------------------------------------------

    def _connect(self, *, autocommit: bool, options: str = "") -> psycopg.Connection:
        if self.confinement is not None:
            try:
                raw = self.confinement.connect(self.name, autocommit=autocommit, options=options)
            except ConfinementError:
                # The layer may have changed its role's password (allowed on oneself): set it back.
                role = pgsql.Identifier(self.confinement.role)
                self.admin.execute(pgsql.SQL("ALTER ROLE {} PASSWORD {}").format(role, pgsql.Literal(self.confinement.verifier)))
                raw = self.confinement.connect(self.name, autocommit=autocommit, options=options)
        else:
            info = conninfo(self.dsn, options=f"-c search_path={self.schema} {options}", application_name=self.schema)
            raw = psycopg.connect(info, autocommit=autocommit)
        # Never prepared server-side: DISCARD ALL forgets prepared statements, and psycopg's cache
        # of them does not always notice (a repeated DISCARD ALL is not looked at again).
        raw.prepare_threshold = None
        self._pids[raw] = raw.info.backend_pid
        return raw

    def drop_flight(self, conn: ScheduledConnection) -> None:
        """``conn`` is closed: cancel its statement in flight; the example's end waits for it."""
        flight = self.flights.pop(conn, None)
        if flight is not None:
            if not flight.done.is_set():
                _cancel(conn.raw)
            self._stopping.append((conn.raw, flight))

    def abort_client(self, conn: ScheduledConnection) -> None:
        """A client died: stop its statement in flight, roll back and reset its session."""
        flight = self.flights.pop(conn, None)
        if flight is not None:
            self._stop([(conn.raw, flight)])
        if conn.raw in self._pids:
            self._reset_session(conn.raw)

    def _reset_session(self, raw: psycopg.Connection) -> None:
        """Roll back and ``DISCARD ALL`` on a client connection, or replace it if that fails."""
        try:
            within(STEP_SECONDS, lambda: _reset(raw))
        except StepTimeout:  # the server does not answer this session: end it
            self._end_sessions([raw])
        except psycopg.Error:  # the session is gone (terminated, the server restarted)
            self._forget(raw, close=True)

    # -- stopping statements in flight -----------------------------------------------------

    def _abandon_flights(self) -> None:
        stopping = [(conn.raw, flight) for conn, flight in self.flights.items()] + self._stopping
        self.flights.clear()
        self._stopping = []
        self._owners.clear()
        self.waits = []
        self._stop(stopping)

    def _stop(self, stopping: list[tuple[psycopg.Connection, _InFlight]]) -> None:
        """Cancel each statement; end the backends of those the cancel does not stop in time."""
        running = [(raw, flight) for raw, flight in stopping if not flight.done.is_set()]
        if not running:
            return
        for raw, _ in running:
            _cancel(raw)
        ignored = _unfinished(running, STEP_SECONDS)
        if not ignored:
            return
        self._end_sessions([raw for raw, _ in ignored], forget=False)
        stuck = _unfinished(ignored, STEP_SECONDS)
        for raw, flight in ignored:  # their sessions are gone: a slot gets a new connection
            self._forget(raw, close=flight.done.is_set())
        if stuck:
            raise TeardownError(
                self.name,
                "stopping the statements in flight",
                f"{len(stuck)} did not stop within {2 * STEP_SECONDS:g} s, even after pg_terminate_backend",
            )

    def _end_sessions(self, raws: list[psycopg.Connection], *, forget: bool = True) -> None:
        """Terminate these client sessions (only ever the run's own backends) and wait until they end."""
        pids = [self._pids[raw] for raw in raws if raw in self._pids]
        if pids:
            self._admin_step("ending the run's stuck sessions", lambda: self._terminate(pids))
        if forget:
            for raw in raws:
                self._forget(raw, close=False)

    def _terminate(self, pids: list[int] | None) -> None:
        """``pg_terminate_backend`` of the run's own sessions (``pids``; None: all of its role's)."""
        if self.confinement is not None:
            where = pgsql.SQL("usename = {}").format(pgsql.Literal(self.confinement.role))
        elif pids:
            where = pgsql.SQL("TRUE")
        else:
            return
        if pids is not None:
            where = pgsql.SQL("{} AND pid = ANY({})").format(where, pgsql.Literal(pids))
        self.admin.execute(pgsql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {}").format(where))
        remaining = pgsql.SQL("SELECT count(*) FROM pg_stat_activity WHERE {}").format(where)
        if not wait_until(STEP_SECONDS, lambda: self.admin.execute(remaining).fetchone()[0] == 0):
            raise StepTimeout(f"the sessions did not end within {STEP_SECONDS:g} s of pg_terminate_backend")

    def _forget(self, raw: psycopg.Connection, *, close: bool) -> None:
        """Never use ``raw`` again (a slot whose connection is forgotten gets a new one)."""
        for slot, known in list(self._raw.items()):
            if known is raw:
                del self._raw[slot]
        self._pids.pop(raw, None)
        if close:
            try:
                raw.close()
            except Exception:
                pass

    # -- teardown --------------------------------------------------------------------------

    def _admin_step(self, step: str, action: Any) -> Any:
        """One admin statement (or a few) of teardown, within :data:`ADMIN_SECONDS`."""
        if self._admin_stuck:
            raise TeardownError(self.name, step, "skipped: an earlier step left the admin session unanswered")
        try:
            return within(ADMIN_SECONDS, action)
        except StepTimeout as timeout:
            self._admin_stuck = True
            raise TeardownError(self.name, step, str(timeout)) from None
        except psycopg.Error as error:
            raise TeardownError(self.name, step, _first_line(error)) from error

    def _teardown(self, *, quiet: bool) -> None:
        """Every step is tried, each within its limit; the first failure is raised (unless ``quiet``)."""
        failures: list[TeardownError] = []

        def attempt(step: str, action: Any) -> None:
            try:
                action()
            except TeardownError as failure:
                failures.append(failure)
            except Exception as error:
                failures.append(TeardownError(self.name, step, _first_line(error)))

        attempt("ending the example", self.end_example)
        for raw in [*self._raw.values(), self.keeper]:
            if raw is not None:
                attempt("closing a connection", raw.close)
        self._raw.clear()
        if self.home is not self.admin:
            attempt("closing a connection", self.home.close)
        if self.confinement is not None:
            # Every session of the run's role, even one the layer opened itself.
            attempt("ending the run's sessions", lambda: self._admin_step("ending the run's sessions", lambda: self._terminate(None)))
        if self._owner and (self.confinement is None or self.confinement.database is None):
            drop = pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(pgsql.Identifier(self.schema))
            attempt("dropping the schema", lambda: self._admin_step(f"dropping the schema {self.schema}", lambda: self.admin.execute(drop)))
        if self.confinement is not None:
            confinement = self.confinement
            what = f"dropping the {'database and ' if confinement.database else ''}role {confinement.role}"
            attempt(what, lambda: self._admin_step(what, lambda: confinement.drop(self.admin)))
        if not self._admin_stuck:
            attempt("closing the admin session", self.admin.close)  # releases the run's lock
        if failures and not quiet:
            raise failures[0]

    # -- cooperative waiting ---------------------------------------------------------------

    def task_of(self, conn: ScheduledConnection) -> Task:
        from ..engine import _context

        task = _context.current_task()
        assert task is not None
        self._owners[conn.raw.info.backend_pid] = task
        return task

    def wait_or_blockers(self, conn: ScheduledConnection, flight: _InFlight) -> list[Task]:
        """Wait for ``flight`` to finish; or, if another client's backend blocks it, name that client."""
        self.task_of(conn)
        try:
            return self._until_settled(conn, flight)
        except psycopg.errors.ConnectionTimeout:
            self.drop_flight(conn)  # its task leaves the point: the statement must answer no other
            raise

    def settle(self) -> None:
        """Let statements woken by a transaction's end finish, or block again, before going on.

        Each statement in flight is waited for until it finishes or waits for another client's
        lock, however long the server takes: what the run does next never depends on how fast the
        server answers (see :meth:`_until_settled`)."""
        for conn, flight in list(self.flights.items()):
            self._until_settled(conn, flight)
        waits, self.waits = self.waits, []
        for wait in waits:
            wait.wake_all()

    def _until_settled(self, conn: ScheduledConnection, flight: _InFlight) -> list[Task]:
        """Wait until ``flight`` finishes ([]) or waits for other clients' locks (those clients).

        Invariant: the outcome is decided by the server's locks, never by the wall clock.  A
        statement that is merely slow, or waits for a session outside the run's clients, is waited
        for; one that does neither within :data:`SETTLE_SECONDS` raises ``ConnectionTimeout``,
        which the harness reports as the server not answering (an environment error).
        """
        pid = conn.raw.info.backend_pid
        deadline = _real_monotonic() + SETTLE_SECONDS
        while not flight.done.wait(0.002):
            pids = self.admin.execute("SELECT pg_blocking_pids(%s)", (pid,)).fetchone()[0]
            blockers = [self._owners[p] for p in pids if p in self._owners]
            if blockers:
                return blockers
            if _real_monotonic() > deadline and not flight.done.is_set():
                raise psycopg.errors.ConnectionTimeout(
                    f"timeout expired: a statement neither finished nor waited for a client's lock "
                    f"within {SETTLE_SECONDS:g} s"
                )
        return []


def _cancel(raw: psycopg.Connection) -> None:
    """Ask the server to cancel ``raw``'s statement, within :data:`STEP_SECONDS` (best effort)."""
    cancel = getattr(raw, "cancel_safe", None)
    try:
        within(STEP_SECONDS, (lambda: cancel(timeout=STEP_SECONDS)) if cancel else raw.cancel)
    except Exception:
        pass  # a statement the cancel does not stop has its backend terminated next


def _unfinished(flights: list[tuple[psycopg.Connection, _InFlight]], seconds: float) -> list[tuple[psycopg.Connection, _InFlight]]:
    """The flights still running after waiting at most ``seconds`` in all."""
    deadline = _real_monotonic() + seconds
    return [(raw, flight) for raw, flight in flights if not flight.done.wait(max(0.0, deadline - _real_monotonic()))]


def _reset(raw: psycopg.Connection) -> None:
    """End ``raw``'s transaction and reset its session to what a new connection would have."""
    raw.rollback()
    raw.autocommit = True
    try:
        raw.execute("DISCARD ALL")
    finally:
        raw.autocommit = False


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]

"""PostgreSQL teardown never hangs, fails in one line, and what a dead run left is swept.

The freeze this guards against: a client's ``UPDATE`` in flight, waiting for a row lock held by
another client's idle transaction, while the harness rolls the clients back one by one at the end
of the example; the waiter's rollback waited for its own statement, forever (issue 7, seen as a
20-minute freeze of ``queued-write-behind`` on real servers).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import Counter

import psycopg
import pytest
from conftest import SERVERS
from layers import SourceOnly, target
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pytest_cachecheck.backends import _pg_sweep, _postgres
from pytest_cachecheck.backends._backend import Backend
from pytest_cachecheck.backends._fake_cache import FakeCache
from pytest_cachecheck.backends._pg_confinement import Confinement
from pytest_cachecheck.backends._postgres import PostgresSource
from pytest_cachecheck.backends._teardown import TeardownError
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.exploration._run import Run, RunConfig

NEEDS_DB = "needs a real PostgreSQL: set CACHECHECK_DB (.ci/run does, on its second pass)"
needs_db = pytest.mark.skipif(not SERVERS.db_dsn, reason=NEEDS_DB)


def admin() -> psycopg.Connection:
    return psycopg.connect(SERVERS.db_dsn, autocommit=True)


def leftovers(name: str) -> list:
    with admin() as conn:
        return conn.execute(
            "SELECT 'role' FROM pg_roles WHERE rolname = %(n)s UNION ALL "
            "SELECT 'schema' FROM pg_namespace WHERE nspname = %(n)s UNION ALL "
            "SELECT 'database' FROM pg_database WHERE datname = %(n)s",
            {"n": name},
        ).fetchall()


def blocked_on_an_idle_transaction(backend: Backend) -> Run:
    """Client 2 holds u1's row lock in an idle transaction; client 1's UPDATE of u1 waits for it."""
    run = Run(target(SourceOnly), RunConfig(), backend)
    run.start(2, "write", "u1", pause_after=1)  # UPDATE done, COMMIT not yet: idle in transaction
    run.start(1, "write", "u1")  # waits for client 2's row lock, its statement in flight
    assert run.client(1).task.state == "waiting"
    return run


@needs_db
def test_closing_with_a_statement_waiting_on_an_idle_transaction_does_not_hang():
    source = PostgresSource(SERVERS.db_dsn)
    backend = Backend(FakeCache(), source)
    with simulated_world():
        run = blocked_on_an_idle_transaction(backend)

        def close() -> None:
            run.close()  # rolls back client 1 (first) while its UPDATE waits for client 2
            backend.close()

        # On a daemon thread: if this regresses, the test fails instead of freezing the suite.
        closer = threading.Thread(target=close, daemon=True)
        closer.start()
        closer.join(5)
    assert not closer.is_alive(), "closing froze"
    assert leftovers(source.schema) == []


@needs_db
def test_a_statement_the_cancel_does_not_stop_has_its_backend_ended(monkeypatch):
    monkeypatch.setattr(_postgres, "_cancel", lambda raw: None)  # a cancel that never arrives
    monkeypatch.setattr(_postgres, "STEP_SECONDS", 0.5)
    source = PostgresSource(SERVERS.db_dsn)
    backend = Backend(FakeCache(), source)
    try:
        with simulated_world():
            run = blocked_on_an_idle_transaction(backend)
            waiter = run.client(1).connection.raw
            started = time.monotonic()
            run.close()
            assert time.monotonic() - started < 3
            assert waiter.closed and waiter not in source._raw.values()  # its session was ended
            again = Run(target(SourceOnly), RunConfig(), backend)  # the next example gets a new one
            again.start(1, "write", "u1")
            assert again.history().operations()[-1].status == "ok"
            assert source.read(target(SourceOnly).source, "u1") == "u1.v1"
            again.close()
    finally:
        backend.close()
    assert leftovers(source.schema) == []


@needs_db
def test_a_teardown_step_that_cannot_finish_is_one_line_and_the_next_run_sweeps_it(monkeypatch):
    monkeypatch.setattr(_postgres, "ADMIN_SECONDS", 0.5)
    release = threading.Event()
    monkeypatch.setattr(Confinement, "drop", lambda self, admin: release.wait(10))  # a DROP ROLE that hangs
    source = PostgresSource(SERVERS.db_dsn)
    with pytest.raises(TeardownError) as failure:
        source.close()
    message = str(failure.value)
    assert "\n" not in message
    assert message == (
        f"cachecheck: teardown failed on PostgreSQL at 127.0.0.1: dropping the role {source.schema}: "
        "did not finish within 0.5 s"
    )
    assert leftovers(source.schema) == [("role",)]
    monkeypatch.undo()
    with admin() as conn:
        assert _pg_sweep.alive(conn, source.run)  # its admin session still holds the run's lock
    live = PostgresSource(SERVERS.db_dsn)
    live.close()
    assert leftovers(source.schema) == [("role",)]  # a live run's leftovers are never swept
    release.set()
    source.admin.close()  # the run ends: its lock goes with its session
    sweeper = PostgresSource(SERVERS.db_dsn)
    sweeper.close()
    assert leftovers(source.schema) == []
    assert sweeper.swept is not None and re.fullmatch(
        r"cachecheck: swept \d+ dead runs?'s? leftovers from PostgreSQL at 127\.0\.0\.1 \(.*\d+ roles?\)",
        sweeper.swept,
    ), sweeper.swept


@needs_db
def test_a_dead_runs_leftovers_are_swept_and_a_live_runs_are_not():
    dead, live, unmarked = (secrets.token_hex(4) for _ in range(3))
    other_database = make_conninfo("", **{**conninfo_to_dict(SERVERS.db_dsn), "dbname": "postgres"})
    with admin() as conn, psycopg.connect(other_database, autocommit=True) as elsewhere:
        for run in (dead, live, unmarked):
            name = pgsql.Identifier(f"cachecheck_{run}")
            conn.execute(pgsql.SQL("CREATE ROLE {} NOLOGIN").format(name))
            conn.execute(pgsql.SQL("CREATE SCHEMA {}").format(name))
            if run != unmarked:  # a same-named schema and role of someone else's: no mark
                for kind in ("ROLE", "SCHEMA"):
                    conn.execute(pgsql.SQL(f"COMMENT ON {kind} {{}} IS {{}}").format(name, pgsql.Literal(_pg_sweep.MARK)))
        # The live run holds its lock from another database: liveness is cluster-wide.
        elsewhere.execute("SELECT pg_advisory_lock(%s, %s)", _pg_sweep.lock_key(live))
        try:
            sweeper = PostgresSource(SERVERS.db_dsn)
            sweeper.close()
            assert leftovers(f"cachecheck_{dead}") == []
            assert sorted(leftovers(f"cachecheck_{live}")) == [("role",), ("schema",)]
            assert sorted(leftovers(f"cachecheck_{unmarked}")) == [("role",), ("schema",)]
            assert sweeper.swept is not None
            counts = re.fullmatch(
                r"cachecheck: swept (\d+) dead runs?'s? leftovers from PostgreSQL at 127\.0\.0\.1 \((\d+) schemas?.*, (\d+) roles?\)",
                sweeper.swept,
            )
            assert counts and all(int(n) >= 1 for n in counts.groups()), sweeper.swept
        finally:
            for run in (live, unmarked, dead):
                name = pgsql.Identifier(f"cachecheck_{run}")
                conn.execute(pgsql.SQL("DROP SCHEMA IF EXISTS {}").format(name))
                conn.execute(pgsql.SQL("DROP ROLE IF EXISTS {}").format(name))


def test_the_sweep_says_what_went_in_one_line():
    server = "PostgreSQL at 127.0.0.1"
    assert _pg_sweep.sweep_line(server, 0, Counter()) is None
    assert _pg_sweep.sweep_line(server, 3, Counter(schema=3, role=3)) == (
        "cachecheck: swept 3 dead runs' leftovers from PostgreSQL at 127.0.0.1 (3 schemas, 3 roles)"
    )
    assert _pg_sweep.sweep_line(server, 1, Counter(database=1, role=1)) == (
        "cachecheck: swept 1 dead run's leftovers from PostgreSQL at 127.0.0.1 (1 database, 1 role)"
    )


def test_lock_keys_fit_two_int4_and_are_distinct_per_run():
    assert _pg_sweep.lock_key("00000000") == (_pg_sweep.LOCK_CLASS, 0)
    assert _pg_sweep.lock_key("7fffffff") == (_pg_sweep.LOCK_CLASS, 2**31 - 1)
    assert _pg_sweep.lock_key("ffffffff") == (_pg_sweep.LOCK_CLASS, -1)
    assert _pg_sweep.lock_key("80000000") == (_pg_sweep.LOCK_CLASS, -(2**31))

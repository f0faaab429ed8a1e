"""Regressions of the non-reproducible ``reordering`` of a correct layer on real servers (issue 7).

Cause: a statement blocked on another client's row lock stays in flight on PostgreSQL while its
task waits; when the ``error`` fault was injected meanwhile, the *retry* of that statement raised
the injected failure, leaving it in flight, and the client's next statement was answered with the
stale result without ever running.  ``queued-write-behind`` then removed a queued item whose
``UPDATE`` never ran: "client 1's write of u1.v1 ... reached the source, but was overwritten by
an older value".  Whether an exploration reached that interleaving depended on what ran beside it.

The soak (``benchmarks/soak_real.py``) then found a false ``reordering`` that did reproduce:
two flushers taking turns on PostgreSQL's row locks outlasted the rounds of draining.

Invariants pinned here: the fault never fires on the retry of a statement already issued, on
either backend, and both backends give the same run; and what the harness does while a statement
is in flight is decided by the server's locks, never by the wall clock (a statement that waits
for something outside the run's clients is the server not answering: an environment error).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg
import pytest
from conftest import NEEDS_REAL, SERVERS
from psycopg import sql as pgsql
from pytest_cachecheck.strategies.catalogue import CORRECT

from pytest_cachecheck.backends import _postgres
from pytest_cachecheck.backends._backend import Backend, embedded
from pytest_cachecheck.backends._environment import classify_call, stalled_in_server
from pytest_cachecheck.backends._fake_cache import FakeCache
from pytest_cachecheck.checkers import check
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.engine._scheduler import UncontrolledBlocking
from pytest_cachecheck.exploration._run import Run, RunConfig
from pytest_cachecheck.report._trace import trace

QUEUED = next(target for target in CORRECT if target.name == "queued-write-behind")
RETRIED = "UPDATE users SET name = 'u1.v1', seq = 1 WHERE id = 'u1' AND seq < 1"

needs_db = pytest.mark.skipif(not SERVERS.db_dsn, reason=NEEDS_REAL)


@pytest.fixture
def world():
    with simulated_world():
        yield


def postgres_backend() -> Backend:
    return Backend(FakeCache(), _postgres.PostgresSource(SERVERS.db_dsn))


def the_flaky_program(backend: Backend) -> tuple[str, list, list]:
    """The shrunk counterexample the flake reported, replayed: (trace, sql calls, violations)."""
    run = Run(QUEUED, RunConfig(), backend)
    try:
        run.start(1, "write", "u1")  # queued with seq 1
        run.background(1, 4)  # c1's flusher applies it and pauses before COMMIT
        run.background(2)  # c2's flusher applies the same item: blocked on c1's row lock
        assert [task.state for task in run.scheduler.actors() if task.client == 2] == ["waiting"]
        run.crash(1)  # c1 rolls back: c2's statement goes on, on the server
        run.fail_next(2, "sql")  # while c2's statement is in flight
        run.quiesce()
        history = run.history()
        violated = [v.property for v in check(history, QUEUED.contract) if v.status == "violated"]
        sql = [(call.actor, call.command, call.result) for call in history.calls if call.system == "sql"]
        return trace(run), sql, violated
    finally:
        run.close()


def assert_the_fault_spares_the_retry(sql: list, violated: list) -> None:
    assert violated == []
    retried = [result for actor, command, result in sql if actor == "c2/Thread-2" and command == RETRIED]
    # Issued once (blocked), then completed by its own execution: never failed, never repeated.
    assert retried == ["blocked: row lock held by c1/Thread-1", "1 row"]
    assert not any("injected" in result for _, _, result in sql)  # no statement came after it


def test_an_error_fault_never_fails_the_retry_of_a_blocked_statement_on_the_embedded_default(world):
    backend = embedded()
    try:
        trace, sql, violated = the_flaky_program(backend)
    finally:
        backend.close()
    assert [result for actor, command, result in sql if command == RETRIED][-1] == "1 row"
    assert not any("injected" in result for _, _, result in sql)
    assert violated == []


@needs_db
def test_a_statement_in_flight_answers_only_itself_so_the_correct_layer_loses_nothing(world):
    backend = postgres_backend()
    try:
        traces = []
        for _ in range(2):  # the same decisions give the same run, on the same backend
            trace, sql, violated = the_flaky_program(backend)
            assert_the_fault_spares_the_retry(sql, violated)
            traces.append(trace)
    finally:
        backend.close()
    assert traces[0] == traces[1]
    embedded_backend = embedded()
    try:
        on_sqlite = the_flaky_program(embedded_backend)[0]
    finally:
        embedded_backend.close()
    # And the same run on both backends (SQLite's one write lock is PostgreSQL's row lock here).
    assert on_sqlite.replace("write lock held by", "row lock held by") == traces[0]


@needs_db
def test_two_flushers_taking_turns_on_a_row_lock_are_drained_to_the_end(world):
    """Found by ``benchmarks/soak_real.py`` (seed 2045): on PostgreSQL an ``UPDATE`` that waited
    and then matched nothing still locks the row, so the two flushers block each other in turn
    and get one item further per round of draining; a bound on rounds left the newest write in
    flight at quiescence, a false ``reordering``."""
    backend = postgres_backend()
    try:
        run = Run(QUEUED, RunConfig(), backend)
        try:
            for client in (1, 2, 2, 2):
                run.start(client, "write", "u1")
            run.start(1, "write", "u1", pause_after=1)
            run.start(1, "write", "u1", pause_after=2)
            run.start(2, "write", "u1", pause_after=1)
            for pause in (1, 1, 2):  # c2's flusher applies the first item and pauses before COMMIT
                run.background(2, pause)
            run.quiesce()
            history = run.history()
        finally:
            run.close()
    finally:
        backend.close()
    turns = [call for call in history.calls if call.result.startswith("blocked: row lock")]
    assert len(turns) >= 10  # they did take turns, many times
    assert [probe.source for probe in history.probes if probe.key == "u1"] == ["u1.v7"]
    assert [v.property for v in check(history, QUEUED.contract) if v.status == "violated"] == []


@contextmanager
def outside_lock(schema: str) -> Iterator[None]:
    """A session outside the run's clients holds the run's row u1 for the duration."""
    with psycopg.connect(SERVERS.db_dsn) as session:
        table = pgsql.Identifier(schema, "users")
        session.execute(pgsql.SQL("SELECT 1 FROM {} WHERE id = 'u1' FOR UPDATE").format(table))
        try:
            yield
        finally:
            session.rollback()


@needs_db
def test_a_statement_waiting_outside_the_runs_clients_is_the_server_not_answering(world, monkeypatch):
    from layers import SourceOnly, target

    monkeypatch.setattr(_postgres, "SETTLE_SECONDS", 0.3)
    backend = postgres_backend()
    try:
        run = Run(target(SourceOnly), RunConfig(watchdog=30.0), backend)
        try:
            with outside_lock(backend.source.schema):
                run.start(1, "write", "u1")  # waits for the outside session: never "blocked by" a client
        finally:
            run.close()
    finally:
        backend.close()
    [update] = [call for call in run.history().calls if call.command.startswith("UPDATE")]
    assert update.result.startswith("raised ConnectionTimeout: timeout expired")
    fault = classify_call(update)
    assert fault is not None and fault.system == "sql" and fault.what.startswith("stopped answering")


@needs_db
def test_the_watchdog_catching_a_wait_for_postgresql_blames_the_server_not_the_layer(world, monkeypatch):
    from layers import SourceOnly, target

    monkeypatch.setattr(_postgres, "SETTLE_SECONDS", 30.0)
    backend = postgres_backend()
    try:
        run = Run(target(SourceOnly), RunConfig(watchdog=0.5), backend)
        try:
            with outside_lock(backend.source.schema):
                with pytest.raises(UncontrolledBlocking) as stall:
                    run.start(1, "write", "u1")
                fault = stalled_in_server(stall.value.task, backend)  # while it still waits
            assert fault is not None and fault.system == "sql"
        finally:
            run.close()
    finally:
        backend.close()


def test_a_ttl_read_back_a_millisecond_late_gives_the_same_virtual_deadline():
    from pytest_cachecheck.backends._real_redis import layer_ttl

    # The server's PTTL right after the command: the TTL itself, or a few ms less if its clock ticked.
    for asked, late in [(10_000, 9_999), (3_600_000, 3_599_998), (500, 499), (60_000, 59_991)]:
        assert layer_ttl(asked) == layer_ttl(late) == asked / 1000
    assert 131.0 + layer_ttl(3_599_999) == 3731.0  # a tick of 3600 s lands exactly on it, every time
    assert layer_ttl(0) == 0.0

"""Server faults are one line: a Redis or PostgreSQL that goes away, refuses or stops answering
mid-run stops the exploration with an environment error naming the server and the example,
never a finding of the layer and never a Hypothesis error.

Every fault is made on a server of the test's own: a private redis-server (killed, stopped,
filled, limited), or the run's own PostgreSQL connections (terminated by process id).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Callable

import psycopg
import psycopg.conninfo
import psycopg.sql
import pytest
import redis
from pytest_cachecheck.strategies.catalogue import seed_interface
from pytest_cachecheck.strategies.leases import LeasedCacheAside

from pytest_cachecheck import Budget, RunConfig, Target, Verdict, explore, hookimpl
from pytest_cachecheck.backends._backend import Backend
from pytest_cachecheck.backends._environment import EnvironmentFailure, classify, classify_exception
from pytest_cachecheck.backends._fake_cache import FakeCache
from pytest_cachecheck.backends._postgres import PostgresSource
from pytest_cachecheck.backends._real_redis import RealRedisCache
from pytest_cachecheck.backends._sqlite_source import SQLiteSource
from pytest_cachecheck.history import INJECTED, REFUSED, Call

WITHIN = 10.0
"""Wall seconds from the fault to the one-line error, cleanup included."""


def leased(trigger: Callable[[], None] | None = None, after: int = 0) -> Target:
    """The correct lease layer; its ``after``-th operation first calls ``trigger`` (the fault)."""
    count = [0]

    class Faulting(LeasedCacheAside):
        def _fault(self) -> None:
            count[0] += 1
            if trigger is not None and count[0] == after:
                trigger()

        def get_user(self, user_id: str) -> Any:
            self._fault()
            return super().get_user(user_id)

        def update_user(self, user_id: str, data: dict) -> None:
            self._fault()
            super().update_user(user_id, data)

    return seed_interface("leased-cache-aside", Faulting)


def explore_until_fault(target: Target, backend: Backend, **config: Any) -> tuple[EnvironmentFailure, float]:
    """Explore on ``backend`` (the caller closes it) until the fault; the error and the seconds."""
    started = time.monotonic()
    with pytest.raises(EnvironmentFailure) as info:
        explore(target, Budget(examples=5000, seed=1), backend=backend, config=RunConfig(**config))
    return info.value, time.monotonic() - started


def assert_one_line(failure: EnvironmentFailure, server: str, *words: str) -> None:
    line = str(failure)
    assert "\n" not in line and line.isprintable(), line
    assert line.startswith("cachecheck: environment error in leased-cache-aside (example "), line
    assert f"): {server} " in line, line
    for word in words:
        assert word in line, line
    assert not isinstance(failure, AssertionError)  # no finding: nothing is known about the layer


def closed_quietly(backend: Backend) -> None:
    """What the test's own cleanup does after a fault: the server is gone, so is its data."""
    from pytest_cachecheck.backends._environment import close_quietly

    close_quietly(backend.close)


# --- Redis goes away ------------------------------------------------------------------------------


def test_redis_killed_mid_run_is_one_line_naming_it(cachecheck_private_redis):
    server = cachecheck_private_redis
    backend = Backend(RealRedisCache(server.url), SQLiteSource())
    failure, took = explore_until_fault(leased(server.kill, after=40), backend)
    closed_quietly(backend)
    assert_one_line(failure, f"Redis at 127.0.0.1:{server.port}", "went away", "check that the server is running")
    assert failure.example >= 1
    assert took < WITHIN


@pytest.mark.parametrize("delay", [0.15, 0.5])
def test_redis_killed_wherever_the_harness_is_is_one_line(cachecheck_private_redis, delay):
    """From another thread, after a delay: the kill lands in a reset, a layer's command or a probe."""
    server = cachecheck_private_redis
    backend = Backend(RealRedisCache(server.url), SQLiteSource())
    killer = threading.Timer(delay, server.kill)
    killer.start()
    try:
        failure, took = explore_until_fault(leased(), backend)
    finally:
        killer.join()
    closed_quietly(backend)
    assert_one_line(failure, f"Redis at 127.0.0.1:{server.port}", "went away")
    assert took < delay + WITHIN


def test_redis_that_stops_answering_is_one_line(cachecheck_private_redis):
    """SIGSTOP: the next command waits for an answer that never comes; the watchdog tells."""
    server = cachecheck_private_redis
    pid = server._process.pid
    backend = Backend(RealRedisCache(server.url), SQLiteSource())
    try:
        failure, took = explore_until_fault(leased(lambda: os.kill(pid, signal.SIGSTOP), after=40), backend, watchdog=1.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    closed_quietly(backend)
    assert_one_line(failure, f"Redis at 127.0.0.1:{server.port}", "stopped answering")
    assert took < WITHIN


# --- Redis refuses ---------------------------------------------------------------------------------


def test_a_full_redis_is_an_environment_error_not_an_errors_finding(cachecheck_private_redis):
    server = cachecheck_private_redis
    admin = redis.Redis.from_url(server.url)
    admin.config_set("maxmemory", "1mb")
    admin.config_set("maxmemory-policy", "noeviction")
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(10_000):  # the private server only: nothing here is anyone else's
            admin.set(f"filler:{i}", "x" * 10_000)
    admin.close()
    backend = Backend(RealRedisCache(server.url), SQLiteSource())
    try:
        failure, took = explore_until_fault(leased(), backend)
    finally:
        closed_quietly(backend)
    assert_one_line(failure, f"Redis at 127.0.0.1:{server.port}", "is out of memory", "maxmemory-policy")
    assert failure.example == 1  # the first write of the first example is refused
    assert took < WITHIN


def test_redis_at_max_clients_is_an_environment_error(cachecheck_private_redis):
    server = cachecheck_private_redis
    backend = Backend(RealRedisCache(server.url), SQLiteSource())  # its admin connection is open
    admin = redis.Redis.from_url(server.url)
    connected = admin.info("clients")["connected_clients"]
    admin.config_set("maxclients", connected)  # after this one closes, a single client more
    admin.close()
    try:
        failure, took = explore_until_fault(leased(), backend)
    finally:
        closed_quietly(backend)
    assert_one_line(failure, f"Redis at 127.0.0.1:{server.port}", "refused a connection", "maxclients")
    assert took < WITHIN


# --- PostgreSQL ends the run's connections -----------------------------------------------------------


def run_sessions(source: PostgresSource) -> list[int]:
    """The backends of the run's own sessions (its clients' and its reads'), never anyone else's:
    every connection the source holds but its admin sessions, which clean up afterwards."""
    admin = {id(getattr(source, name, None)) for name in ("admin", "home")}
    connections = []
    for value in vars(source).values():
        for candidate in value.values() if isinstance(value, dict) else [value]:
            if isinstance(candidate, psycopg.Connection) and id(candidate) not in admin and not candidate.closed:
                connections.append(candidate)
    return sorted({conn.info.backend_pid for conn in connections})


def test_postgres_backends_terminated_mid_run_is_one_line_naming_it():
    dsn = os.environ.get("CACHECHECK_DB")
    if not dsn:
        pytest.skip("needs PostgreSQL: set CACHECHECK_DB (.ci/run does, on its second pass)")
    source = PostgresSource(dsn)
    backend = Backend(FakeCache(), source)
    terminator = psycopg.connect(dsn, autocommit=True)
    terminated: list[int] = []

    def terminate() -> None:
        pids = run_sessions(source)
        assert pids and terminator.info.backend_pid not in pids
        for pid in pids:  # only ever the run's own backends
            if terminator.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]:
                terminated.append(pid)

    try:
        failure, took = explore_until_fault(leased(terminate, after=40), backend)
        closed_quietly(backend)
        assert len(terminated) >= 2  # the clients' sessions at least
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        server = f"PostgreSQL at {params['host']}:{params.get('port') or 5432} (database {params['dbname']})"
        assert_one_line(failure, server, "ended the run's connection", "pg_terminate_backend")
        assert took < WITHIN
    finally:
        # The run's admin session survives and drops what the run created; in case it did not:
        terminator.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(source.schema)))
        terminator.close()


# --- what is and is not a server fault ---------------------------------------------------------------


@pytest.mark.parametrize(
    "system, kind, message, what",
    [
        ("redis", "ConnectionError", "Error 111 connecting to 127.0.0.1:6379. Connection refused.", "went away"),
        ("redis", "TimeoutError", "Timeout reading from socket", "stopped answering"),
        ("redis", "OutOfMemoryError", "command not allowed when used memory > 'maxmemory'.", "is out of memory"),
        ("redis", "ConnectionError", "max number of clients reached", "refused a connection"),
        ("sql", "AdminShutdown", "terminating connection due to administrator command", "ended the run's connection"),
        ("sql", "OperationalError", "the connection is lost", "went away"),
        ("sql", "OperationalError", "consuming input failed: server closed the connection unexpectedly", "went away"),
        ("sql", "TooManyConnections", "sorry, too many clients already", "refused a connection"),
    ],
)
def test_driver_errors_of_a_failing_server_are_faults(system, kind, message, what):
    fault = classify(system, [kind], message)
    assert fault is not None and fault.what.startswith(what), fault


@pytest.mark.parametrize(
    "system, kind, message",
    [
        ("redis", "ConnectionError", f"{INJECTED} connection error"),  # the `error` fault
        ("sql", "OperationalError", f"{INJECTED} failure of this statement"),
        ("redis", "NoPermissionError", f"{REFUSED}: FLUSHALL"),  # confinement: the layer's doing
        ("redis", "ResponseError", "WRONGTYPE Operation against a key holding the wrong kind of value"),
        ("redis", "AuthenticationError", "invalid username-password pair"),
        ("sql", "OperationalError", "no such table: users"),  # SQLite: the layer's SQL
        ("sql", "UndefinedTable", 'relation "users" does not exist'),
    ],
)
def test_injected_refused_and_layer_errors_are_not_faults(system, kind, message):
    assert classify(system, [kind], message) is None


def test_a_fault_is_found_behind_the_error_it_caused():
    try:
        try:
            raise redis.ConnectionError("Connection reset by peer")
        except redis.ConnectionError as error:
            raise RuntimeError("build failed") from error
    except RuntimeError as wrapped:
        fault = classify_exception(wrapped)
    assert fault is not None and fault.system == "redis"
    assert classify_exception(RuntimeError("nothing to do with a server")) is None


class InjectedRedisFailures:
    """A checker that passes, counting the examples where the ``error`` fault failed a Redis call."""

    def __init__(self) -> None:
        self.examples = 0

    @hookimpl
    def cachecheck_check(self, history: Any, contract: Any) -> Verdict:
        if any(isinstance(e, Call) and e.system == "redis" and INJECTED in e.result for e in history):
            self.examples += 1
        return Verdict.of("counts-injected-redis-failures", findings=[])


def test_the_injected_error_fault_on_a_real_redis_is_still_explored(cachecheck_private_redis):
    """The ``error`` fault raises the driver's own ConnectionError: on a real Redis too it is part
    of the exploration (the queued write-behind survives it), never an environment error."""
    from pytest_cachecheck.strategies.catalogue import CORRECT

    queued = {target.name: target for target in CORRECT}["queued-write-behind"]
    counter = InjectedRedisFailures()
    backend = Backend(RealRedisCache(cachecheck_private_redis.url), SQLiteSource())
    try:
        report = explore(queued, Budget(examples=20, seed=1), backend=backend, plugins=[counter])
    finally:
        backend.close()
    assert report.passed
    assert counter.examples > 0  # injected Redis failures were met, and explored on

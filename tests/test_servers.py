"""Real servers: checked up front, confined to what the harness creates, same findings."""

import hashlib
import secrets
import socket

import psycopg
import pytest
import redis
from conftest import NEEDS_REAL, SERVERS
from pytest_cachecheck.strategies.catalogue import CORRECT, KNOWN_BUGS

from pytest_cachecheck import Budget, CachecheckFailure, Servers, explore
from pytest_cachecheck.backends._backend import Backend
from pytest_cachecheck.backends._fake_cache import FakeCache
from pytest_cachecheck.backends._postgres import PostgresSource
from pytest_cachecheck.backends._real_redis import SAFETY_TTL, RealRedisCache
from pytest_cachecheck.backends._sqlite_source import SQLiteSource
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.exploration._run import Run, RunConfig

SEED = 3
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
LOCAL_DB = "postgresql://postgres@127.0.0.1:5432/test"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- bad settings are one-line usage errors ---------------------------------------------------


@pytest.fixture
def project(pytester):
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    return pytester


def usage_error(project, *args):
    result = project.runpytest("--cachecheck", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr.lines
    assert "Traceback" not in result.stderr.str()
    return errors[0]


@pytest.mark.parametrize(
    "option, expected",
    [
        ("--cachecheck-redis=memcached://127.0.0.1", "ERROR: --cachecheck-redis='memcached://127.0.0.1' is not a Redis URL (*); expected e.g. redis://127.0.0.1:6379/0"),
        ("--cachecheck-db=nonsense==1", "ERROR: --cachecheck-db='nonsense==1' is not a PostgreSQL DSN (*); expected e.g. postgresql://postgres@127.0.0.1:5432/test"),
        ("--cachecheck-redis=redis://10.255.0.1:6379/0", "ERROR: --cachecheck-redis: refusing 10.255.0.1 (10.255.0.1), which is not this machine; * unless --cachecheck-allow-remote is given"),
        ("--cachecheck-db=postgresql://u@10.255.0.1/db", "ERROR: --cachecheck-db: refusing 10.255.0.1 (10.255.0.1), which is not this machine; * unless --cachecheck-allow-remote is given"),
    ],
)
def test_bad_urls_and_remote_hosts_are_usage_errors(project, option, expected):
    import fnmatch

    line = usage_error(project, option)
    assert fnmatch.fnmatch(line, expected), line


def test_an_unreachable_redis_port_is_a_usage_error(project):
    port = closed_port()
    line = usage_error(project, f"--cachecheck-redis=redis://127.0.0.1:{port}/0")
    assert line.startswith(f"ERROR: --cachecheck-redis=redis://127.0.0.1:{port}/0: cannot connect to 127.0.0.1:{port}")
    assert line.endswith("start redis-server there or fix the URL")


def test_an_unreachable_database_is_a_usage_error(project):
    port = closed_port()
    line = usage_error(project, f"--cachecheck-db=postgresql://postgres@127.0.0.1:{port}/test")
    assert "cannot connect" in line and line.endswith("start PostgreSQL there or fix the DSN")


def test_a_wrong_redis_password_is_a_usage_error(project):
    from pytest_cachecheck.backends._private_redis import PrivateRedis

    with PrivateRedis(password="right") as server:
        line = usage_error(project, f"--cachecheck-redis=redis://:wrong@127.0.0.1:{server.port}/0")
    assert line.startswith(f"ERROR: --cachecheck-redis=redis://:***@127.0.0.1:{server.port}/0: authentication failed")
    assert "wrong" not in line  # the password is never echoed


@pytest.mark.skipif(not SERVERS.db_dsn, reason=NEEDS_REAL)
def test_a_database_user_the_server_refuses_is_a_usage_error(project):
    # This machine's PostgreSQL trusts every local user, so a wrong password cannot be shown
    # here; an unknown role fails authentication the same way.
    line = usage_error(project, "--cachecheck-db=postgresql://nobody_" + secrets.token_hex(3) + "@127.0.0.1:5432/test")
    assert "authentication failed" in line and "does not exist" in line


def test_env_and_ini_name_the_servers_too(project, monkeypatch):
    monkeypatch.delenv("CACHECHECK_DB", raising=False)
    port = closed_port()
    monkeypatch.setenv("CACHECHECK_REDIS", f"redis://127.0.0.1:{port}/0")
    assert "cannot connect" in usage_error(project)
    monkeypatch.delenv("CACHECHECK_REDIS")
    project.makeini(f"[pytest]\ncachecheck_db = postgresql://postgres@127.0.0.1:{port}/test\n")
    assert "--cachecheck-db=" in usage_error(project)


# --- on real servers ----------------------------------------------------------------------


def foreign_redis_state(client, prefix):
    keys = sorted(client.scan_iter(match=prefix + "*", count=1000))
    digest = hashlib.sha256()
    for key, value in zip(keys, client.mget(keys) if keys else []):
        digest.update(key + b"=" + value + b";")
    # Everything outside the runs' own keys (a run's sweep may remove dead runs' leftovers).
    others = sum(1 for key in client.scan_iter(count=1000) if not key.startswith(b"cachecheck:"))
    return len(keys), others, digest.hexdigest()


def foreign_table_state(conn, table):
    count, checksum = conn.execute(f"SELECT count(*), md5(string_agg(id || ':' || note, ',' ORDER BY id)) FROM {table}").fetchone()
    return count, checksum


def test_real_servers_leave_foreign_data_untouched(real_servers):
    client = redis.Redis.from_url(real_servers.redis_url)
    prefix = f"foreign:{secrets.token_hex(4)}:"
    table = f"public.foreign_{secrets.token_hex(4)}"
    pipe = client.pipeline(transaction=False)
    for i in range(10_000):
        pipe.set(f"{prefix}{i}", f"value-{i}")
    pipe.execute()
    with psycopg.connect(real_servers.db_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, note TEXT)")
        conn.execute(f"INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, 500) g")
        # The runs' schemas and roles.
        runs_objects = (
            "SELECT nspname FROM pg_namespace WHERE nspname ~ '^cachecheck_[0-9a-f]{8}$' "
            "UNION ALL SELECT rolname FROM pg_roles WHERE rolname ~ '^cachecheck_[0-9a-f]{8}$'"
        )
        redis_before, table_before = foreign_redis_state(client, prefix), foreign_table_state(conn, table)
        try:
            # The explorations' own backends, so that what they leave is told apart from what
            # other runs beside this test leave (or a run killed meanwhile, until it is swept).
            failing, passing = real_servers.backend(), real_servers.backend()
            with pytest.raises(CachecheckFailure):
                explore(KNOWN_BUGS[0], Budget(examples=300, seed=SEED), backend=failing)
            failing.close()
            explore(CORRECT[0], Budget(examples=50, seed=SEED), backend=passing)
            passing.close()
            assert foreign_redis_state(client, prefix) == redis_before
            assert foreign_table_state(conn, table) == table_before
            for backend in (failing, passing):
                assert not list(client.scan_iter(match=f"cachecheck:{backend.cache.run}:*", count=1000))
                assert backend.cache.run not in {user[len("cachecheck-"):] for user in client.acl_users()}
                name = backend.source.schema
                assert name not in {row[0] for row in conn.execute(runs_objects)}
        finally:
            conn.execute(f"DROP TABLE {table}")
            for start in range(0, 10_000, 1000):
                client.delete(*(f"{prefix}{i}" for i in range(start, start + 1000)))


def test_the_seed_race_has_the_same_counterexample_on_real_servers(real_servers):
    traces = []
    for servers in (Servers(), real_servers):
        with pytest.raises(CachecheckFailure) as failure:
            explore(KNOWN_BUGS[0], Budget(examples=2000, seed=SEED), servers=servers)
        traces.append(failure.value.violation.trace)
    assert traces[0] == traces[1]


@pytest.fixture
def world():
    with simulated_world():
        yield


class Ttl:
    """Caches with a 10 s TTL, and reports TTLs as the layer sees them."""

    def __init__(self, r, conn):
        self.r, self.conn = r, conn

    def read(self, key):
        cached = self.r.get(f"user:{key}")
        if cached is not None:
            return cached
        value = self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()[0]
        self.r.set(f"user:{key}", value, ex=10)
        self.seen_ttl = self.r.ttl(f"user:{key}")
        return value

    def write(self, key, value):
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
        self.conn.commit()


@pytest.mark.skipif(not SERVERS.redis_url, reason=NEEDS_REAL)
def test_on_real_redis_expiry_runs_in_virtual_time_and_keys_are_confined(world):
    from layers import target

    backend = Backend(RealRedisCache(SERVERS.redis_url), SQLiteSource())
    admin = redis.Redis.from_url(SERVERS.redis_url)
    try:
        run = Run(target(Ttl), RunConfig(), backend)
        run.start(1, "read", "u1")
        layer = run.client(1).instance
        assert layer.seen_ttl == 10
        [server_key] = list(admin.scan_iter(match=backend.cache.prefix + "*"))
        assert server_key == (backend.cache.prefix + "user:u1").encode()
        # The server expires it only by the safety TTL, long after; the layer's 10 s are virtual.
        assert SAFETY_TTL * 1000 - 60_000 < admin.pttl(server_key) <= SAFETY_TTL * 1000
        run.start(2, "write", "u1")
        run.tick(9)
        run.start(1, "read", "u1")
        assert run.history().operations()[-1].observed == "u1.v0"  # cached, stale
        run.tick(2)
        run.start(1, "read", "u1")
        assert run.history().operations()[-1].observed == "u1.v1"  # expired in virtual time
        run.close()
    finally:
        backend.close()
    assert list(admin.scan_iter(match=backend.cache.base + "*")) == []


class TwoRows:
    """Writes its key's row, then its neighbour's, in one transaction: deadlocks in opposite order."""

    def __init__(self, r, conn):
        self.conn = conn

    def read(self, key):
        return self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()[0]

    def write(self, key, value):
        other = "u2" if key == "u1" else "u1"
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
        self.conn.execute("UPDATE users SET name = name WHERE id = %s", (other,))
        self.conn.commit()


@pytest.mark.skipif(not SERVERS.db_dsn, reason=NEEDS_REAL)
def test_on_postgresql_a_row_lock_wait_is_cooperative_and_a_cycle_is_a_deadlock(world):
    from layers import target

    from pytest_cachecheck.engine._scheduler import Stall

    backend = Backend(FakeCache(), PostgresSource(SERVERS.db_dsn))
    try:
        run = Run(target(TwoRows), RunConfig(), backend)
        run.start(1, "write", "u1", pause_after=1)  # holds u1
        run.start(2, "write", "u2", pause_after=1)  # holds u2
        run.resume(1)  # wants u2: waits for c2
        assert run.client(1).task.state == "waiting"
        with pytest.raises(Stall) as stall:
            run.resume(2)  # wants u1: a cycle
        assert stall.value.message == "deadlock: c2 waits for a row lock held by c1; c1 waits for a row lock held by c2"
        run.close()
    finally:
        backend.close()


class Flusher:
    """Clears its cache the blunt way: on a shared server that would be someone else's data."""

    def __init__(self, r, conn):
        self.r, self.conn = r, conn

    def read(self, key):
        self.r.flushdb()
        return self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()[0]


@pytest.mark.skipif(not SERVERS.redis_url, reason=NEEDS_REAL)
def test_on_real_redis_a_command_beyond_the_prefix_is_refused_not_sent():
    from layers import target

    client = redis.Redis.from_url(SERVERS.redis_url)
    marker = f"foreign:{secrets.token_hex(4)}"
    client.set(marker, "keep")
    try:
        with pytest.raises(CachecheckFailure) as failure:
            explore(target(Flusher, write=None), Budget(examples=5, seed=1), servers=Servers(redis_url=SERVERS.redis_url))
        assert "FLUSHDB reaches beyond the run's keys" in str(failure.value)
        assert client.get(marker) == b"keep"
    finally:
        client.delete(marker)

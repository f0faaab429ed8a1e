"""A pytest killed with -9 mid-exploration: its leftovers expire, and the next run sweeps them."""

import os
import secrets
import signal
import subprocess
import sys
import time

import psycopg
import psycopg.conninfo
import pytest
import redis

from pytest_cachecheck import Servers
from pytest_cachecheck.backends._pg_sweep import alive, find
from pytest_cachecheck.backends._real_redis import SAFETY_TTL
from pytest_cachecheck.backends._sweep_redis import live_runs

TARGET = """
import pytest
from pytest_cachecheck.strategies.catalogue import seed_interface
from pytest_cachecheck.strategies.leases import LeasedCacheAside

@pytest.mark.cachecheck
def test_long(cachecheck_explore):
    cachecheck_explore(seed_interface("leased", LeasedCacheAside), examples={examples})
"""


def _pytest(directory, servers, examples):
    (directory / "test_target.py").write_text(TARGET.format(examples=examples))
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "--cachecheck",
        f"--cachecheck-redis={servers.redis_url}", f"--cachecheck-db={servers.db_dsn}", "test_target.py",
    ]
    return subprocess.Popen(command, cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _dead_keys(client):
    alive_runs = live_runs(client)
    return [key for key in client.scan_iter(match="cachecheck:*", count=1000) if key.split(b":")[1].decode() not in alive_runs]


def _dead_pg_objects(dsn):
    with psycopg.connect(dsn, autocommit=True) as admin:
        return [item for item in find(admin) if not alive(admin, item.name.removeprefix("cachecheck_"))]


@pytest.fixture
def private_servers(real_servers, cachecheck_private_redis):
    """A private redis-server and a throwaway database: no other run can sweep what the victim
    leaves there before the follower does (PostgreSQL roles are cluster-wide, schemas are not)."""
    name = f"cachecheck_test_{secrets.token_hex(4)}"
    with psycopg.connect(real_servers.db_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    dsn = psycopg.conninfo.make_conninfo(real_servers.db_dsn, dbname=name)
    yield Servers(redis_url=cachecheck_private_redis.url, db_dsn=dsn)
    with psycopg.connect(real_servers.db_dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_killed_run_leaves_expiring_keys_and_the_next_run_sweeps_them(private_servers, tmp_path):
    real_servers = private_servers
    client = redis.Redis.from_url(real_servers.redis_url)
    others = live_runs(client)  # explorations running beside this test are not the victim
    victim = _pytest(tmp_path, real_servers, examples=100_000)
    try:
        deadline = time.monotonic() + 60
        # Wait until the victim is mid-example: keys of its run are on the server.
        while time.monotonic() < deadline:
            assert victim.poll() is None, victim.stdout.read()
            runs = live_runs(client) - others
            if runs and any(client.scan_iter(match=f"cachecheck:{runs.pop()}:*", count=1000)):
                break
            time.sleep(0.05)
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
    time.sleep(0.5)  # the server notices the closed connections

    # Killed mid-example it leaves that example's keys (each expiring by the safety TTL); killed
    # between two examples, only its ACL user: either way, something to sweep.
    left = _dead_keys(client)
    users = [user for user in client.acl_users() if user.startswith("cachecheck-") and user[11:] not in live_runs(client)]
    assert left or users, "the killed run left nothing behind"
    ttls = [client.ttl(key) for key in left]
    assert all(0 < ttl <= SAFETY_TTL for ttl in ttls if ttl != -2), ttls
    assert _dead_pg_objects(real_servers.db_dsn), "the killed run left no schema or role"

    follower = _pytest(tmp_path, real_servers, examples=2)
    output, _ = follower.communicate(timeout=120)
    assert follower.returncode == 0, output
    swept = [line for line in output.splitlines() if line.startswith("cachecheck: swept")]
    assert any("from Redis" in line for line in swept), output
    assert any("from PostgreSQL" in line and "schema" in line for line in swept), output
    assert not [key for key in left if client.exists(key)]
    assert not set(users) & set(client.acl_users())
    assert not _dead_pg_objects(real_servers.db_dsn)

"""Confinement on a real Redis is the server's: hostile layers against a server full of foreign data.

A private redis-server holds 10,000 foreign keys in database 0 and more in database 1.  Each
hostile layer tries one escape from its read (directly, in a pipeline, in MULTI, in Lua, or
around the interposer through a raw pool) and swallows the error; afterwards every foreign key
is intact in both databases, the server is up and unchanged, nothing of the run is left, and the
exploration reports a ``confinement`` finding naming the command.
"""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import redis
from layers import target

from pytest_cachecheck import Budget, CachecheckFailure, explore
from pytest_cachecheck.backends._backend import Backend
from pytest_cachecheck.backends._private_redis import PrivateRedis, PrivateRedisError
from pytest_cachecheck.backends._real_redis import SAFETY_TTL, RealRedisCache
from pytest_cachecheck.backends._redis_acl import missing
from pytest_cachecheck.backends._sqlite_source import SQLiteSource
from pytest_cachecheck.backends._sweep_redis import take_lines
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.exploration._run import Run, RunConfig

FOREIGN_KEYS = 10_000
FOREIGN_KEYS_DB1 = 500
LIBRARY = "#!lua name=hostile\nredis.register_function('f', function() return 1 end)"


@pytest.fixture(scope="module")
def server():
    try:
        private = PrivateRedis()
    except PrivateRedisError as error:
        pytest.skip(str(error))
    with private:
        for db, count in ((0, FOREIGN_KEYS), (1, FOREIGN_KEYS_DB1)):
            client = redis.Redis(port=private.port, db=db)
            pipe = client.pipeline(transaction=False)
            for i in range(count):
                pipe.set(f"foreign:{i}", f"value-{db}-{i}")
            pipe.execute()
            client.close()
        yield private


def server_state(port):
    """Every foreign value and the size of both databases; and the server's settings."""
    state = []
    for db, count in ((0, FOREIGN_KEYS), (1, FOREIGN_KEYS_DB1)):
        client = redis.Redis(port=port, db=db)
        values = client.mget([f"foreign:{i}" for i in range(count)])
        state.append((client.dbsize(), hashlib.sha256(repr(values).encode()).hexdigest()))
        client.close()
    admin = redis.Redis(port=port)
    state.append(admin.config_get("maxmemory"))
    state.append(admin.function_list())
    admin.close()
    return state


@pytest.fixture
def guarded_server(server):
    """The server, checked unharmed after the test: data, settings, a bystander's connection."""
    bystander = redis.Redis(port=server.port)
    bystander_id = bystander.client_id()
    before = server_state(server.port)
    yield server
    admin = redis.Redis(port=server.port)
    assert admin.ping()
    assert server_state(server.port) == before
    assert bystander_id in [int(entry["id"]) for entry in admin.client_list()]
    assert list(admin.scan_iter(match="cachecheck:*")) == []
    assert admin.acl_users() == ["default"]
    admin.close()
    bystander.close()


def pipeline(client, *commands, transaction=False):
    pipe = client.pipeline(transaction=transaction)
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute()


def raw(client):
    """Around the interposer: a plain client on the layer's own connection pool."""
    return redis.Redis(connection_pool=client.connection_pool)


def hostile(escape):
    class Hostile:
        """A correct read-through-the-source layer that also tries ``escape`` and swallows the error."""

        def __init__(self, r, conn):
            self.r, self.conn = r, conn

        def read(self, key):
            try:
                escape(self.r)
            except redis.RedisError:
                pass
            return self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()[0]

        def write(self, key, value):
            self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
            self.conn.commit()

    return Hostile


def explore_on(url, layer, *, unconfined=False):
    backend = Backend(RealRedisCache(url, unconfined=unconfined), SQLiteSource())
    try:
        return explore(target(layer), Budget(examples=3, seed=1), backend=backend)
    finally:
        backend.close()


ESCAPES = {
    "flushall": (lambda r: r.flushall(), "FLUSHALL"),
    "flushall-in-pipeline": (lambda r: pipeline(r, ("SET", "k", "v"), ("FLUSHALL",)), "FLUSHALL"),
    "flushall-in-multi": (lambda r: pipeline(r, ("SET", "k", "v"), ("FLUSHALL",), transaction=True), "FLUSHALL"),
    "config-set-maxmemory": (lambda r: r.config_set("maxmemory", "1mb"), "CONFIG SET"),
    "client-kill": (lambda r: r.execute_command("CLIENT", "KILL", "TYPE", "normal"), "CLIENT KILL"),
    "shutdown-in-pipeline": (lambda r: pipeline(r, ("SHUTDOWN", "NOSAVE")), "SHUTDOWN"),
    "select-1-in-pipeline": (lambda r: pipeline(r, ("SELECT", 1), ("SET", "foreign:1", "x")), "SELECT"),
    "eval-flushall": (lambda r: r.eval("redis.call('FLUSHALL')", 0), "EVAL"),
    "eval-flushall-in-multi": (lambda r: pipeline(r, ("EVAL", "redis.call('FLUSHALL')", 0), transaction=True), "EVAL"),
    "eval-undeclared-foreign-key": (lambda r: r.eval("redis.call('SET', 'foreign:1', 'x')", 0), "EVAL"),
    "client-pause": (lambda r: r.client_pause(10_000), "CLIENT PAUSE"),
    "function-load": (lambda r: r.function_load(LIBRARY), "FUNCTION LOAD"),
    "randomkey": (lambda r: r.randomkey(), "RANDOMKEY"),
    "raw-pool-flushall": (lambda r: raw(r).flushall(), "FLUSHALL"),
    "raw-pool-pipeline-flushall": (lambda r: pipeline(raw(r), ("FLUSHALL",)), "FLUSHALL"),
    "raw-pool-set-foreign": (lambda r: raw(r).set("foreign:1", "x"), "SET foreign:1"),
    "raw-pool-bytes-set-foreign": (lambda r: raw(r).execute_command(b"SET", "foreign:1", "x"), "SET foreign:1"),
    "raw-pool-xgroup-mkstream": (
        lambda r: raw(r).xgroup_create("foreign:stream", "g", "$", mkstream=True),
        "XGROUP CREATE foreign:stream",
    ),
    "raw-pool-object-encoding": (lambda r: raw(r).object("encoding", "foreign:1"), "OBJECT ENCODING foreign:1"),
    "raw-pool-memory-usage": (lambda r: raw(r).memory_usage("foreign:1"), "MEMORY USAGE foreign:1"),
    "raw-pool-randomkey": (lambda r: raw(r).randomkey(), "RANDOMKEY"),
    "raw-pool-keys": (lambda r: raw(r).keys("*"), "KEYS"),
    "raw-pool-scan": (lambda r: raw(r).scan(0), "SCAN"),
    "raw-pool-eval-del": (lambda r: raw(r).eval("redis.call('DEL', 'foreign:1')", 0), "EVAL"),
    "raw-pool-auth-as-default": (lambda r: raw(r).execute_command("AUTH", "default", "x"), "AUTH"),
    "raw-pool-reset": (lambda r: raw(r).execute_command("RESET"), "RESET"),
}


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_an_escape_is_refused_and_reported_as_the_layers_finding(guarded_server, escape):
    attempt, command = ESCAPES[escape]
    with pytest.raises(CachecheckFailure) as failure:
        explore_on(guarded_server.url, hostile(attempt))
    report = failure.value.report
    assert report.properties["confinement"] == "violated"
    assert [name for name, status in report.properties.items() if status == "violated"] == ["confinement"]
    [finding] = [line for line in str(failure.value).splitlines() if "tried to" in line][:1]
    assert command.lower() in finding.lower() and "cachecheck: refused" not in finding, finding
    assert "reaches beyond the run's keys" in finding


def test_an_unconfined_run_still_refuses_what_the_guard_knows(guarded_server):
    with pytest.raises(CachecheckFailure) as failure:
        explore_on(guarded_server.url, hostile(lambda r: pipeline(r, ("FLUSHALL",))), unconfined=True)
    assert failure.value.report.properties["confinement"] == "violated"
    assert "refused by cachecheck, not sent" in str(failure.value)


def own(check):
    def attempt(r):
        assert check(r), "the layer did not see its own key"
    return attempt


CONFINED_BY_REWRITING = {
    # The layer names a foreign key through the interposer: it gets a key of its own by that name.
    "bytes-set": lambda r: r.execute_command(b"SET", "foreign:1", "mine") and r.get("foreign:1") == "mine",
    "bytes-set-in-pipeline": lambda r: pipeline(r, (b"SET", "foreign:1", "mine"), (b"GET", "foreign:1"))[1] == "mine",
    "bytes-set-in-multi": lambda r: pipeline(r, (b"SET", "foreign:1", "mine"), ("GET", "foreign:1"), transaction=True)[1]
    == "mine",
    "xgroup-create-mkstream": lambda r: r.xgroup_create("foreign:stream", "g", "$", mkstream=True) and r.exists("foreign:stream"),
    "object-encoding": lambda r: r.set("foreign:1", "mine") and r.object("encoding", "foreign:1") == "embstr",
    "memory-usage": lambda r: r.set("foreign:1", "mine") and r.memory_usage("foreign:1") > 0,
    "eval-declared-key": lambda r: r.eval("return redis.call('SET', KEYS[1], 'mine')", 1, "foreign:1") and r.get("foreign:1") == "mine",
    "keys": lambda r: r.set("foreign:1", "mine") and r.keys("foreign:*") == ["foreign:1"],
}


@pytest.mark.parametrize("attempt", sorted(CONFINED_BY_REWRITING))
def test_a_foreign_key_named_through_the_interposer_is_the_layers_own(guarded_server, attempt):
    report = explore_on(guarded_server.url, hostile(own(CONFINED_BY_REWRITING[attempt])))
    assert report.passed and report.properties["confinement"] == "ok" and report.properties["errors"] == "ok"


# --- the ACL user on its own, without the client-side guard -----------------------------------

ACL_REFUSES = [
    ("FLUSHALL",), ("FLUSHDB",), ("SWAPDB", 0, 1), ("CONFIG", "SET", "maxmemory", "1mb"), ("CONFIG", "GET", "*"),
    ("CLIENT", "KILL", "TYPE", "normal"), ("CLIENT", "PAUSE", 10_000), ("CLIENT", "LIST"), ("SHUTDOWN", "NOSAVE"),
    ("SELECT", 1), ("RANDOMKEY",), ("KEYS", "*"), ("SCAN", 0), ("DBSIZE",), ("INFO",),
    ("FUNCTION", "LOAD", LIBRARY), ("FUNCTION", "FLUSH"), ("SCRIPT", "FLUSH"), ("SCRIPT", "KILL"), ("ACL", "LIST"),
    ("MONITOR",), ("CLIENT", "TRACKING", "ON", "BCAST"), ("PUBSUB", "CHANNELS"), ("MEMORY", "STATS"),
    ("SET", "foreign:1", "x"), ("GET", "foreign:1"), ("OBJECT", "ENCODING", "foreign:1"), ("MEMORY", "USAGE", "foreign:1"),
    ("XGROUP", "CREATE", "foreign:stream", "g", "$", "MKSTREAM"), ("PUBLISH", "foreign-channel", "x"),
    ("EVAL", "redis.call('FLUSHALL')", 0), ("EVAL", "redis.call('SET', 'foreign:1', 'x')", 0),
    ("EVAL", "redis.call('SELECT', 1)", 0), ("MIGRATE", "127.0.0.1", 1, "foreign:1", 0, 10),
]


def test_the_runs_acl_user_itself_refuses_every_escape_and_allows_its_own_keys(guarded_server):
    cache = RealRedisCache(guarded_server.url)
    try:
        plain = redis.Redis(port=guarded_server.port, username=cache.user.name, password=cache.user.password)
        mine = cache.base + "1:k"
        assert plain.set(mine, "v") and plain.eval("return redis.call('GET', KEYS[1])", 1, mine) == b"v"
        assert plain.script_load("return 1") and plain.publish(cache.base + "1:channel", "x") == 0
        allowed = []
        for command in [*ACL_REFUSES, ("MOVE", mine, 1)]:
            try:
                plain.execute_command(*command)
                allowed.append(command)
            except redis.ResponseError as error:
                text = str(error)
                assert "no permissions" in text or "can't run" in text or "can't access" in text, (command, text)
        assert allowed == []
        # DEBUG is refused by the server's configuration before the ACL is asked: ask the ACL.
        assert "no permissions" in plain_admin_dryrun(guarded_server.port, cache.user.name, "DEBUG", "SLEEP", "0")
        plain.close()
    finally:
        cache.close()


def plain_admin_dryrun(port, user, *command):
    admin = redis.Redis(port=port, decode_responses=True)
    try:
        return admin.execute_command("ACL", "DRYRUN", user, *command)
    finally:
        admin.close()


# --- refusing a login that cannot confine -----------------------------------------------------


@pytest.fixture
def no_acl_rights_server():
    try:
        private = PrivateRedis()
    except PrivateRedisError as error:
        pytest.skip(str(error))
    with private:
        redis.Redis(port=private.port).acl_setuser("default", enabled=True, nopass=True, commands=["-acl"])
        yield private


def test_a_login_without_acl_rights_is_a_one_line_usage_error_unless_unconfined(pytester, no_acl_rights_server):
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    url = no_acl_rights_server.url
    result = pytester.runpytest("--cachecheck", f"--cachecheck-redis={url}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert errors == [
        f"ERROR: --cachecheck-redis={url}: the login 'default' cannot create ACL users (this user has no "
        "permissions to run the 'acl|setuser' command), which cachecheck needs to confine the layer to the run's "
        "keys; log in as a user with ACL rights (e.g. +acl|setuser +acl|deluser +acl|users +client|list), or pass "
        "--cachecheck-unconfined to run without it"
    ], result.stderr.lines
    assert "Traceback" not in result.stderr.str()
    assert pytester.runpytest("--cachecheck", f"--cachecheck-redis={url}", "--cachecheck-unconfined").ret == 0


def test_a_server_older_than_7_is_refused_whatever_the_option():
    class Redis62:
        def execute_command(self, *args):
            return {b"server": b"redis", b"version": b"6.2.6", b"proto": 3}

    problem = missing(Redis62(), unconfined=True)
    assert problem.startswith("the server is Redis 6.2.6; cachecheck needs Redis 7.0 or newer")


# --- safety TTL and virtual deadlines ---------------------------------------------------------


class Expiries:
    """Runs a fixed script of TTL-touching commands and records the TTLs it sees."""

    def __init__(self, r, conn):
        self.r, self.conn = r, conn

    def read(self, key):
        r, seen = self.r, {}
        r.set("plain", "v")
        seen["plain"] = r.ttl("plain")
        r.set("ttl", "v", ex=10)
        r.set("ttl", "w", keepttl=True)
        r.getex("ttl")
        seen["keepttl+getex"] = r.ttl("ttl")
        r.hset("hash", "f", "v")
        seen["hset"] = r.ttl("hash")
        seen["nx-on-none"] = (r.expire("hash", 5, nx=True), r.ttl("hash"))
        seen["nx-on-some"] = (r.expire("hash", 50, nx=True), r.ttl("hash"))
        seen["xx-on-none"] = (r.expire("plain", 7, xx=True), r.ttl("plain"))
        seen["gt"] = (r.expire("hash", 60, gt=True), r.ttl("hash"))
        seen["lt"] = (r.expire("hash", 30, lt=True), r.ttl("hash"))
        r.rename("hash", "moved")
        seen["rename"] = r.ttl("moved")
        r.expireat("plain", int(time.time()) + 20)
        seen["expireat"] = r.ttl("plain")
        r.set("pxat", "v", pxat=int((time.time() + 3) * 1000))
        seen["pxat"] = r.pttl("pxat")
        pipe = r.pipeline()
        pipe.set("piped", "v", ex=9)
        pipe.persist("ttl")
        pipe.execute()
        seen["pipeline"] = (r.ttl("piped"), r.ttl("ttl"))
        r.eval("redis.call('SET', KEYS[1], 'v', 'EX', 40)", 1, "scripted")
        seen["script"] = r.ttl("scripted")
        self.seen = seen
        return self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()[0]


def test_every_key_carries_the_safety_ttl_while_the_layer_sees_its_own(server):
    backend = Backend(RealRedisCache(server.url), SQLiteSource())
    admin = redis.Redis(port=server.port)
    try:
        with simulated_world():
            run = Run(target(Expiries, write=None), RunConfig(), backend)
            run.start(1, "read", "u1")
            seen = run.client(1).instance.seen
            keys = list(admin.scan_iter(match=backend.cache.prefix + "*"))
            server_ttls = [admin.pttl(key) for key in keys]
            run.close()
    finally:
        backend.close()
        admin.close()
    assert seen == {
        "plain": -1,
        "keepttl+getex": 10,
        "hset": -1,
        "nx-on-none": (True, 5),
        "nx-on-some": (False, 5),
        "xx-on-none": (False, -1),
        "gt": (True, 60),
        "lt": (True, 30),
        "rename": 30,
        "expireat": 20,
        "pxat": 3000,
        "pipeline": (9, -1),
        "script": 40,
    }
    assert len(keys) == 6
    assert all(SAFETY_TTL * 1000 - 60_000 < ttl <= SAFETY_TTL * 1000 for ttl in server_ttls), server_ttls


def test_per_example_cleanup_does_not_scan_the_keyspace(server):
    from pytest_cachecheck.strategies.catalogue import CORRECT

    layer = {t.name: t for t in CORRECT}["versioned-write-through"]  # Lua scripts included
    admin = redis.Redis(port=server.port)

    def scans():
        return admin.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)

    backend = Backend(RealRedisCache(server.url), SQLiteSource())
    try:
        admin.config_resetstat()
        explore(layer, Budget(examples=20, seed=1), backend=backend)
        during = scans()
    finally:
        backend.close()
    at_close = scans() - during
    admin.close()
    assert (during, at_close > 0) == (0, True)


# --- heartbeat and sweep ----------------------------------------------------------------------


def test_the_sweep_removes_dead_runs_leftovers_and_spares_live_ones(guarded_server):
    port = guarded_server.port
    admin = redis.Redis(port=port)
    live = RealRedisCache(guarded_server.url)
    admin.set(live.base + "1:k", "busy")
    for i in range(5):
        admin.set(f"cachecheck:deadbeef:{i}:k", "left")
    admin.acl_setuser("cachecheck-deadbeef", enabled=True, passwords=["+x"], keys=["cachecheck:deadbeef:*"])
    hung = redis.Redis(port=port, client_name="cachecheck-cafebabe")  # alive, doing nothing
    hung.ping()
    for i in range(3):
        admin.set(f"cachecheck:cafebabe:1:{i}", "busy")
    admin.acl_setuser("cachecheck-cafebabe", enabled=True, passwords=["+x"], keys=["cachecheck:cafebabe:*"])
    try:
        sweeper = RealRedisCache(guarded_server.url)
        sweeper.close()
        assert sweeper.swept == f"cachecheck: swept 1 dead run's leftovers from Redis at 127.0.0.1:{port} (5 keys, 1 ACL user)"
        assert list(admin.scan_iter(match="cachecheck:deadbeef:*")) == []
        assert "cachecheck-deadbeef" not in admin.acl_users()
        assert len(list(admin.scan_iter(match="cachecheck:cafebabe:*"))) == 3
        assert {"cachecheck-cafebabe", live.user.name} <= set(admin.acl_users())
        assert admin.get(live.base + "1:k") == b"busy"
        hung.close()
        time.sleep(0.1)
        again = RealRedisCache(guarded_server.url)
        again.close()
        assert again.swept == f"cachecheck: swept 1 dead run's leftovers from Redis at 127.0.0.1:{port} (3 keys, 1 ACL user)"
        assert take_lines()[-2:] == [sweeper.swept, again.swept]  # what the plugin prints
        assert take_lines() == []
    finally:
        live.close()
        admin.close()


KILLED_RUN = textwrap.dedent(
    """
    import os, sys
    from pytest_cachecheck import Budget, Target, explore
    from pytest_cachecheck.backends._backend import Backend
    from pytest_cachecheck.backends._real_redis import RealRedisCache
    from pytest_cachecheck.backends._sqlite_source import SQLiteSource

    class Layer:
        def __init__(self, r, conn):
            self.r, self.conn = r, conn

        def read(self, key):
            self.r.set("plain:" + key, "v")
            self.r.set("long-ttl:" + key, "v", ex=86400)
            self.r.hset("hash:" + key, "f", "v")
            self.r.eval("redis.call('SET', KEYS[1], 'v')", 1, "script:" + key)
            os.write(1, b"written\\n")
            os.read(0, 1)  # hangs here, holding its keys, until killed

        def write(self, key, value):
            pass

    cache = RealRedisCache(sys.argv[1])
    os.write(1, (cache.run + "\\n").encode())
    explore(Target(name="killed", build=Layer, read="read", write="write"), Budget(examples=1000, seed=1),
            backend=Backend(cache, SQLiteSource()))
    """
)


def test_a_killed_runs_keys_expire_on_their_own_and_the_next_run_sweeps_them(guarded_server):
    admin = redis.Redis(port=guarded_server.port)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, guarded_server.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        run = child.stdout.readline().decode().strip()
        assert child.stdout.readline() == b"written\n"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    keys = sorted(admin.scan_iter(match=f"cachecheck:{run}:*"))
    ttls = [admin.pttl(key) for key in keys]
    assert len(keys) == 4 and all(0 < ttl <= SAFETY_TTL * 1000 for ttl in ttls), (keys, ttls)
    assert f"cachecheck-{run}" in admin.acl_users()
    deadline = time.monotonic() + 5
    while any(entry["name"] == f"cachecheck-{run}" for entry in admin.client_list()) and time.monotonic() < deadline:
        time.sleep(0.02)
    cache = RealRedisCache(guarded_server.url)
    cache.close()
    assert cache.swept == (
        f"cachecheck: swept 1 dead run's leftovers from Redis at 127.0.0.1:{guarded_server.port} (4 keys, 1 ACL user)"
    )
    assert list(admin.scan_iter(match=f"cachecheck:{run}:*")) == []
    admin.close()

"""The Redis and SQL interposers: every call a scheduling point, every point in the history."""

import datetime
import json
import threading
import time
import uuid

import pytest
from layers import target

from pytest_cachecheck import Call, Source, Target
from pytest_cachecheck.backends._backend import embedded
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.exploration._run import Run, RunConfig
from pytest_cachecheck.history._calls import render_command
from pytest_cachecheck.history._calls import render_statement
from pytest_cachecheck.interposers._sql import to_qmark


@pytest.fixture
def backend():
    with simulated_world():
        backend = embedded()
        yield backend
        backend.close()


def new_run(backend, layer, **fields):
    return Run(target(layer, **fields), RunConfig(watchdog=5.0), backend)


def calls(run, actor=None):
    return [e for e in run.scheduler.events if isinstance(e, Call) and (actor is None or e.actor == actor)]


class Pipelined:
    """Writes through a MULTI/EXEC block and fills through a Lua script."""

    FILL = "return redis.call('SET', KEYS[1], ARGV[1])"

    def __init__(self, r, conn):
        self.r, self.conn = r, conn
        self.fill = r.register_script(self.FILL)

    def read(self, key):
        self.fill(keys=[f"user:{key}"], args=["x"])
        row = self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()
        return row[0]

    def write(self, key, value):
        self.conn.execute("UPDATE users SET name = %(name)s WHERE id = %(id)s", {"name": value, "id": key})
        self.conn.commit()
        pipe = self.r.pipeline()
        pipe.delete(f"user:{key}")
        pipe.set(f"version:{key}", value)
        pipe.execute()


def test_commands_render_with_values_quoted():
    assert render_command(["SETEX", "user:u1", 3600, '{"name": "u1.v0"}']) == "SETEX user:u1 3600 '{\"name\": \"u1.v0\"}'"
    assert render_command([b"GET", b"k"]) == "GET k"
    assert render_command(["SET", "k", ""]) == "SET k ''"


def test_placeholders_translate_and_render():
    assert to_qmark("SELECT * FROM t WHERE a = %s AND b LIKE '%%x'", ("1",)) == "SELECT * FROM t WHERE a = ? AND b LIKE '%x'"
    assert to_qmark("UPDATE t SET a = %(a)s", {"a": 1}) == "UPDATE t SET a = :a"
    assert to_qmark("SELECT '%s'", None) == "SELECT '%s'"
    assert render_statement("UPDATE users\n  SET name=%s WHERE id=%s", ("o'k", "u1")) == (
        "UPDATE users SET name='o''k' WHERE id='u1'"
    )


def test_a_transaction_and_a_script_are_one_point_each(backend):
    run = new_run(backend, Pipelined)
    run.start(1, "write", "u1")
    run.start(2, "read", "u1")
    texts = [c.command for c in calls(run)]
    assert texts == [
        "UPDATE users SET name = 'u1.v1' WHERE id = 'u1'",
        "COMMIT",
        "MULTI; DEL user:u1; SET version:u1 u1.v1; EXEC",
        f"EVALSHA {Pipelined_sha()} 1 user:u1 x",
        "SELECT name FROM users WHERE id = 'u1'",
    ]
    assert [c.result for c in calls(run)][-1] == "[('u1.v1',)]"
    run.close()


def Pipelined_sha():
    import hashlib

    return hashlib.sha1(Pipelined.FILL.encode()).hexdigest()


def test_pause_after_stops_an_operation_before_its_next_point(backend):
    run = new_run(backend, Pipelined)
    run.start(1, "write", "u1", pause_after=1)
    assert [c.command for c in calls(run)] == ["UPDATE users SET name = 'u1.v1' WHERE id = 'u1'"]
    assert run.client(1).task.pending == "COMMIT"
    run.resume(1, pause_after=1)
    assert [c.command for c in calls(run)][-1] == "COMMIT"
    run.resume(1)
    assert run.client(1).task.op is None
    run.close()


def test_a_writer_waits_cooperatively_for_the_source_write_lock(backend):
    run = new_run(backend, Pipelined)
    run.start(1, "write", "u1", pause_after=1)  # holds the write lock, paused before COMMIT
    run.start(2, "write", "u2")
    waiter = run.client(2).task
    assert waiter.state == "waiting"
    assert calls(run, "c2")[-1].result == "blocked: write lock held by c1"
    run.resume(1)
    assert waiter.state == "ready"
    run.resume(2)
    assert run.world.read_source(run.target.source, "u1") == "u1.v1"
    assert run.world.read_source(run.target.source, "u2") == "u2.v1"
    run.close()


def test_statements_are_fetched_whole_inside_their_point(backend):
    class Lister:
        def __init__(self, r, conn):
            self.conn = conn

        def read(self, key):
            cursor = self.conn.cursor()
            cursor.execute("SELECT id, name FROM users ORDER BY id")
            first = cursor.fetchone()
            rest = cursor.fetchall()
            assert cursor.description[0][0] == "id"
            return json.dumps([first, *rest])

    run = new_run(backend, Lister, write=None)
    run.start(1, "read", "u1")
    [select] = calls(run)
    assert select.result == "[('u1', 'u1.v0'), ('u2', 'u2.v0')]"
    assert run.history().operations()[-1].observed == '[["u1", "u1.v0"], ["u2", "u2.v0"]]'
    run.close()


class Clocked:
    """Caches with a 10 s TTL and reports what time and randomness it sees."""

    def __init__(self, r, conn):
        self.r, self.conn = r, conn
        self.seen = []

    def read(self, key):
        self.seen.append((time.time(), time.monotonic(), __import__("random").random(), uuid.uuid4().hex))
        cached = self.r.get(f"user:{key}")
        if cached is not None:
            return cached
        row = self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()
        self.r.set(f"user:{key}", row[0], ex=10)
        return row[0]

    def write(self, key, value):
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
        self.conn.commit()


def test_ttls_expire_in_virtual_time(backend):
    run = new_run(backend, Clocked)
    run.start(1, "read", "u1")
    run.start(2, "write", "u1")
    run.tick(9)
    run.start(1, "read", "u1")
    assert calls(run, "c1")[-1].result == "'u1.v0'"  # still cached, now stale
    run.tick(2)
    run.start(1, "read", "u1")
    assert calls(run, "c1")[-1].command == "SET user:u1 u1.v1 EX 10"
    seen = run.client(1).instance.seen
    assert [round(s[0] - seen[0][0], 3) for s in seen] == [0.0, 9.0, 11.0]
    assert seen[0][0] == 1_700_000_000.0
    run.close()


def test_randomness_is_per_client_and_repeats_run_after_run(backend):
    def draws():
        run = new_run(backend, Clocked)
        for client in (1, 2, 1):
            run.start(client, "read", "u1")
        seen = [(c.number, [s[2:] for s in c.instance.seen]) for c in run.clients]
        run.close()
        return seen

    first, second = draws(), draws()
    assert first == second
    (_, c1), (_, c2) = first
    assert c1[0] != c2[0]


def test_real_threads_keep_real_primitives_while_the_world_is_patched(backend):
    lock = threading.Lock()
    assert lock.acquire(timeout=0.1)
    assert type(lock).__module__ != "pytest_cachecheck.engine._cooperative"
    before = time.time()
    time.sleep(0.01)
    assert time.time() > before
    assert abs(time.time() - datetime.datetime.now().timestamp()) < 5


def test_a_source_with_other_columns_is_set_up_per_example(backend):
    source = Source(
        schema=["CREATE TABLE accounts (k TEXT PRIMARY KEY, balance TEXT, note TEXT DEFAULT 'x')"],
        insert="INSERT INTO accounts (k, balance) VALUES (%s, %s)",
        select="SELECT balance FROM accounts WHERE k = %s",
    )

    class Accounts:
        def __init__(self, r, conn):
            self.conn = conn

        def read(self, key):
            return self.conn.execute("SELECT balance FROM accounts WHERE k = %s", (key,)).fetchone()[0]

    for _ in range(2):  # the second example finds a fresh source, not the first one's
        run = Run(Target(name="accounts", build=Accounts, read="read", source=source), RunConfig(), backend)
        assert run.world.read_source(source, "u1") == "u1.v0"
        run.close()

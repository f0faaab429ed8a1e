"""key_roles: what each key a layer touches is for, from the history alone."""

from _histories import HistoryBuilder
from _structured import pipeline, redis

from pytest_cachecheck import ENTRY, LOCK, OTHER, QUEUE, key_roles
from pytest_cachecheck.history import Command


def _history():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    read = h.invoke(1, "read", "u1")
    redis(h, 1, read, "GET", "user:u1")
    redis(h, 1, read, "SET", "lock:user:u1", "tok", "EX", 10, "NX", reply=True)
    h.call(1, read, "sql", "SELECT name FROM users WHERE id = 'u1'", "[('u1.v0',)]")
    redis(h, 1, read, "SETEX", "user:u1", 3600, '{"name": "u1.v0"}', reply=True)
    redis(h, 1, read, "EVALSHA", "abc", 1, "lock:user:u1", "tok", keys=(2,), reply=1)
    h.complete(read, value="u1.v0")
    write = h.invoke(2, "write", "u1", "u1.v1")
    redis(h, 2, write, "INCR", "wb:seq", reply=1)
    item = '{"key": "u1", "name": "u1.v1", "seq": 1}'
    pipeline(h, 2, write, Command("SET", ("user:u1", '{"name": "u1.v1"}'), (0,)), Command("RPUSH", ("wb:queue", item), (0,)))
    redis(h, 2, write, "LMOVE", "wb:queue", "wb:processing", "LEFT", "RIGHT", keys=(0, 1), reply=item)
    redis(h, 2, write, "LREM", "wb:processing", 1, item, reply=1)
    redis(h, 2, write, "SETNX", b"mutex", "1", reply=1)
    redis(h, 2, write, "SET", "flag", "on")
    h.complete(write)
    return h.build()


def test_each_key_gets_its_role():
    roles = key_roles(_history())
    assert dict(roles) == {
        "user:u1": ENTRY,
        "lock:user:u1": LOCK,
        "wb:seq": OTHER,
        "wb:queue": QUEUE,
        "wb:processing": QUEUE,
        "mutex": LOCK,
        "flag": OTHER,
    }
    assert roles.locks == {"lock:user:u1", "mutex"}
    assert roles.queues == {"wb:queue", "wb:processing"}
    assert roles.of(b"mutex") == LOCK and roles.of("never-named") == OTHER


def test_a_key_read_with_a_value_token_is_an_entry():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    read = h.invoke(1, "read", "u1")
    redis(h, 1, read, "GET", "other:u1", reply=b'{"name": "u1.v0"}')
    redis(h, 1, read, "GET", "near:u1", reply="u1.v01")  # not a whole token
    h.complete(read, value="u1.v0")
    assert dict(key_roles(h.build())) == {"other:u1": ENTRY, "near:u1": OTHER}


def test_a_target_may_name_its_locks():
    history = _history()
    roles = key_roles(history, locks=["flag"])
    assert roles.of("flag") == LOCK and roles.of("user:u1") == ENTRY
    assert key_roles(history).of("flag") == OTHER  # the named locks are part of the cached view's name


def test_a_text_only_call_names_no_key():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.call(1, None, "redis", "SET lock:u1 1 NX", "True")
    assert dict(key_roles(h.build())) == {}

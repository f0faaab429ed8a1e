"""Lua scripts registered once and reused: the same decisions give the same trace, whatever ran before.

A script kept on a class (or redis-py's ``Lock``, which registers its scripts once per class on
the first client it meets) outlives the example, and the exploration, that registered it.  Its
call must still be one point of the current run, recorded the same way whether or not the
server had the script cached.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.lock
from conftest import NEEDS_REAL, SERVERS
from layers import target

from pytest_cachecheck import Budget, CachecheckFailure, Servers, check, explore
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.exploration._run import Run, RunConfig
from pytest_cachecheck.report._trace import trace

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class ClassScriptLock:
    """Cache-aside under a per-key lock released by a script registered once, on the class.

    Still racy (a write invalidates while a locked reader is between its read and its fill), so
    an example can fail; the lock only decides who fills.
    """

    release = None

    def __init__(self, r: Any, conn: Any) -> None:
        self.r, self.conn = r, conn
        if type(self).release is None:
            type(self).release = r.register_script(_RELEASE)

    def read(self, key: str) -> str | None:
        cached = self.r.get(f"user:{key}")
        if cached is not None:
            return cached
        token = f"t-{key}"
        if not self.r.set(f"lock:{key}", token, nx=True, px=5000):
            return self._load(key)
        try:
            value = self._load(key)
            self.r.set(f"user:{key}", value, ex=60)
            return value
        finally:
            type(self).release(keys=[f"lock:{key}"], args=[token])  # on the registering client

    def _load(self, key: str) -> str | None:
        return self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()[0]

    def write(self, key: str, value: str) -> None:
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
        self.conn.commit()
        self.r.delete(f"user:{key}")


class RedisPyLock(ClassScriptLock):
    """The same, under redis-py's own ``r.lock()`` (released by its class-level Lua script)."""

    def read(self, key: str) -> str | None:
        cached = self.r.get(f"user:{key}")
        if cached is not None:
            return cached
        with self.r.lock(f"lock:{key}", timeout=5, blocking_timeout=1):
            value = self._load(key)
            self.r.set(f"user:{key}", value, ex=60)
            return value


LAYERS = {"class-level register_script": ClassScriptLock, "redis-py r.lock()": RedisPyLock}


def _forget_scripts() -> None:
    """As in a fresh process: no script registered on any class yet."""
    ClassScriptLock.release = None
    RedisPyLock.release = None
    for name in ("lua_release", "lua_extend", "lua_reacquire"):
        setattr(redis.lock.Lock, name, None)


def _replay(layer: type, backend: Any) -> tuple[str, Any]:
    """One failing example's decisions: c1 reads u1 up to its source read, c2 writes u1, c1 fills."""
    run = Run(target(layer), RunConfig(), backend)
    try:
        run.start(1, "read", "u1", pause_after=3)  # GET, lock, SELECT: paused before the fill
        run.start(2, "write", "u1")
        run.resume(1)
        run.start(1, "read", "u1")
        run.quiesce()
        return trace(run), run.history()
    finally:
        run.close()


def _traces(layer: type, servers: Servers) -> dict[str, str]:
    _forget_scripts()
    traces = {}
    with simulated_world():
        backend = servers.backend()
        try:
            traces["alone"], history = _replay(layer, backend)
            traces["second example"], _ = _replay(layer, backend)
        finally:
            backend.close()
    # Another exploration (its own backend) runs first: the scripts stay registered on its clients.
    with pytest.raises(CachecheckFailure):
        explore(target(layer), Budget(examples=200, seed=7), servers=servers)
    with simulated_world():
        backend = servers.backend()
        try:
            traces["after another exploration"], _ = _replay(layer, backend)
        finally:
            backend.close()
    _forget_scripts()
    return traces, history


def _assert_identical(layer: type, servers: Servers) -> None:
    traces, history = _traces(layer, servers)
    assert traces["second example"] == traces["alone"]
    assert traces["after another exploration"] == traces["alone"]
    # The example fails, and each release is one recorded EVALSHA that returned 1.
    assert any(v.status == "violated" for v in check(history, target(layer).contract))
    locks = [call.keys for call in history.calls if call.commands and call.commands[0].name == "SET" and "NX" in call.commands[0].args]
    releases = [call for call in history.calls if call.commands and call.commands[0].name == "EVALSHA"]
    assert [call.keys for call in releases] == locks == [("lock:u1",), ("lock:u2",), ("lock:u1",)]
    assert [call.reply for call in releases] == [1, 1, 1]
    assert "NoScriptError" not in traces["alone"] and "SCRIPT LOAD" not in traces["alone"]


@pytest.mark.parametrize("name", LAYERS)
def test_a_script_registered_once_gives_the_same_trace_whatever_ran_before(name):
    _assert_identical(LAYERS[name], Servers())


@pytest.mark.skipif(not (SERVERS.redis_url and SERVERS.db_dsn), reason=NEEDS_REAL)
@pytest.mark.parametrize("name", LAYERS)
def test_the_same_on_real_servers(name):
    _assert_identical(LAYERS[name], SERVERS)

"""Blocking Redis commands are cooperative waits, on both backends.

A client in ``BLPOP`` (or ``BRPOP``, ``BLMOVE``, ``BZPOPMIN``, ``XREAD BLOCK`` ...) waits in
virtual time until another client pushes to one of its keys or its timeout passes; no real
blocking, no watchdog report, and the same decisions give the same trace.
"""

import pytest
from layers import Direct, target

from pytest_cachecheck import Budget, RunConfig, explore
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.exploration._run import Run
from pytest_cachecheck.history import Call
from pytest_cachecheck.report._trace import trace


class _Mailbox(Direct):
    """A read waits up to 2 s for a writer's signal on ``mail:<key>``, then reads the source."""

    command = "blpop"

    def read(self, key):
        if self.command == "blpop":
            self.r.blpop([f"other:{key}", f"mail:{key}"], timeout=2)
        elif self.command == "brpoplpush":
            self.r.brpoplpush(f"mail:{key}", f"seen:{key}", timeout=2)
        elif self.command == "bzpopmin":
            self.r.bzpopmin([f"zmail:{key}"], timeout=2)
        else:
            self.r.xread({f"stream:{key}": "0"}, block=2000)
        return self._load(key)

    def write(self, key, value):
        super().write(key, value)
        self.r.rpush(f"mail:{key}", value)
        self.r.zadd(f"zmail:{key}", {value: 1})
        self.r.xadd(f"stream:{key}", {"v": value})


def _run(servers, command, script):
    layer = type(f"Mailbox_{command}", (_Mailbox,), {"command": command})
    with simulated_world():
        backend = servers.backend()
        run = Run(target(layer), RunConfig(watchdog=2.0), backend)
        try:
            script(run)
            run.quiesce()
            return run.history(), trace(run)
        finally:
            run.close()
            backend.close()


def _calls(history, client, name):
    return [e for e in history.events if isinstance(e, Call) and e.client == client and e.command.startswith(name)]


@pytest.mark.parametrize("command", ["blpop", "brpoplpush", "bzpopmin", "xread"])
def test_a_waiting_client_is_woken_by_another_clients_push(servers, command):
    def script(run):
        run.start(1, "read", "u1", pause_after=1)  # c1 finds nothing: it waits (no real blocking)
        run.start(2, "write", "u1")  # c2's push wakes it
        run.resume(1)

    history, shown = _run(servers, command, script)
    waits = _calls(history, 1, command.upper())
    assert waits[0].blocked and "waits for a push to" in waits[0].blocked
    assert not waits[-1].blocked and waits[-1].error is None
    push = next(e for e in history.events if isinstance(e, Call) and e.client == 2 and e.system == "redis")
    assert waits[-1].step > push.step and waits[-1].time == push.time < 2  # woken, not timed out
    assert shown == _run(servers, command, script)[1]  # the same decisions, the same trace


def test_a_wait_nobody_ends_returns_at_its_timeout_in_virtual_time(servers):
    history, _ = _run(servers, "blpop", lambda run: run.start(1, "read", "u1"))
    [*_, last] = _calls(history, 1, "BLPOP")
    assert last.result in ("nil", "None") and last.time == pytest.approx(2.0)
    done = [e for e in history.events if type(e).__name__ == "Complete" and e.client == 1]
    assert done and done[-1].status == "ok"


def test_an_exploration_of_a_blocking_layer_has_no_hang(servers):
    report = explore(target(_Mailbox), Budget(examples=60, seed=5), servers=servers, config=RunConfig(watchdog=2.0))
    assert report.passed and "hang" not in report.properties

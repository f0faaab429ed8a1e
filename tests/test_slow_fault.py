"""The ``slow`` fault: one Redis command or SQL statement of a client takes stated virtual seconds.

A slow call is what lets a lock expire under its holder, or a fill land after its entry expired,
without pausing a client while others run on.  It is a decision like any fault: recorded in the
history, shown in the trace, shrunk away when not needed.
"""

import pytest
from layers import Direct, target

from pytest_cachecheck import Budget, RunConfig, Servers, TargetError, explore
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.exploration._decisions import Slow, decisions
from pytest_cachecheck.exploration._run import Run
from pytest_cachecheck.history import Call
from pytest_cachecheck.report._trace import trace


class _CachedRead(Direct):
    """Looks in the cache, then reads the source: one Redis command and one statement."""

    def read(self, key):
        self.r.get(f"user:{key}")
        return super().read(key)


def _read_after_slow(servers: Servers, system: str, seconds: float):
    with simulated_world():
        backend = servers.backend()
        run = Run(target(_CachedRead), RunConfig(), backend)
        try:
            Slow(1, system, seconds).apply(run)
            run.start(1, "read", "u1")
            run.start(2, "read", "u1")  # not armed: takes no time
            run.quiesce()
            return run.history(), trace(run)
        finally:
            run.close()
            backend.close()


def test_a_slow_statement_moves_the_clock_by_its_seconds_before_it_runs(servers):
    history, shown = _read_after_slow(servers, "sql", 30)
    calls = [e for e in history.events if isinstance(e, Call) and e.client in (1, 2)]
    fault = next(c for c in calls if c.system == "fault")
    select = next(c for c in calls if c.system == "sql" and c.step > fault.step)
    assert fault.client == 1 and "takes 30 s" in fault.command
    assert select.client == 1 and select.time == fault.time + 30
    later_selects = [c for c in calls if c.system == "sql" and c.client == 2]
    assert later_selects and all(c.time == select.time for c in later_selects)  # fired once
    assert "Slow(client=1, system='sql', seconds=30)" in shown and "c1's next sql call will take 30 s" in shown


def test_a_slow_redis_command_is_the_next_command_only(servers):
    history, _ = _read_after_slow(servers, "redis", 5)
    faults = [e for e in history.events if isinstance(e, Call) and e.system == "fault"]
    assert len(faults) == 1 and "redis call of c1 takes 5 s" in faults[0].command
    redis_calls = [e for e in history.events if isinstance(e, Call) and e.system == "redis" and e.client == 1]
    assert redis_calls[0].time == faults[0].time + 5


def test_slow_decisions_are_drawn_only_when_the_target_allows_them():
    def drawn(t):
        return {type(d).__name__ for d in decisions(t).elements}

    assert "Slow" not in drawn(target(Direct))
    allowed = drawn(target(Direct, faults=("slow",), slow=(600,)))
    assert "Slow" in allowed


def test_slow_seconds_are_validated():
    with pytest.raises(TargetError, match=r"slow=\(0,\) must be positive, finite seconds"):
        target(Direct, faults=("slow",), slow=(0,))
    assert target(Direct, slow=(60, 5, 5)).slow == (5.0, 60.0)


def test_a_correct_layer_passes_with_slow_faults_on():
    report = explore(target(Direct, faults=("slow",), slow=(5, 600)), Budget(examples=60, seed=4))
    assert report.passed


class _ScriptedFill(_CachedRead):
    """Fills through a registered Lua script: the script call is the point a fault takes."""

    def __init__(self, redis_client, connection):
        super().__init__(redis_client, connection)
        self.fill = redis_client.register_script("return redis.call('SET', KEYS[1], ARGV[1])")

    def read(self, key):
        value = super().read(key)
        self.fill(keys=[f"user:{key}"], args=[value])
        return value


def test_a_slow_script_call_waits_like_a_command(servers):
    with simulated_world():
        backend = servers.backend()
        run = Run(target(_ScriptedFill), RunConfig(), backend)
        try:
            run.start(1, "read", "u1", pause_after=2)  # GET and SELECT: paused before the script
            Slow(1, "redis", 7).apply(run)
            run.resume(1)
            run.quiesce()
            history = run.history()
        finally:
            run.close()
            backend.close()
    calls = [e for e in history.events if isinstance(e, Call) and e.client == 1]
    script = next(c for c in calls if c.command.startswith("EVALSHA"))
    assert script.error is None and script.time == 7.0
    assert any(c.system == "fault" and "takes 7 s" in c.command for c in calls)

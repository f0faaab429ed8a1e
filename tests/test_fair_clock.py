"""Paused is not slow: a client preempted by a decision is paused in points, not in virtual time.

When another client's operation sleeps (polling for a lock, backing off), every operation that
could run goes first, until it blocks, sleeps or finishes; only then does the clock move.  A
waiter that gives up after a few seconds therefore never gives up because the scheduler starved
the holder; a stated stall (``Tick`` while the holder is paused) still outlives the lock.
"""

import time as real_time

import pytest
from layers import Direct, target

from pytest_cachecheck import Budget, CachecheckFailure, RunConfig, explore
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.exploration._decisions import Tick
from pytest_cachecheck.exploration._run import Run
from pytest_cachecheck.history import Call, Complete


class _GivesUp(Direct):
    """Reads under a Redis lock; a waiter polls every 0.1 s and gives up after 3 s."""

    def read(self, key):
        lock = f"lock:{key}"
        deadline = real_time.monotonic() + 3  # patched: virtual inside a client
        while not self.r.set(lock, "1", nx=True, ex=30):
            if real_time.monotonic() > deadline:
                raise TimeoutError(key)
            real_time.sleep(0.1)
        try:
            return super().read(key)
        finally:
            self.r.delete(lock)


def _run(servers, script):
    with simulated_world():
        backend = servers.backend()
        run = Run(target(_GivesUp), RunConfig(), backend)
        try:
            script(run)
            run.quiesce()
            return run.history()
        finally:
            run.close()
            backend.close()


def test_a_waiter_lets_the_paused_holder_finish_before_time_moves(servers):
    def script(run):
        run.start(1, "read", "u1", pause_after=1)  # c1 holds the lock, paused before its SELECT
        run.start(2, "read", "u1")  # c2 polls: c1 runs before c2's sleep moves the clock

    history = _run(servers, script)
    done = {e.client: e for e in history.events if isinstance(e, Complete) and e.client in (1, 2)}
    assert done[1].status == done[2].status == "ok"
    calls = [e for e in history.events if isinstance(e, Call) and e.client in (1, 2)]
    releases = [e for e in calls if e.command.startswith("DEL lock:u1")]
    taken = [e for e in calls if e.command.startswith("SET lock:u1") and e.reply]
    assert [c.client for c in taken] == [1, 2] and releases[0].client == 1 and releases[0].step < taken[1].step
    assert taken[1].time <= 0.1  # one poll of 0.1 s at most: the holder was not outwaited


def test_a_stated_stall_still_outlives_the_waiter(servers):
    def script(run):
        run.start(1, "read", "u1", pause_after=1)
        Tick(60).apply(run)  # c1 paused while the clock moves: a process pause of 60 s
        run.start(2, "read", "u1")

    history = _run(servers, script)
    done = {e.client: e for e in history.events if isinstance(e, Complete) and e.client in (1, 2)}
    assert done[2].status == "ok"  # the lock (30 s) expired during the stall: c2 takes it


def test_a_layer_whose_waiters_give_up_passes_under_a_fair_schedule():
    report = explore(target(_GivesUp), Budget(examples=200, seed=11))
    assert report.passed and report.properties["errors"] == "ok"


def test_its_give_up_is_found_when_a_slow_call_outlasts_its_patience():
    """A slow statement of the holder (10 s, while the waiters wait 3 s) is a stated fault: the
    waiter runs meanwhile, gives up, and the story shows the slow call."""
    with pytest.raises(CachecheckFailure) as failure:
        explore(target(_GivesUp, faults=("slow",), slow=(10,)), Budget(examples=300, seed=2))
    story = str(failure.value)
    assert "TimeoutError" in story and "Slow(client=" in story and "takes 10 s" in story

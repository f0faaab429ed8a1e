"""Exact windows (issue 8): stale and divergence windows come from the events themselves.

A TTL of exactly ``n`` passes ``Contract.bounded(n)`` and fails anything less; the millisecond the
clock lands past an expiry, and a lock wait inside the probe's own read, are never counted; a
fill delayed after the newer write keeps the old value for longer than its TTL, and fails.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import NEEDS_REAL, SERVERS
from layers import _Base, target

from pytest_cachecheck import Servers
from pytest_cachecheck.checkers.divergence import divergence
from pytest_cachecheck.checkers.staleness import stale_reads
from pytest_cachecheck.contract import Contract
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.exploration._run import Run, RunConfig


class _CacheAside(_Base):
    """Cache-aside with a racy fill: GET, on a miss SELECT then SETEX ``TTL`` seconds."""

    TTL = 5

    def read(self, key: str) -> str | None:
        cached = self.r.get(f"user:{key}")
        if cached is not None:
            return cached
        value = self._load(key)
        self.r.setex(f"user:{key}", self.TTL, value)
        return value


class FiveSeconds(_CacheAside):
    TTL = 5


class LockWaitOnMiss(_CacheAside):
    """A 600 s entry; a miss waits 3 s for a lock before loading, so the probe that finds the
    entry expired spends 3 s of its own in the read."""

    TTL = 600

    def read(self, key: str) -> str | None:
        cached = self.r.get(f"user:{key}")
        if cached is not None:
            return cached
        time.sleep(3)  # waiting for another process's lock
        value = self._load(key)
        self.r.setex(f"user:{key}", self.TTL, value)
        return value


BACKENDS = [
    pytest.param(Servers(), id="embedded"),
    pytest.param(
        SERVERS, id="real", marks=pytest.mark.skipif(not (SERVERS.redis_url and SERVERS.db_dsn), reason=NEEDS_REAL)
    ),
]


def _race(layer: type, servers: Servers, *, fill_delay: float = 0.0, points: int = 2, later: Any = None):
    """c1 misses and reads the source (``points`` points), c2 writes u1, ``fill_delay`` seconds
    pass, c1 fills the cache with the old value; then ``later(run)``, then quiescence."""
    with simulated_world():
        backend = servers.backend()
        try:
            run = Run(target(layer, keys=("u1",)), RunConfig(), backend)
            try:
                run.start(1, "read", "u1", pause_after=points)
                run.start(2, "write", "u1")
                if fill_delay:
                    run.tick(fill_delay)
                run.resume(1)
                if later is not None:
                    later(run)
                run.quiesce()
                return run.history()
            finally:
                run.close()
        finally:
            backend.close()


def _persists(history) -> float:
    [finding] = divergence(history, Contract.strict()).findings
    return finding.figures["persists"]


@pytest.mark.parametrize("servers", BACKENDS)
def test_a_ttl_of_exactly_n_passes_bounded_n_and_fails_less(servers):
    history = _race(FiveSeconds, servers)
    first, healed = history.probes
    assert first.observed == "u1.v0" and first.source == "u1.v1"
    # The clock landed past the deadline (the entry is gone), and the deadline itself is recorded.
    assert healed.expired == 5.0 and healed.began > 5.0 and healed.observed == "u1.v1"
    assert _persists(history) == 5.0
    finding = divergence(history, Contract.bounded(5)).findings[0]
    assert "5 s" in finding.message and "5.001" not in finding.message
    assert divergence(history, Contract.bounded(5)).status == "ok"
    assert divergence(history, Contract.bounded(4.9)).status == "violated"


@pytest.mark.parametrize("servers", BACKENDS)
def test_the_probes_own_lock_wait_is_not_counted(servers):
    # c1: GET (miss), the 3 s lock wait, SELECT; paused before its SETEX.
    history = _race(LockWaitOnMiss, servers, points=3)
    first, healed = history.probes
    assert first.observed == "u1.v0" and healed.observed == "u1.v1"
    assert healed.time - healed.began == 3.0  # the healing probe's read waited 3 s itself
    assert _persists(history) == 600.0  # from u1.v1's acknowledgement (t=3) to the expiry (t=603)
    assert divergence(history, Contract.bounded(600)).status == "ok"
    assert divergence(history, Contract.bounded(599.9)).status == "violated"


@pytest.mark.parametrize("servers", BACKENDS)
def test_a_delayed_fill_that_keeps_the_old_value_longer_than_n_fails(servers):
    history = _race(FiveSeconds, servers, fill_delay=3)
    # u1.v1 acknowledged at t=0; u1.v0 filled at t=3 with a 5 s TTL: served until t=8.
    assert _persists(history) == 8.0
    assert divergence(history, Contract.bounded(5)).status == "violated"
    assert divergence(history, Contract.bounded(8)).status == "ok"


@pytest.mark.parametrize("servers", BACKENDS)
def test_stale_reads_at_the_boundary(servers):
    def read_at(seconds):
        def later(run):
            run.tick(seconds)
            run.start(2, "read", "u1")

        return later

    # The entry (deadline t=5) still exists at t=5 exactly: a read then is 5 s stale, within bounded(5).
    at_deadline = _race(FiveSeconds, servers, later=read_at(5))
    [finding] = stale_reads(at_deadline, Contract.bounded(5)).findings
    assert finding.figures["age"] == 5.0 and not finding.violates
    assert stale_reads(at_deadline, Contract.bounded(4.9)).status == "violated"
    # The fill delayed by 3 s serves the old value at t=7: 7 s stale, beyond bounded(5).
    delayed = _race(FiveSeconds, servers, fill_delay=3, later=read_at(4))
    [finding] = stale_reads(delayed, Contract.bounded(5)).findings
    assert finding.figures["age"] == 7.0 and finding.violates


def test_a_probe_round_trips_through_json_with_its_times():
    history = _race(LockWaitOnMiss, Servers(), points=3)
    again = type(history).from_json(history.to_json())
    assert again.probes == history.probes
    assert [(p.began, p.expired) for p in again.probes] == [(3.0, None), (603.001, 603.0)]

"""A layer that deadlocks, hangs, spins or raises is a finding, never a frozen test.

Each exploration runs in a helper thread joined with a 10 s limit: the property under test is
that a finding comes back at all, and within the promised wall time.
"""

import _thread
import threading

import pytest
from layers import (
    BlocksOutsideControl,
    Direct,
    HandsOff,
    Raises,
    SelfDeadlock,
    SleepsForever,
    SleepsOnce,
    Spins,
    target,
)

from pytest_cachecheck import Budget, CachecheckFailure, Contract, Finding, RunConfig, Verdict, explore, hookimpl

LIMIT = 10.0


def finding_within_limit(layer, **target_fields):
    from conftest import SERVERS

    """Explore ``layer``; return the failure, or fail the test if none came within LIMIT s."""
    outcome = {}

    def run():
        try:
            outcome["report"] = explore(
                target(layer, **target_fields),
                Budget(examples=50, seed=1),
                config=RunConfig(watchdog=2.0),
                servers=SERVERS,
            )
        except CachecheckFailure as failure:
            outcome["failure"] = failure

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(LIMIT)
    if worker.is_alive():
        pytest.fail(f"{layer.__name__}: no finding within {LIMIT:g} s of wall time")
    assert "failure" in outcome, f"{layer.__name__} passed: {outcome.get('report')}"
    return outcome["failure"]


def test_a_layer_that_deadlocks_on_its_own_lock_is_a_deadlock_finding():
    failure = finding_within_limit(SelfDeadlock)
    assert failure.report.properties["deadlock"] == "violated"
    assert "waits for Lock#" in str(failure)
    assert "which it holds itself" in str(failure)


def test_a_layer_that_polls_forever_is_a_hang_finding():
    failure = finding_within_limit(SleepsForever)
    assert failure.report.properties["hang"] == "violated"
    assert "past the contract's 30 s timeout for one operation" in str(failure)


def test_a_layer_that_sleeps_forever_is_a_hang_finding_in_virtual_time():
    failure = finding_within_limit(SleepsOnce)
    assert "would sleep until t=1e+09 s" in str(failure)


def test_the_timeout_is_part_of_the_contract():
    failure = finding_within_limit(SleepsForever, contract=Contract(timeout=2))
    assert "past the contract's 2 s timeout" in str(failure)


def test_blocking_outside_the_harness_is_caught_by_the_watchdog():
    failure = finding_within_limit(BlocksOutsideControl)
    story = str(failure)
    assert "without reaching a scheduling point" in story
    assert "layers.py" in story and "self.gate.acquire()" in story


def test_a_spinning_layer_is_caught_by_the_watchdog():
    failure = finding_within_limit(Spins)
    assert "blocked or spinning outside the harness's control" in str(failure)


def test_a_layer_that_raises_is_an_error_finding():
    failure = finding_within_limit(Raises)
    assert "KeyError('u2')" in str(failure)


def test_a_correct_layer_without_a_cache_passes():
    report = explore(target(Direct), Budget(examples=50, seed=1))
    assert report.passed


def test_an_operation_waiting_for_a_thread_its_layer_started_is_drained_not_deadlocked():
    report = explore(target(HandsOff), Budget(examples=50, seed=1))
    assert report.passed
    assert report.properties.get("deadlock") is None


class _HangsOnceArmed(Direct):
    """Correct, but once :data:`_ARMED` is set (a failure was found) every read blocks outside
    the harness: the tries made while shrinking hit the watchdog."""

    def read(self, key):
        if _ARMED:
            BlocksOutsideControl.read(self, key)
        return super().read(key)

    def __init__(self, redis_client, connection):
        super().__init__(redis_client, connection)
        self.gate = _thread.allocate_lock()


_ARMED: list[bool] = []


class _FailsOnTwoReads:
    """A property that fails every example with two reads or more, and arms the layer."""

    @hookimpl
    def cachecheck_check(self, history, contract):
        reads = [op for op in history.operations() if op.kind == "read"]
        if len(reads) < 2:
            return Verdict("two-reads", "ok")
        _ARMED.append(True)
        finding = Finding("two-reads", f"{len(reads)} reads", steps=(reads[0].invoke_step,))
        return Verdict("two-reads", "violated", (finding,))


def test_a_watchdog_hit_while_shrinking_keeps_the_failure_found():
    _ARMED.clear()
    with pytest.raises(CachecheckFailure) as raised:
        explore(
            target(_HangsOnceArmed),
            Budget(examples=50, seed=2),
            plugins=[_FailsOnTwoReads()],
            config=RunConfig(watchdog=0.3),
        )
    story = str(raised.value)
    assert _ARMED, "the property never failed: the test does not exercise shrinking"
    assert "[two-reads]" in story and "violates two-reads" in story
    assert "Shrinking stopped here: a smaller try hit the watchdog" in story
    assert raised.value.violation is not None

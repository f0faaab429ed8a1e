"""Write-behind under crashes and failed flushes: what is lost, when, and why."""

import re

import pytest
from pytest_cachecheck.strategies.catalogue import CORRECT, KNOWN_BUGS

from pytest_cachecheck import Budget, CachecheckFailure, explore
from pytest_cachecheck.report._report import count_decisions

TARGETS = {target.name: target for target in (*KNOWN_BUGS, *CORRECT)}


def failure_of(name, servers, seed=1):
    with pytest.raises(CachecheckFailure) as info:
        explore(TARGETS[name], Budget(examples=2000, seed=seed), servers=servers)
    return info.value


def clients_in(trace):
    return set(re.findall(r"client=(\d)", "\n".join(l for l in trace.splitlines() if l.startswith("state."))))


def test_a_crash_loses_the_seed_write_behind_buffer(servers):
    failure = failure_of("seed-write-behind-crash", servers)
    trace = failure.violation.trace
    assert failure.report.properties["lost-write"] == "violated"
    assert count_decisions(trace) <= 4 and len(clients_in(trace)) <= 2
    assert "Crash(client=" in trace
    assert re.search(
        r"\[lost-write\] client (\d)'s write of (u\d\.v\d) was acknowledged at step \d+ but never reached "
        r"the source \(client \1 crashed at step \d+, before a flush\): the source ends on u\d\.v0",
        str(failure),
    ), str(failure)


def test_a_failed_flush_puts_an_older_value_back_over_a_newer_one(servers):
    failure = failure_of("seed-write-behind-retry", servers)
    story, trace = str(failure), failure.violation.trace
    assert "Fail(client=1, system='sql')" in trace and "Background(client=1" in trace
    match = re.search(
        r"\[lost-write\] client 1's write of (u\d\.v(\d)) was acknowledged at step \d+ but never reached the "
        r"source: the source ends on (u\d\.v(\d)) \(client 1's write of \3",
        story,
    )
    assert match, story
    assert int(match.group(4)) < int(match.group(2))  # the source ends on the older value


def test_the_queued_write_behind_loses_nothing_under_crashes_and_failures(servers):
    report = explore(TARGETS["queued-write-behind"], Budget(examples=300, seed=2), servers=servers)
    assert report.passed
    assert report.properties["lost-write"] == "ok" and report.properties["reordering"] == "ok"


@pytest.mark.slow
def test_the_queued_write_behind_loses_nothing_over_2000_examples():
    report = explore(TARGETS["queued-write-behind"], Budget(examples=2000, seed=5))
    assert report.passed and report.examples >= 2000

"""End to end: the harness finds, shrinks and explains the seed's race, and passes a correct layer."""

import re

import pytest
from hypothesis.database import InMemoryExampleDatabase

from pytest_cachecheck import Budget, CachecheckFailure, explore
from pytest_cachecheck.report._report import count_decisions

# A seed for which the default budget meets the race; any seed finds it given enough examples.
SEED = 3


def fail(target, servers, **budget):
    with pytest.raises(CachecheckFailure) as info:
        explore(target, Budget(**{"examples": 2000, "seed": SEED, **budget}), servers=servers)
    return info.value


def test_seed_race_is_found_with_two_clients_and_few_steps(seed_cache_aside, servers):
    failure = fail(seed_cache_aside, servers)
    trace = failure.violation.trace
    assert count_decisions(trace) <= 6
    clients = set(re.findall(r"client=(\d)", "\n".join(l for l in trace.splitlines() if l.startswith("state."))))
    assert len(clients) == 2
    assert failure.report.properties["divergence"] == "violated"


def test_the_story_names_the_fill_the_invalidation_and_the_persistence(seed_cache_aside, servers):
    story = str(fail(seed_cache_aside, servers))
    match = re.search(
        r"client (\d) read the source \((u\d\.v0)\) at step \d+, before client (\d)'s write of (u\d\.v1); "
        r"client \3 updated the source \(step \d+\) and invalidated the cache \(DEL user:u\d, step \d+\); "
        r"client \1 then filled the cache with \2 at step \d+ \(SETEX user:u\d 3600 .*\)\. "
        r"The cache disagrees with the source \(\4\) until the entry expires in 3600 s\.",
        story,
    )
    assert match, story
    assert match.group(1) != match.group(3)


def test_the_same_seed_gives_the_same_failure_byte_for_byte(seed_cache_aside, servers):
    assert str(fail(seed_cache_aside, servers)) == str(fail(seed_cache_aside, servers))


def test_replaying_a_saved_failure_reproduces_its_trace(seed_cache_aside, servers):
    database = InMemoryExampleDatabase()
    first = fail(seed_cache_aside, servers, database=database)
    # Another seed would explore elsewhere; the database makes Hypothesis replay the failure first.
    again = fail(seed_cache_aside, servers, database=database, seed=SEED + 1000, examples=1)
    assert again.violation.trace == first.violation.trace
    assert again.report.examples_to_first_failure == 1


def test_the_lease_variant_passes(leased_cache_aside, servers):
    report = explore(leased_cache_aside, Budget(examples=300, seed=SEED), servers=servers)
    assert report.passed
    assert report.examples >= 300
    assert report.properties == {
        "confinement": "ok",
        "divergence": "ok",
        "errors": "ok",
        "lock-leak": "ok",
        "lock-release-by-non-owner": "ok",
        "lost-write": "ok",
        "monotonic-reads": "ok",
        "mutual-exclusion": "ok",
        "phantom-read": "ok",
        "process-hazards": "ok",
        "read-your-writes": "ok",
        "reordering": "ok",
        "stale-read": "ok",
        "stampede": "ok",
    }
    assert report.reads > 0 and 0 < report.hits < report.reads


@pytest.mark.slow
def test_the_lease_variant_passes_2000_examples(leased_cache_aside):
    report = explore(leased_cache_aside, Budget(examples=2000, seed=7))
    assert report.passed and report.examples >= 2000


def test_a_pass_reports_figures(leased_cache_aside):
    report = explore(leased_cache_aside, Budget(examples=50, seed=1))
    lines = "\n".join(report.summary_lines())
    assert "leased-cache-aside: PASSED" in lines
    assert re.search(r"explored: \d+ examples, \d+ scheduling steps, \d+ operations", lines)
    assert report.points > report.operations > 0


def test_a_failure_reports_the_first_failing_example(seed_cache_aside, servers):
    report = fail(seed_cache_aside, servers).report
    assert report.examples_to_first_failure is not None
    assert 1 <= report.examples_to_first_failure <= report.examples
    assert 0 < report.seconds_to_first_failure <= report.wall_seconds

"""Write-through: the seed's version diverges; the version-guarded one does not."""

import re

import pytest
from pytest_cachecheck.strategies.catalogue import CORRECT, KNOWN_BUGS

from pytest_cachecheck import Budget, CachecheckFailure, explore
from pytest_cachecheck.report._report import count_decisions

TARGETS = {target.name: target for target in (*KNOWN_BUGS, *CORRECT)}


def test_the_seed_write_through_diverges(servers):
    with pytest.raises(CachecheckFailure) as info:
        explore(TARGETS["seed-write-through"], Budget(examples=2000, seed=1), servers=servers)
    story = str(info.value)
    assert info.value.report.properties["divergence"] == "violated"
    assert count_decisions(info.value.violation.trace) <= 4
    assert re.search(r"updated the cache \(SETEX user:u\d 3600 .*\); client \d then filled the cache with u\d\.v\d", story), story
    assert "until the entry expires in 3600 s" in story


def test_the_version_guarded_write_through_passes(servers):
    report = explore(TARGETS["versioned-write-through"], Budget(examples=300, seed=3), servers=servers)
    assert report.passed


@pytest.mark.slow
def test_the_version_guarded_write_through_passes_2000_examples():
    report = explore(TARGETS["versioned-write-through"], Budget(examples=2000, seed=4))
    assert report.passed and report.examples >= 2000

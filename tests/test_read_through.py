"""Read-through: per-process caches serve stale data until their TTL; a bounded contract says so."""

import dataclasses

import pytest

from pytest_cachecheck import Budget, CachecheckFailure, Contract, explore
from pytest_cachecheck.strategies.catalogue import KNOWN_BUGS

READ_THROUGH = {target.name: target for target in KNOWN_BUGS}["seed-read-through"]


def test_a_strict_contract_finds_the_stale_reads(servers):
    with pytest.raises(CachecheckFailure) as failure:
        explore(READ_THROUGH, Budget(examples=1000, seed=1), servers=servers)
    assert failure.value.report.properties["stale-read"] == "violated"
    assert "stale, 1 write behind" in str(failure.value)


def test_bounded_staleness_of_the_ttl_is_what_it_honestly_promises(servers):
    bounded = dataclasses.replace(READ_THROUGH, contract=Contract.bounded(3600))
    report = explore(bounded, Budget(examples=300, seed=1), servers=servers)
    assert report.passed
    assert 0 < report.stale_window <= 3600
    assert report.within_contract["stale-read"] > 0

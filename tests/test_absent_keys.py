"""Keys absent before the run: negative caching and create races become reachable.

``Target(absent=...)`` starts those keys with no row in the source.  A read of such a key that
returns nothing is what the source holds, not a phantom; a layer that caches "not found" and
never clears it on create never converges; one that clears it and lets no late fill land has no
stale read and no divergence.
"""

import pytest
from layers import Direct, target

from pytest_cachecheck import Budget, CachecheckFailure, Contract, TargetError, explore
from pytest_cachecheck.strategies.catalogue import seed_interface
from pytest_cachecheck.strategies.negative import GuardedNegativeCache, StickyNegativeCache


class _Upserting(Direct):
    """No cache; its write creates the row when it is missing."""

    def write(self, key, value):
        self.conn.execute(
            "INSERT INTO users (id, name) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            (key, value),
        )
        self.conn.commit()


def test_reading_an_absent_key_returns_nothing_and_is_no_phantom(servers):
    report = explore(target(_Upserting, absent=("u2",)), Budget(examples=80, seed=1), servers=servers)
    assert report.properties["phantom-read"] == "ok" and report.properties["stale-read"] == "ok"


def test_a_never_cleared_not_found_marker_is_a_stale_read(servers):
    sticky = seed_interface("sticky-negative", StickyNegativeCache, keys=("u1",), absent=("u1",))
    with pytest.raises(CachecheckFailure) as failure:
        explore(sticky, Budget(examples=300, seed=2), servers=servers)
    story = str(failure.value)
    assert "[stale-read]" in story or "[divergence]" in story
    assert "missing:user:u1" in story  # the marker the writer forgot


def test_a_marker_no_create_can_outlive_passes_without_stale_reads_or_divergence(servers):
    guarded = seed_interface(
        "guarded-negative", GuardedNegativeCache, keys=("u1",), absent=("u1",), contract=Contract(session_guarantees=False)
    )
    report = explore(guarded, Budget(examples=300, seed=3), servers=servers)
    assert report.passed


def test_absent_keys_must_be_keys():
    with pytest.raises(TargetError, match=r"absent=\('u9',\) names keys not in keys"):
        target(Direct, absent=("u9",))

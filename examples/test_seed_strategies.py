"""Every code sample of the seed document, bugs included, each beside a variant that passes.

The layers are the shipped reference layers (``pytest_cachecheck.strategies``); each test
describes one as a Target and explores it.  ``seed_interface`` describes a layer with the seed's
``get_user``/``update_user``, ``write_behind`` one with ``write(key, data)`` and a flusher
thread of its own; ``test_user_profile.py`` writes a Target out in full.

A ``test_seed_*`` test is the seed's code as written: it fails, and its failure is the story of
the seed's bug.  The test after it passes: the layer fixed or, for read-through, the same layer
under the contract it honestly offers.
"""

import pytest

from pytest_cachecheck import Contract
from pytest_cachecheck.strategies.cache_aside import SeedCacheAside
from pytest_cachecheck.strategies.catalogue import seed_interface, write_behind
from pytest_cachecheck.strategies.leases import LeasedCacheAside
from pytest_cachecheck.strategies.locks import FENCED_SOURCE, FencedTokenLock, SeedLockedCacheAside
from pytest_cachecheck.strategies.read_through import SeedReadThrough
from pytest_cachecheck.strategies.refresh import RefreshingCacheAside, SeedEarlyRefresh
from pytest_cachecheck.strategies.write_behind import QUEUED_SOURCE, QueuedWriteBehind, SeedWriteBehindCache
from pytest_cachecheck.strategies.write_through import VERSIONED_SOURCE, SeedWriteThrough, VersionedWriteThrough

# A failing exploration stops at its first counterexample; a passing one spends its whole
# budget.  The variants explore 200 interleavings each (the default is 500), which keeps this
# job under a minute; the benchmark and the soak run them on thousands.
VARIANT_EXAMPLES = 200

# --- cache-aside: `get_user` / `update_user` ---


@pytest.mark.cachecheck
def test_seed_cache_aside(cachecheck_explore):
    """The seed's cache-aside fails with divergence: a reader fills the cache with the value it
    read before a write, after that write's DEL; the cache is wrong until the TTL (3600 s)."""
    cachecheck_explore(seed_interface("seed-cache-aside", SeedCacheAside))


@pytest.mark.cachecheck
def test_leased_cache_aside(cachecheck_explore):
    """Fixed: a reader fills only under its lease, and writers fence fills out."""
    cachecheck_explore(seed_interface("leased-cache-aside", LeasedCacheAside), examples=VARIANT_EXAMPLES)


# --- write-through: `update_user_write_through` / `get_user_write_through` ---


@pytest.mark.cachecheck
def test_seed_write_through(cachecheck_explore):
    """The seed's write-through fails with divergence: a writer caches the row it read back
    after a newer write cached its own, so the older value overwrites the newer one."""
    cachecheck_explore(seed_interface("seed-write-through", SeedWriteThrough))


@pytest.mark.cachecheck
def test_versioned_write_through(cachecheck_explore):
    """Fixed: every update bumps a version, and the cache never goes back to an older one."""
    cachecheck_explore(
        seed_interface("versioned-write-through", VersionedWriteThrough, source=VERSIONED_SOURCE),
        examples=VARIANT_EXAMPLES,
    )


# --- write-behind: `WriteBehindCache`, its app process crashing ---


@pytest.mark.cachecheck
def test_seed_write_behind_crash(cachecheck_explore):
    """The seed's write-behind fails with lost-write when its process crashes: acknowledged
    writes wait in an in-memory dirty buffer, which dies with the process before a flush.

    One app process, so that only the crash can lose a write: with two, each process's
    flusher can also apply its older write last (reordering, another of the seed's bugs).
    """
    cachecheck_explore(write_behind("seed-write-behind-crash", SeedWriteBehindCache, "crash", clients=1))


@pytest.mark.cachecheck
def test_queued_write_behind_crash(cachecheck_explore):
    """Fixed: a write is queued in Redis with the cache update, atomically, before it is
    acknowledged; any process's flusher applies the queue under a sequence guard.

    Two app processes, either of which may crash.
    """
    cachecheck_explore(
        write_behind("queued-write-behind", QueuedWriteBehind, "crash", source=QUEUED_SOURCE),
        examples=VARIANT_EXAMPLES,
    )


# --- read-through: `get_user_read_through` (an in-process TTLCache per app process) ---


@pytest.mark.cachecheck
def test_seed_read_through(cachecheck_explore):
    """The seed's read-through fails with stale-read under a strict contract: each process
    keeps its own copy and nothing invalidates it, so after another process's write it serves
    the old value until its TTL (3600 s) runs out."""
    cachecheck_explore(seed_interface("seed-read-through", SeedReadThrough, read="get_user_read_through"))


@pytest.mark.cachecheck
def test_seed_read_through_within_its_ttl(cachecheck_explore):
    """The same layer under the contract it honestly offers passes: stale for at most its TTL.

    No strict variant is shipped: a per-process cache needs an invalidation channel (Pub/Sub)
    to be fresher than its TTL.
    """
    cachecheck_explore(
        seed_interface(
            "seed-read-through-bounded",
            SeedReadThrough,
            read="get_user_read_through",
            contract=Contract.bounded(3600),
        ),
        examples=VARIANT_EXAMPLES,
    )


# --- the lock: `get_user_with_lock` ---


@pytest.mark.cachecheck
def test_seed_get_user_with_lock(cachecheck_explore):
    """Seed sample: a TTL lock around the miss, released with a bare DEL.  Fails: a holder whose
    lock expired deletes the lock the next client took (lock-release-by-non-owner).  The race
    needs four decisions, so it is given a larger budget."""
    cachecheck_explore(
        seed_interface("seed-lock", SeedLockedCacheAside, read="get_user_with_lock", write=None),
        examples=2000,
    )


@pytest.mark.cachecheck
def test_fenced_token_lock(cachecheck_explore):
    """Its fix passes: the token comes with the lock, the release compares it, and the source
    write checks it as a fence, so a holder whose lock expired cannot overwrite the next one."""
    cachecheck_explore(
        seed_interface("fenced-token-lock", FencedTokenLock, source=FENCED_SOURCE), examples=VARIANT_EXAMPLES
    )


# --- early refresh: `get_with_early_refresh` ---


@pytest.mark.cachecheck
def test_seed_get_with_early_refresh(cachecheck_explore):
    """Seed sample: a hit near expiry refreshes in a thread of its own.  Fails: a refresh (or a
    miss's load) that read the source before a write lands after it (divergence)."""
    cachecheck_explore(
        seed_interface(
            "seed-early-refresh",
            SeedEarlyRefresh,
            read=lambda layer, key: layer.get_with_early_refresh(f"user:{key}", 60),
            background=True,
        )
    )


@pytest.mark.cachecheck
def test_refreshing_cache_aside(cachecheck_explore):
    """Its fix passes: one refresher per key, which never overwrites a newer write."""
    cachecheck_explore(
        seed_interface("refreshing-cache-aside", RefreshingCacheAside, background=True), examples=VARIANT_EXAMPLES
    )

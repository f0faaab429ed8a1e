"""Every reference layer as a ready :class:`~pytest_cachecheck.Target`, sorted by verdict.

``KNOWN_BUGS`` are layers the harness must fail (the benchmark times how fast);
``CORRECT`` are layers it must pass.
"""

from __future__ import annotations

from typing import Any, Callable

from ..contract import Contract
from ..target import Target
from .cache_aside import SeedCacheAside
from .leases import LeasedCacheAside, LeasesOnlyCacheAside
from .locks import FENCED_SOURCE, BareDelTokenLock, FencedTokenLock, SeedLockedCacheAside, UnfencedTokenLock
from .write_behind import QUEUED_SOURCE, QueuedWriteBehind, SeedWriteBehindCache
from .negative import GuardedNegativeCache, StickyNegativeCache
from .read_through import SeedReadThrough
from .refresh import RefreshingCacheAside, SeedEarlyRefresh, SingleFlightCacheAside
from .write_through import VERSIONED_SOURCE, SeedWriteThrough, VersionedWriteThrough


def seed_interface(name: str, build: Callable[[Any, Any], Any], **fields: Any) -> Target:
    """A target for a layer with the seed's ``get_user(id)`` / ``update_user(id, data)``."""
    defaults: dict[str, Any] = dict(
        read="get_user",
        write=lambda layer, user_id, value: layer.update_user(user_id, {"name": value}),
        observe=lambda user: user and user["name"],
    )
    return Target(name=name, build=build, **{**defaults, **fields})


def write_behind(name: str, build: Callable[[Any, Any], Any], *faults: str, **fields: Any) -> Target:
    """A write-behind layer (``write(key, {"name": ...})``, its own flusher thread), judged on
    durability alone: its reads serve only what is cached, so they are not explored."""
    return Target(
        name=name,
        build=build,
        read=None,
        write=lambda layer, key, value: layer.write(key, {"name": value}),
        background=True,
        faults=faults,
        **fields,
    )


KNOWN_BUGS = (
    seed_interface("seed-cache-aside", SeedCacheAside),
    seed_interface("leases-only", LeasesOnlyCacheAside),
    seed_interface("seed-write-through", SeedWriteThrough),
    seed_interface("seed-read-through", SeedReadThrough, read="get_user_read_through"),
    write_behind("seed-write-behind-crash", SeedWriteBehindCache, "crash"),
    # One process, so that only the retry can reorder (two processes' flushers reorder too).
    write_behind("seed-write-behind-retry", SeedWriteBehindCache, "error", clients=1),
    # The seed's sample is a read path alone: its lock is judged without writers beside it.
    seed_interface("seed-lock", SeedLockedCacheAside, read="get_user_with_lock", write=None),
    seed_interface("unfenced-token-lock", UnfencedTokenLock, source=FENCED_SOURCE),
    seed_interface("bare-del-token-lock", BareDelTokenLock, source=FENCED_SOURCE),
    # The seed's early refresh, reading through a 60 s entry: its refresh threads are actors.
    seed_interface(
        "seed-early-refresh",
        SeedEarlyRefresh,
        read=lambda layer, key: layer.get_with_early_refresh(f"user:{key}", 60),
        background=True,
    ),
    # A user created after a reader cached "not found": the marker outlives the create.
    seed_interface("sticky-negative-cache", StickyNegativeCache, keys=("u1",), absent=("u1",)),
)
CORRECT = (
    seed_interface("leased-cache-aside", LeasedCacheAside),
    seed_interface("versioned-write-through", VersionedWriteThrough, source=VERSIONED_SOURCE),
    write_behind("queued-write-behind", QueuedWriteBehind, "crash", "error", source=QUEUED_SOURCE),
    seed_interface("fenced-token-lock", FencedTokenLock, source=FENCED_SOURCE),
    # One load per miss, as long as no stall outlives the 10 s lease: a Tick while the holder is
    # paused (a process pause) lets a waiter load too, so stampede=1 is not promised; the
    # figure is reported.
    seed_interface("single-flight-cache-aside", SingleFlightCacheAside),
    seed_interface("refreshing-cache-aside", RefreshingCacheAside, background=True),
    # A reader may still meet the marker between a create's commit and its DEL, after another
    # read already saw the user: no stale read, no divergence, but no monotonic reads either.
    seed_interface(
        "guarded-negative-cache", GuardedNegativeCache, keys=("u1",), absent=("u1",),
        contract=Contract(session_guarantees=False),
    ),
)

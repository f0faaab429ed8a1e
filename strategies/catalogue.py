"""Every reference layer as a ready :class:`~pytest_cachecheck.Target`, sorted by verdict.

``KNOWN_BUGS`` are layers the harness must fail (the benchmark times how fast);
``CORRECT`` are layers it must pass.
"""

from __future__ import annotations

from typing import Any, Callable

from ..target import Target
from .cache_aside import SeedCacheAside
from .leases import LeasedCacheAside, LeasesOnlyCacheAside
from .write_behind import QUEUED_SOURCE, QueuedWriteBehind, SeedWriteBehindCache
from .read_through import SeedReadThrough
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
)
CORRECT = (
    seed_interface("leased-cache-aside", LeasedCacheAside),
    seed_interface("versioned-write-through", VersionedWriteThrough, source=VERSIONED_SOURCE),
    write_behind("queued-write-behind", QueuedWriteBehind, "crash", "error", source=QUEUED_SOURCE),
)

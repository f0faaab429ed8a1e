"""Every reference layer as a ready :class:`~pytest_cachecheck.Target`, sorted by verdict.

``KNOWN_BUGS`` are layers the harness must fail (the benchmark times how fast);
``CORRECT`` are layers it must pass.  All share the seed's ``get_user``/``update_user``
interface over the default ``users(id, name)`` source.
"""

from __future__ import annotations

from typing import Any, Callable

from ..target import Target
from .cache_aside import SeedCacheAside
from .leases import LeasedCacheAside, LeasesOnlyCacheAside


def seed_interface(name: str, build: Callable[[Any, Any], Any], **fields: Any) -> Target:
    """A target for a layer with the seed's ``get_user(id)`` / ``update_user(id, data)``."""
    return Target(
        name=name,
        build=build,
        read="get_user",
        write=lambda layer, user_id, value: layer.update_user(user_id, {"name": value}),
        observe=lambda user: user and user["name"],
        **fields,
    )


KNOWN_BUGS = (
    seed_interface("seed-cache-aside", SeedCacheAside),
    seed_interface("leases-only", LeasesOnlyCacheAside),
)
CORRECT = (seed_interface("leased-cache-aside", LeasedCacheAside),)

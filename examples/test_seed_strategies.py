"""The seed's cache-aside (racy) and its lease-based correct variant, described once each."""

import pytest

from pytest_cachecheck import Target
from pytest_cachecheck.strategies.cache_aside import SeedCacheAside
from pytest_cachecheck.strategies.leases import LeasedCacheAside


def user_layer(name, build):
    return Target(
        name=name,
        build=build,
        read="get_user",
        write=lambda layer, user_id, value: layer.update_user(user_id, {"name": value}),
        observe=lambda user: user and user["name"],
    )


@pytest.mark.cachecheck
def test_seed_cache_aside(cachecheck_explore):
    cachecheck_explore(user_layer("seed-cache-aside", SeedCacheAside))


@pytest.mark.cachecheck
def test_leased_cache_aside(cachecheck_explore):
    cachecheck_explore(user_layer("leased-cache-aside", LeasedCacheAside))

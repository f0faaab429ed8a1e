import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pytest_cachecheck import Target  # noqa: E402
from pytest_cachecheck.strategies.cache_aside import SeedCacheAside  # noqa: E402
from pytest_cachecheck.strategies.leases import LeasedCacheAside  # noqa: E402


def user_layer(name, build, **overrides):
    """A layer with the seed's get_user/update_user interface, as a Target."""
    fields = dict(
        name=name,
        build=build,
        read="get_user",
        write=lambda layer, key, value: layer.update_user(key, {"name": value}),
        observe=lambda user: user and user["name"],
    )
    fields.update(overrides)
    return Target(**fields)


@pytest.fixture
def seed_cache_aside():
    return user_layer("seed-cache-aside", SeedCacheAside)


@pytest.fixture
def leased_cache_aside():
    return user_layer("leased-cache-aside", LeasedCacheAside)

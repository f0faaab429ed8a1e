import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pytest_cachecheck.strategies.cache_aside import SeedCacheAside  # noqa: E402
from pytest_cachecheck.strategies.catalogue import seed_interface  # noqa: E402
from pytest_cachecheck.strategies.leases import LeasedCacheAside  # noqa: E402


@pytest.fixture
def seed_cache_aside():
    return seed_interface("seed-cache-aside", SeedCacheAside)


@pytest.fixture
def leased_cache_aside():
    return seed_interface("leased-cache-aside", LeasedCacheAside)

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pytest_cachecheck import Servers  # noqa: E402
from pytest_cachecheck.strategies.cache_aside import SeedCacheAside  # noqa: E402
from pytest_cachecheck.strategies.catalogue import seed_interface  # noqa: E402
from pytest_cachecheck.strategies.leases import LeasedCacheAside  # noqa: E402


@pytest.fixture
def seed_cache_aside():
    return seed_interface("seed-cache-aside", SeedCacheAside)


@pytest.fixture
def leased_cache_aside():
    return seed_interface("leased-cache-aside", LeasedCacheAside)


# The servers the suite explores on: the embedded default, or the real Redis and PostgreSQL
# named by CACHECHECK_REDIS and CACHECHECK_DB (.ci/run runs the suite both ways).
SERVERS = Servers(redis_url=os.environ.get("CACHECHECK_REDIS") or None, db_dsn=os.environ.get("CACHECHECK_DB") or None)
NEEDS_REAL = "needs real servers: set CACHECHECK_REDIS and CACHECHECK_DB (.ci/run does, on its second pass)"


@pytest.fixture
def servers():
    """Where this pass of the suite explores."""
    return SERVERS


@pytest.fixture
def real_servers():
    if not (SERVERS.redis_url and SERVERS.db_dsn):
        pytest.skip(NEEDS_REAL)
    return SERVERS

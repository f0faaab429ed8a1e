"""The seed's cache-aside (racy) and its lease-based correct variant, from the shipped catalogue.

``seed_interface`` describes a layer with the seed's ``get_user``/``update_user``; see
``test_user_profile.py`` for a Target written out in full.
"""

import pytest

from pytest_cachecheck.strategies.cache_aside import SeedCacheAside
from pytest_cachecheck.strategies.catalogue import seed_interface
from pytest_cachecheck.strategies.leases import LeasedCacheAside


@pytest.mark.cachecheck
def test_seed_cache_aside(cachecheck_explore):
    cachecheck_explore(seed_interface("seed-cache-aside", SeedCacheAside))


@pytest.mark.cachecheck
def test_leased_cache_aside(cachecheck_explore):
    cachecheck_explore(seed_interface("leased-cache-aside", LeasedCacheAside))

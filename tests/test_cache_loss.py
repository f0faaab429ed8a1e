"""Cache loss by kill -9 of a private redis-server: what a write-behind queue in Redis survives."""

import dataclasses

import pytest
from pytest_cachecheck.strategies.catalogue import CORRECT

from pytest_cachecheck import Budget, CachecheckFailure, explore
from pytest_cachecheck.backends._backend import Backend
from pytest_cachecheck.backends._private_redis import PrivateRedis, PrivateRedisError
from pytest_cachecheck.backends._real_redis import RealRedisCache
from pytest_cachecheck.backends._sqlite_source import SQLiteSource

QUEUED = {target.name: target for target in CORRECT}["queued-write-behind"]
WITH_CACHE_LOSS = dataclasses.replace(QUEUED, name="queued-write-behind-cache-loss", faults=("cache-loss",))


def explore_on_private_redis(appendonly, examples):
    try:
        server = PrivateRedis(appendonly=appendonly)
    except PrivateRedisError as error:
        pytest.skip(str(error))
    with server:
        backend = Backend(RealRedisCache(server.url, private=server), SQLiteSource())
        try:
            return explore(WITH_CACHE_LOSS, Budget(examples=examples, seed=1), backend=backend)
        finally:
            backend.close()


def test_kill_9_without_persistence_loses_the_queued_writes():
    with pytest.raises(CachecheckFailure) as failure:
        explore_on_private_redis(appendonly=False, examples=300)
    story = str(failure.value)
    assert "[lost-write]" in story and "LoseCache()" in story
    assert "cache lost at step" in story


def test_kill_9_with_an_aof_synced_on_every_write_loses_nothing():
    report = explore_on_private_redis(appendonly=True, examples=60)
    assert report.passed
    assert report.properties["lost-write"] == "ok"

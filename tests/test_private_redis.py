"""The private redis-server fixture: a server the tests may kill -9 and restart."""

import redis


def test_kill_9_loses_what_was_not_persisted(cachecheck_private_redis):
    client = redis.Redis.from_url(cachecheck_private_redis.url)
    client.set("k", "v")
    cachecheck_private_redis.restart()
    assert redis.Redis.from_url(cachecheck_private_redis.url).get("k") is None


def test_an_aof_server_keeps_acknowledged_writes_across_kill_9():
    from pytest_cachecheck.backends._private_redis import PrivateRedis

    with PrivateRedis(appendonly=True) as server:
        redis.Redis.from_url(server.url).set("k", "v")
        server.kill()
        server.start()
        assert redis.Redis.from_url(server.url).get("k") == b"v"


def test_it_listens_on_loopback_only_and_on_its_own_port(cachecheck_private_redis):
    assert cachecheck_private_redis.url.startswith("redis://127.0.0.1:")
    assert cachecheck_private_redis.port != 6379

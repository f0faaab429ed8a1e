"""Refreshing and filling without a stampede: the seed's early refresh, and two that hold.

``SeedEarlyRefresh`` is the seed's ``get_with_early_refresh`` as written.  The seed calls
``fetch_and_cache`` and ``refresh_cache`` without defining them; they are read here the obvious
way (read the source, ``SETEX`` the key for ``base_ttl``).  Its faults: a miss goes straight to
the source, so every reader that misses at once loads it (a stampede); a refresh thread is started
per lucky read, so refreshes of one key pile up; and a refresh writes whatever it read, over a
writer's newer value if the writer's invalidation came in between.

``SingleFlightCacheAside`` fills a missing key once: the reader that misses takes a *lease* (a
token stored under the cache key with ``SET NX PX``) and alone reads the source; the others poll
the cache until the value lands or the lease is gone, and never read the source themselves.  A
fill lands only while the key still holds its own lease (one Lua script), and a writer's ``DEL``
revokes every lease, so a fill never puts back a value read before a write.

``RefreshingCacheAside`` adds an early refresh that does not stampede: when a hit finds the entry
close to its expiry, one reader per key takes a refresh lock (``SET NX EX``) and starts one
thread, which reads the source and replaces the entry only if it still holds the value the hit saw
(compare-and-set in Lua), so a refresh never overwrites a newer write or revives a deleted entry.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

from ._seed_db import SeedDatabase
from .leases import LEASE_PREFIX
from .locks import COMPARE_AND_DELETE

# KEYS = cache key; ARGV = what it must still hold (the filler's lease token, or the value the
# refreshing hit saw), the new value, ttl seconds.  A compare-and-set: the fill and the refresh.
_SET_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""


class SeedEarlyRefresh:
    """The seed's ``get_with_early_refresh``, with ``r`` and ``db`` made instance attributes,
    beside the seed's cache-aside ``update_user`` (update the source, delete the key)."""

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.db = SeedDatabase(connection)

    def get_with_early_refresh(self, key: str, base_ttl: int) -> dict:
        r, refresh_cache, fetch_and_cache = self.r, self.refresh_cache, self.fetch_and_cache
        cached = r.get(key)
        remaining_ttl = r.ttl(key)

        if cached and remaining_ttl > 0:
            # Probabilistically refresh when TTL is getting low
            # Probability increases as TTL approaches 0
            refresh_probability = max(0, 1 - (remaining_ttl / base_ttl))
            if random.random() < refresh_probability * 0.1:  # Scale factor
                # Refresh in background (non-blocking)
                threading.Thread(
                    target=refresh_cache, args=(key, base_ttl)
                ).start()
            return json.loads(cached)

        # Cache miss — fetch and populate
        return fetch_and_cache(key, base_ttl)

    def fetch_and_cache(self, key: str, base_ttl: int) -> dict | None:
        """Not in the seed: read the user ``key`` names from the source, cache it for ``base_ttl``."""
        user = self.db.query("SELECT * FROM users WHERE id = %s", key.split(":", 1)[1])
        if user is not None:
            self.r.setex(key, base_ttl, json.dumps(user))
        return user

    refresh_cache = fetch_and_cache
    """Not in the seed either: a refresh is a fetch that overwrites."""

    def update_user(self, user_id: str, data: dict) -> None:
        self.db.execute("UPDATE users SET name=%s WHERE id=%s", data["name"], user_id)
        self.r.delete(f"user:{user_id}")


class SingleFlightCacheAside:
    """One source load per missing key: a leased loader, and waiters that poll the cache.

    Waiters poll without giving up on their own: a lease outlives no holder for long (it expires
    after ``LEASE_MS``), and a waiter that then finds the key without value or lease takes the
    next lease itself.  ``TTL`` is short so that an exploration's ticks reach expiry and refresh.
    """

    TTL = 60
    LEASE_MS = 10_000
    POLL = 0.1

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.db = SeedDatabase(connection)
        self._fill = self.r.register_script(_SET_IF_UNCHANGED)

    def get_user(self, user_id: str) -> dict | None:
        key = f"user:{user_id}"
        while True:
            cached = self.r.get(key)
            if cached is not None and not str(cached).startswith(LEASE_PREFIX):
                return self._hit(user_id, key, cached)
            if cached is None:
                token = f"{LEASE_PREFIX}{random.getrandbits(64):016x}"
                if self.r.set(key, token, px=self.LEASE_MS, nx=True):
                    return self._load(user_id, key, token)
            time.sleep(self.POLL)  # another reader loads: wait for its fill, never read the source

    def _hit(self, user_id: str, key: str, cached: str) -> dict:
        return json.loads(cached)

    def _load(self, user_id: str, key: str, token: str) -> dict | None:
        user = self.db.query("SELECT * FROM users WHERE id = %s", user_id)
        if user is not None:
            self._fill(keys=[key], args=[token, json.dumps(user), self.TTL])
        return user

    def update_user(self, user_id: str, data: dict) -> None:
        self.db.execute("UPDATE users SET name=%s WHERE id=%s", data["name"], user_id)
        self.r.delete(f"user:{user_id}")  # revokes any lease: a fill in flight cannot land


class RefreshingCacheAside(SingleFlightCacheAside):
    """The single-flight fill, and one early refresh per key that never overwrites a newer write.

    A hit with less than ``REFRESH_BELOW`` seconds left takes ``refresh:<key>`` only-if-absent
    (expiring after ``REFRESH_LOCK_TTL``) and, if it got it, starts the one refresh thread.
    """

    REFRESH_BELOW = 50
    REFRESH_LOCK_TTL = 30

    def __init__(self, redis_client: Any, connection: Any) -> None:
        super().__init__(redis_client, connection)
        self._replace = self.r.register_script(_SET_IF_UNCHANGED)
        self._release = self.r.register_script(COMPARE_AND_DELETE)

    def _hit(self, user_id: str, key: str, cached: str) -> dict:
        remaining = self.r.ttl(key)
        if 0 < remaining < self.REFRESH_BELOW:
            token = f"{random.getrandbits(64):016x}"
            if self.r.set(f"refresh:{key}", token, nx=True, ex=self.REFRESH_LOCK_TTL):
                threading.Thread(target=self._refresh, args=(user_id, key, cached, token), daemon=True).start()
        return json.loads(cached)

    def _refresh(self, user_id: str, key: str, seen: str, token: str) -> None:
        try:
            user = self.db.query("SELECT * FROM users WHERE id = %s", user_id)
            if user is not None:
                self._replace(keys=[key], args=[seen, json.dumps(user), self.TTL])
        finally:
            self._release(keys=[f"refresh:{key}"], args=[token])

"""Cache-aside made safe: memcache-style leases, and writers that fence fills out.

The seed's race is a reader filling a value it read before a write, after that write's
invalidation.  Leases close it: a reader that misses takes a *lease*, a unique token stored under
the cache key itself with ``SET NX PX``, and fills only if the key still holds its token (checked
and set atomically by a Lua script).  Any ``DEL`` of the key revokes the lease.

Leases alone are not enough, which the harness shows: between a writer's commit and its
``DEL``, a reader that goes to the source sees the new value while the cache still serves the
old one, so a client can read new, then old (monotonic reads broken); and with two writers in
flight a fill can slip in between one writer's ``DEL`` and the other's commit.  So writers fence
fills out for their whole duration: a writer counts itself in ``<key>:writers`` and deletes the
key (one MULTI/EXEC), updates the source, then counts itself out and deletes the key again.
Fills are refused while any writer is counted; readers that find no value read the source.

A writer that dies mid-write leaves its count behind: reads then go to the source until the
count is cleared.  That trades hit rate for consistency, never the reverse.
"""

from __future__ import annotations

import json
import random
from typing import Any

from ._seed_db import SeedDatabase

LEASE_PREFIX = "lease:"

# KEYS = cache key, writers key; ARGV = token, value, ttl seconds.
_FILL_IF_LEASED = """
if redis.call('GET', KEYS[1]) == ARGV[1] and tonumber(redis.call('GET', KEYS[2]) or '0') == 0 then
    return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""


class LeasesOnlyCacheAside:
    """Leases without the writers' fence: the seed's race is gone, monotonic reads are not.

    Kept as a known bug: between a writer's commit and its ``DEL``, a reader that finds another
    reader's lease reads the new value from the source, then its next read hits the old value.
    """

    TTL = 3600
    LEASE_MS = 10_000

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.db = SeedDatabase(connection)
        self._fill = self.r.register_script(_FILL_IF_LEASED)

    def get_user(self, user_id: str) -> dict | None:
        key = f"user:{user_id}"
        cached = self.r.get(key)
        if cached is not None and not str(cached).startswith(LEASE_PREFIX):
            return json.loads(cached)
        token = f"{LEASE_PREFIX}{random.getrandbits(64):016x}"
        leased = cached is None and self.r.set(key, token, px=self.LEASE_MS, nx=True)
        user = self.db.query("SELECT * FROM users WHERE id = %s", user_id)
        if leased and user is not None:
            self._fill(keys=[key, f"{key}:writers"], args=[token, json.dumps(user), self.TTL])
        return user

    def update_user(self, user_id: str, data: dict) -> None:
        self.db.execute("UPDATE users SET name=%s WHERE id=%s", data["name"], user_id)
        self.r.delete(f"user:{user_id}")


class LeasedCacheAside(LeasesOnlyCacheAside):
    """Leases, and writers that fence fills out for their whole duration (correct)."""

    def update_user(self, user_id: str, data: dict) -> None:
        key = f"user:{user_id}"
        self._fence(key, +1)
        try:
            self.db.execute("UPDATE users SET name=%s WHERE id=%s", data["name"], user_id)
        finally:
            self._fence(key, -1)

    def _fence(self, key: str, delta: int) -> None:
        """Count a writer in or out, and revoke every lease and value of the key, atomically."""
        pipe = self.r.pipeline()
        pipe.incrby(f"{key}:writers", delta)
        pipe.delete(key)
        pipe.execute()

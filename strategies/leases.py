"""Cache-aside made safe with memcache-style leases (a correct variant of the seed's code).

A reader that misses takes a *lease*: a unique token stored under the cache key itself with
``SET NX PX``.  It fills the cache only if the key still holds its token, checked and set
atomically by a Lua script.  A writer updates the source, then deletes the key, which also
revokes any lease granted before the delete.  So a reader that read the source before a write
can never install that old value after the write's invalidation: its lease is gone.

Readers that find another reader's lease read the source without filling.  A lease expires
after ``LEASE_MS`` so a reader that dies cannot block filling forever.
"""

from __future__ import annotations

import json
import random
from typing import Any

from ._seed_db import SeedDatabase

LEASE_PREFIX = "lease:"

# KEYS[1] = cache key; ARGV = token, value, ttl seconds.  Fill only while our lease stands.
_FILL_IF_LEASED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""


class LeasedCacheAside:
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
            self._fill(keys=[key], args=[token, json.dumps(user), self.TTL])
        return user

    def update_user(self, user_id: str, data: dict) -> None:
        self.db.execute("UPDATE users SET name=%s WHERE id=%s", data["name"], user_id)
        self.r.delete(f"user:{user_id}")

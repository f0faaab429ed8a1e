"""Negative caching: remembering that a user does not exist, and forgetting it when it does.

A cache-aside reader that finds no row caches a "not found" marker, so that lookups of missing
users stop reaching the source.  The keys start absent (``Target(absent=...)``): a write creates
the row (an upsert).

``StickyNegativeCache`` keeps its marker under a key of its own, with no TTL, and its writer
invalidates only the user's key: once a reader has cached "not found", every later read says the
user does not exist, however long ago the user was created.  ``GuardedNegativeCache`` clears the
entry on every write and lets a fill land only if no write came since the reader looked: no stale
read, no divergence (a reader may still meet the marker between a create's commit and its DEL
after another read saw the user, so no monotonic reads).
"""

from __future__ import annotations

import json
from typing import Any

from ._seed_db import SeedDatabase

NOT_FOUND = "__not_found__"
TTL = 30
UPSERT = "INSERT INTO users (id, name) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET name = excluded.name"


class StickyNegativeCache:
    """Remembers missing users under their own key, forever; a create clears only the user's key."""

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.db = SeedDatabase(connection)

    def get_user(self, user_id: str) -> dict | None:
        cached = self.r.get(f"user:{user_id}")
        if cached:
            return json.loads(cached)
        if self.r.exists(f"missing:user:{user_id}"):
            return None
        user = self.db.query("SELECT * FROM users WHERE id = %s", user_id)
        if user is None:
            self.r.set(f"missing:user:{user_id}", 1)
        else:
            self.r.setex(f"user:{user_id}", TTL, json.dumps(user))
        return user

    def update_user(self, user_id: str, data: dict) -> None:
        self.db.execute(UPSERT, user_id, data["name"])
        self.r.delete(f"user:{user_id}")  # the "missing" marker stays


class GuardedNegativeCache:
    """Caches markers and values (with a TTL) only if no write came in between, and clears the
    entry on every write.

    A reader notes the key's generation before it reads the source; its fill lands only if the
    generation is unchanged (one Lua script), and a writer bumps the generation after its commit,
    then deletes the entry.  A reader that saw "no row" before a create therefore cannot cache
    the marker after the create (the generation moved), however late its fill arrives.
    """

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.db = SeedDatabase(connection)
        self._fill = self.r.register_script(_FILL_IF_UNCHANGED)

    def get_user(self, user_id: str) -> dict | None:
        cached = self.r.get(f"user:{user_id}")
        if cached == NOT_FOUND:
            return None
        if cached:
            return json.loads(cached)
        generation = self.r.get(f"generation:user:{user_id}") or "0"
        user = self.db.query("SELECT * FROM users WHERE id = %s", user_id)
        entry = json.dumps(user) if user else NOT_FOUND
        self._fill(keys=[f"user:{user_id}", f"generation:user:{user_id}"], args=[entry, generation, TTL])
        return user

    def update_user(self, user_id: str, data: dict) -> None:
        self.db.execute(UPSERT, user_id, data["name"])
        self.r.incr(f"generation:user:{user_id}")
        self.r.delete(f"user:{user_id}")


_FILL_IF_UNCHANGED = """
if (redis.call('GET', KEYS[2]) or '0') == ARGV[2] then
  return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
end
return false
"""

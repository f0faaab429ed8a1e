"""Write-through: the seed's version (divergence included) and a version-guarded correct one.

The seed's writer updates the source, reads the row back and overwrites the cache.  Two writers
race: the first reads back its own value, pauses, the second writes and caches a newer one, and
the first then caches its older value over it: the cache disagrees with the source for the TTL.

``VersionedWriteThrough`` bumps a version column with every update and caches the value with its
version through a Lua script that never replaces a newer version with an older one; a reader's
fill on a miss goes through the same script.  Entries carry no TTL: an expiry would let a slow
filler bring an old version back once the newer entry is gone.
"""

from __future__ import annotations

import json
from typing import Any

from ..target import Source
from ._seed_db import SeedDatabase


class SeedWriteThrough:
    """``update_user_write_through`` and ``get_user_write_through`` as the seed writes them."""

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.db = SeedDatabase(connection)

    def update_user(self, user_id: str, data: dict) -> None:
        r, db = self.r, self.db
        # Write to database
        db.execute("UPDATE users SET name=%s WHERE id=%s", data["name"], user_id)

        # Write to cache (same transaction conceptually)
        user = db.query("SELECT * FROM users WHERE id = %s", user_id)
        r.setex(f"user:{user_id}", 3600, json.dumps(user))

    def get_user(self, user_id: str) -> dict | None:
        r, db = self.r, self.db
        # Always read from cache
        cached = r.get(f"user:{user_id}")
        if cached:
            return json.loads(cached)

        # Only on cold start or eviction
        user = db.query("SELECT * FROM users WHERE id = %s", user_id)
        if user:
            r.setex(f"user:{user_id}", 3600, json.dumps(user))
        return user


VERSIONED_SOURCE = Source(
    schema="CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0)",
    insert="INSERT INTO users (id, name) VALUES (%s, %s)",
    select="SELECT name FROM users WHERE id = %s",
)

def set_if_newer(field: str) -> str:
    """A Lua script: KEYS[1] = cache key; ARGV = the row as JSON and its ``field`` (a version, a
    fence).  It never replaces an entry whose ``field`` is as new or newer."""
    return f"""
local cached = redis.call('GET', KEYS[1])
if cached and cjson.decode(cached)['{field}'] >= tonumber(ARGV[2]) then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


_SET_IF_NEWER = set_if_newer("version")


class VersionedWriteThrough:
    """Write-through whose cache only ever moves forward in version (correct)."""

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.db = SeedDatabase(connection)
        self._set_if_newer = self.r.register_script(_SET_IF_NEWER)

    def update_user(self, user_id: str, data: dict) -> None:
        self.db.execute("UPDATE users SET name=%s, version = version + 1 WHERE id=%s", data["name"], user_id)
        self._cache(self.db.query("SELECT * FROM users WHERE id = %s", user_id))

    def get_user(self, user_id: str) -> dict | None:
        cached = self.r.get(f"user:{user_id}")
        if cached:
            return json.loads(cached)
        user = self.db.query("SELECT * FROM users WHERE id = %s", user_id)
        if user:
            self._cache(user)
        return user

    def _cache(self, user: dict | None) -> None:
        if user is not None:
            self._set_if_newer(keys=[f"user:{user['id']}"], args=[json.dumps(user), user["version"]])

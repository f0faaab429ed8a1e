"""Cache-aside exactly as the seed writes it (``get_user``/``update_user``), race included.

The race: a reader misses, reads the source, and is paused; a writer updates the source and
deletes the key; the reader resumes and fills the cache with the value it read before the
write.  The cache then disagrees with the source until the TTL (3600 s) expires.
"""

from __future__ import annotations

import json
from typing import Any

from ._seed_db import SeedDatabase


class SeedCacheAside:
    """The seed's module-level functions, with ``r`` and ``db`` made instance attributes."""

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.db = SeedDatabase(connection)

    def get_user(self, user_id: str) -> dict | None:
        r, db = self.r, self.db
        # Step 1: Check cache
        cached = r.get(f"user:{user_id}")
        if cached:
            return json.loads(cached)

        # Step 2: Cache miss — read from database
        user = db.query("SELECT * FROM users WHERE id = %s", user_id)
        if user is None:
            return None

        # Step 3: Populate cache with TTL
        r.setex(f"user:{user_id}", 3600, json.dumps(user))

        return user

    def update_user(self, user_id: str, data: dict) -> None:
        r, db = self.r, self.db
        # Update database
        db.execute("UPDATE users SET name=%s WHERE id=%s", data["name"], user_id)

        # Invalidate cache (NOT update — delete is safer)
        r.delete(f"user:{user_id}")

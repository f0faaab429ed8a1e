"""Read-through as the seed writes it: an in-process TTL cache in front of the source.

The seed uses ``cachetools.TTLCache``; ``TTLCache`` below is the same contract in a few lines
(entries expire ``ttl`` seconds after they were stored, read from ``time.monotonic``), so the
harness needs no extra dependency.  Each app process has its own cache and nothing invalidates
it: after another process's write, a process keeps serving its copy until the TTL runs out.
That is a stale read under a strict contract, and within contract under
``Contract.bounded(3600)``, which is what such a layer honestly promises.
"""

from __future__ import annotations

import time
from typing import Any

from ._seed_db import SeedDatabase


class TTLCache(dict):
    """A dict whose entries vanish ``ttl`` seconds after they were set (maxsize is not enforced)."""

    def __init__(self, maxsize: int, ttl: float) -> None:
        super().__init__()
        self.maxsize, self.ttl = maxsize, ttl
        self._expires: dict[Any, float] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._expires[key] = time.monotonic() + self.ttl

    def __contains__(self, key: object) -> bool:
        if super().__contains__(key) and self._expires[key] <= time.monotonic():
            del self[key]
            del self._expires[key]
        return super().__contains__(key)


class SeedReadThrough:
    """``get_user_read_through`` with its module-level cache made per instance (per process)."""

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.db = SeedDatabase(connection)
        self.cache = TTLCache(maxsize=10000, ttl=3600)

    def get_user_read_through(self, user_id: str) -> dict | None:
        cache, db = self.cache, self.db
        if user_id in cache:
            return cache[user_id]

        # Cache loads from DB on miss
        user = db.query("SELECT * FROM users WHERE id = %s", user_id)
        if user:
            cache[user_id] = user
        return user

    def update_user(self, user_id: str, data: dict) -> None:
        """The application's write path, straight to the source (the seed gives none)."""
        self.db.execute("UPDATE users SET name=%s WHERE id=%s", data["name"], user_id)

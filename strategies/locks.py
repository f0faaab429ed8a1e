"""Locks around the cache: the seed's stampede lock as written, and token locks with and without a fence.

``SeedLockedCacheAside`` is the seed's ``get_user_with_lock``: a miss takes ``lock:user:<id>``
with ``SET ... NX EX 10`` and releases it with a bare ``DEL``; a waiter polls the cache for 5 s,
then falls through to the database.  Once the lock expires under a holder that is still working
(every TTL lock does under a long enough pause), a second reader takes it; the first one's late
``SETEX`` lands after the second one's, and its bare ``DEL`` releases the second one's lock.

The token locks guard a write (``update_user``): each attempt is one MULTI/EXEC of ``INCR
fence:user:<id>`` and ``SET lock:user:<id> <id> NX PX 10000`` (polled every 0.1 s), so the token
is drawn in the instant the lock is taken and tokens follow the order the lock was granted in (a
token drawn before the attempt would not: a holder could take the lock first with a newer token);
the lock is released with a Lua compare-and-delete of the holder's own random id.  A lock alone cannot stop a holder whose lock expired while it was paused
from writing after the next holder did; a *fence* can: every write carries the token and lands
only if no newer token landed there first (``UPDATE ... WHERE fence < token`` in the source, a
compare-and-set on the entry's ``fence`` in the cache).  Reads are version-guarded fills on the
same ``fence`` (the row's), as in :mod:`.write_through`, so only the lock can go wrong.

* :class:`FencedTokenLock` is correct;
* :class:`UnfencedTokenLock` writes unconditionally: a late holder overwrites the next one's
  write (mutual exclusion broken);
* :class:`BareDelTokenLock` is fenced but releases with a bare ``DEL``: a late holder deletes
  the next holder's lock.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from ..target import Source
from ._seed_db import SeedDatabase
from .write_through import set_if_newer


class SeedLockedCacheAside:
    """The seed's module-level ``get_user_with_lock``, with ``r`` and ``db`` made instance attributes."""

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.db = SeedDatabase(connection)

    def get_user_with_lock(self, user_id: str) -> dict:
        r, db = self.r, self.db
        cache_key = f"user:{user_id}"
        lock_key = f"lock:{cache_key}"

        # Check cache
        cached = r.get(cache_key)
        if cached:
            return json.loads(cached)

        # Try to acquire lock
        lock_acquired = r.set(lock_key, "1", ex=10, nx=True)

        if lock_acquired:
            try:
                # We have the lock — fetch from DB and populate cache
                user = db.query("SELECT * FROM users WHERE id = %s", user_id)
                if user:
                    r.setex(cache_key, 3600, json.dumps(user))
                return user
            finally:
                r.delete(lock_key)
        else:
            # Another request is fetching — wait and retry
            for _ in range(50):  # Wait up to 5 seconds
                time.sleep(0.1)
                cached = r.get(cache_key)
                if cached:
                    return json.loads(cached)

            # Timeout — fall through to DB (safety valve)
            return db.query("SELECT * FROM users WHERE id = %s", user_id)


FENCED_SOURCE = Source(
    schema="CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL, fence INTEGER NOT NULL DEFAULT 0)",
    insert="INSERT INTO users (id, name) VALUES (%s, %s)",
    select="SELECT name FROM users WHERE id = %s",
)
"""The users table with the ``fence`` column the token locks write their token to."""

# KEYS[1] = lock; ARGV[1] = the holder's token.  Deletes the lock only if it still holds the token.
COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_SET_IF_NEWER = set_if_newer("fence")


class FencedTokenLock:
    """Writes under a token lock, each write fenced by the token where it lands (correct)."""

    LOCK_MS = 10_000
    POLL = 0.1

    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.connection = connection
        self.db = SeedDatabase(connection)
        self._release_script = self.r.register_script(COMPARE_AND_DELETE)
        self._set_if_newer = self.r.register_script(_SET_IF_NEWER)

    def get_user(self, user_id: str) -> dict | None:
        cached = self.r.get(f"user:{user_id}")
        if cached:
            return json.loads(cached)
        user = self.db.query("SELECT * FROM users WHERE id = %s", user_id)
        if user:
            self._set_if_newer(keys=[f"user:{user_id}"], args=[json.dumps(user), user["fence"]])
        return user

    def update_user(self, user_id: str, data: dict) -> None:
        key = f"user:{user_id}"
        lock = f"lock:{key}"
        me = f"{random.getrandbits(64):016x}"
        while True:
            attempt = self.r.pipeline()  # MULTI/EXEC: the token comes with the lock, atomically
            attempt.incr(f"fence:{key}")
            attempt.set(lock, me, nx=True, px=self.LOCK_MS)
            token, taken = attempt.execute()
            if taken:
                break
            time.sleep(self.POLL)
        try:
            if self._write_source(user_id, data["name"], token):
                self._write_cache(key, {"id": user_id, "name": data["name"], "fence": token})
            else:  # fenced out: a newer holder's value stands; the cache must not show older
                self._write_cache(key, self.db.query("SELECT * FROM users WHERE id = %s", user_id))
        finally:
            self._release(lock, me)

    def _write_source(self, user_id: str, name: str, token: int) -> bool:
        """The row takes the write only if no newer token wrote it first."""
        cursor = self.connection.cursor()
        cursor.execute("UPDATE users SET name=%s, fence=%s WHERE id=%s AND fence < %s", (name, token, user_id, token))
        self.connection.commit()
        return cursor.rowcount > 0

    def _write_cache(self, key: str, user: dict) -> None:
        self._set_if_newer(keys=[key], args=[json.dumps(user), user["fence"]])

    def _release(self, lock: str, me: str) -> None:
        self._release_script(keys=[lock], args=[me])


class UnfencedTokenLock(FencedTokenLock):
    """The same lock, its writes unfenced: a holder whose lock expired overwrites the next one."""

    def _write_source(self, user_id: str, name: str, token: int) -> bool:
        self.db.execute("UPDATE users SET name=%s, fence=%s WHERE id=%s", name, token, user_id)
        return True

    def _write_cache(self, key: str, user: dict) -> None:
        self.r.set(key, json.dumps(user))


class BareDelTokenLock(FencedTokenLock):
    """The fenced lock released with a bare ``DEL``: it deletes whoever holds the lock now."""

    def _release(self, lock: str, me: str) -> None:
        self.r.delete(lock)

"""The seed's UserProfileCache under test, through a short adapter; the layer is untouched."""

from types import SimpleNamespace

import pytest
from user_profile import UserProfileCache

from pytest_cachecheck import Source, Target

# The team's existing table, as its migrations create it (not part of the adapter).
USERS_TABLE = """CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT, email TEXT, avatar_url TEXT,
    bio TEXT, follower_count INTEGER, following_count INTEGER)"""

# --- adapter: the layer's `db` over the harness's connection, and how to drive the layer ---
class UsersTable:
    def __init__(self, conn):
        self.conn = conn

    def get_user(self, user_id):
        cur = self.conn.execute("SELECT * FROM users WHERE id = %s", (user_id,))
        row = cur.fetchone()
        return row and SimpleNamespace(**dict(zip([c[0] for c in cur.description], row)))

    def update_user(self, user_id, data):
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (data["name"], user_id))
        self.conn.commit()

PROFILES = Target(
    name="user-profile-cache", build=lambda r, conn: UserProfileCache(r, UsersTable(conn)), read="get",
    write=lambda layer, user_id, name: layer.update(user_id, {"name": name}),
    observe=lambda profile: profile and profile.name,
    source=Source(schema=USERS_TABLE, insert="INSERT INTO users VALUES (%s, %s, 'a@example.com', '', '', 0, 0)"),
)
# --- end of adapter ---


@pytest.mark.cachecheck
def test_user_profile_cache(cachecheck_explore):
    """The seed's UserProfileCache fails with divergence: its lock stops a stampede, not the
    cache-aside race.  A reader fills the cache with the profile it read before an update,
    after that update's invalidation, and the cache is wrong until the entry expires (its TTL,
    jitter included).  The fix is cache-aside's: see test_seed_strategies.py::test_leased_cache_aside.
    Its lock has a bug of its own, which some runs show first (mutual-exclusion): a holder that
    outlives its 10 s TTL still fills the entry, after the next holder did."""
    cachecheck_explore(PROFILES)

"""The README's custom property (examples/lock_ownership.py): the README shows its code, and it
finds a bare-DEL lock released by a client that no longer held it, and passes a token-checked
release (compare-and-delete in Lua)."""

import importlib.util
import json
import pathlib
import random

import pytest

from pytest_cachecheck import Budget, CachecheckFailure, Verdict, explore, hookimpl
from pytest_cachecheck.contract import Contract
from pytest_cachecheck.strategies._seed_db import SeedDatabase
from pytest_cachecheck.strategies.catalogue import seed_interface

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("lock_ownership", ROOT / "examples" / "lock_ownership.py")
lock_ownership = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_ownership)


def _readme_code(text: str) -> str:
    lines = text.splitlines()
    start = lines.index("# -- README begin") + 1
    return "\n".join(lines[start : lines.index("# -- README end")])


def test_the_readme_shows_the_property_exactly():
    code = _readme_code((ROOT / "examples" / "lock_ownership.py").read_text())
    assert 0 < len(code.splitlines()) <= 15
    readme = (ROOT / "README.md").read_text()
    assert f"```python\n{code}\n```" in readme, "README.md must show examples/lock_ownership.py's property as it is"


def test_the_property_parses_no_text():
    code = _readme_code((ROOT / "examples" / "lock_ownership.py").read_text())
    import re
    for parsing in (r"\.command\b", r"\.result\b", r"split\(", "shlex", "startswith", r"\bre\."):
        assert not re.search(parsing, code), parsing


_RELEASE_IF_MINE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class _LockedFill:
    """Cache-aside whose miss takes ``lock:user:<id>`` (SET NX EX 10), fills only if absent (so a
    holder that outlived its lock takes no effect: no built-in mutual-exclusion finding), and
    releases the lock.

    ``token_checked``: release only if the lock still holds this client's token (Lua), else a
    bare ``DEL`` that may remove a lock another client took after this one's expired.
    """

    token_checked = False

    def __init__(self, redis_client, connection):
        self.r = redis_client
        self.db = SeedDatabase(connection)
        self._release = self.r.register_script(_RELEASE_IF_MINE)

    def get_user(self, user_id):
        key = f"user:{user_id}"
        cached = self.r.get(key)
        if cached is not None:
            return json.loads(cached)
        lock, token = f"lock:{key}", f"{random.getrandbits(64):016x}"
        if not self.r.set(lock, token, nx=True, ex=10):
            return self.db.query("SELECT * FROM users WHERE id = %s", user_id)
        try:
            user = self.db.query("SELECT * FROM users WHERE id = %s", user_id)
            if user is not None:  # only if absent: a holder whose lock expired never overwrites a fill
                self.r.set(key, json.dumps(user), ex=3600, nx=True)
            return user
        finally:
            if self.token_checked:
                self._release(keys=[lock], args=[token])
            else:
                self.r.delete(lock)

    def update_user(self, user_id, data):
        self.db.execute("UPDATE users SET name=%s WHERE id=%s", data["name"], user_id)
        self.r.delete(f"user:{user_id}")


class _TokenChecked(_LockedFill):
    token_checked = True


# The layers' own race (a late fill) is a divergence; a bounded contract lets the lock property
# alone decide, and one key keeps the search small.
CONTRACT = Contract.bounded(10**6)


def test_it_finds_a_lock_deleted_by_a_client_that_no_longer_held_it():
    target = seed_interface("bare-del-lock", _LockedFill, keys=("u1",), contract=CONTRACT)
    with pytest.raises(CachecheckFailure) as failure:
        explore(target, Budget(examples=300, seed=2), plugins=[lock_ownership])
    text = str(failure.value)
    assert "lock-ownership" in text
    assert "deleted 'lock:user:u1', a lock it did not hold" in text


class _RefusedReleases:
    """Counts releases the compare-and-delete refused: the lock had expired and been retaken."""

    refused = 0

    @hookimpl
    def cachecheck_check(self, history, contract):
        for call in history.calls:
            if any(command.name in ("EVAL", "EVALSHA") for command in call.commands) and call.reply == 0:
                self.refused += 1
        return Verdict.of("refused-releases")


def test_a_token_checked_release_passes():
    target = seed_interface("token-checked-lock", _TokenChecked, keys=("u1",), contract=CONTRACT)
    seen = _RefusedReleases()
    report = explore(target, Budget(examples=150, seed=3), plugins=[lock_ownership, seen])
    assert report.properties["lock-ownership"] == "ok"
    assert seen.refused > 0  # the interleaving that fails a bare DEL was explored

"""Lock safety judged from the history: mutual exclusion, release by a non-owner, lock leaks.

Hand-built histories pin each property both ways (a fence-rejected write and a compare-and-delete
that found another token count for nothing); explorations show the reference layers in
``strategies/locks.py`` found, or passing, in lock terms.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from _histories import HistoryBuilder
from _structured import redis

from pytest_cachecheck import Budget, CachecheckFailure, Target, explore, hookimpl
from pytest_cachecheck.checkers import check
from pytest_cachecheck.checkers.locks import FOREIGN_RELEASE, LEAK, MUTUAL_EXCLUSION, lock_safety
from pytest_cachecheck.contract import Contract
from pytest_cachecheck.history import Call, History, Rows, Statement
from pytest_cachecheck.history.roles import LOCK, key_roles
from pytest_cachecheck.report._report import count_decisions
from pytest_cachecheck.strategies._seed_db import SeedDatabase
from pytest_cachecheck.strategies.catalogue import CORRECT, KNOWN_BUGS, seed_interface
from pytest_cachecheck.target import TargetError

TARGETS = {target.name: target for target in (*KNOWN_BUGS, *CORRECT)}
SHA = "c3f8721cbb97f72bc19e972846bd7aaf91901658"


def sql(h, client, op, text, *params, rowcount=1):
    """Append one SQL statement that changed ``rowcount`` rows; returns its step."""
    step, time = h._stamp()
    request = Statement(text, params)
    h.events.append(Call(step, time, client, f"client-{client}", op, "sql", request=request, reply=Rows(None, rowcount)))
    return step


def verdicts(history):
    return {verdict.property: verdict for verdict in lock_safety(history)}


def entry(value):
    return json.dumps({"id": "u1", "name": value})


def late_holder(*, late_write, their_write=None, release="DEL", release_reply=0, ttl=("EX", 10)):
    """Client 1 takes lock:u1 at t=0, pauses past its TTL; client 2 takes it at t=11 and fills
    user:u1 (or does ``their_write(h, op)``); then client 1 does ``late_write(h, op)`` at t=12
    and releases."""
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    a = h.at(0).invoke(1, "read", "u1")
    redis(h, 1, a, "GET", "user:u1")
    redis(h, 1, a, "SET", "lock:u1", "tok-a", "NX", *ttl, reply=True)
    sql(h, 1, a, "SELECT * FROM users WHERE id = %s", "u1", rowcount=-1)
    b = h.at(11).invoke(2, "read", "u1")
    redis(h, 2, b, "GET", "user:u1")
    redis(h, 2, b, "SET", "lock:u1", "tok-b", "NX", *ttl, reply=True)
    if their_write is None:
        redis(h, 2, b, "SETEX", "user:u1", 3600, entry("u1.v0"), reply=True)
    else:
        their_write(h, b)
    h.at(12)
    late_write(h, a)
    if release == "DEL":
        redis(h, 1, a, "DEL", "lock:u1", reply=release_reply)
    else:
        redis(h, 1, a, "EVALSHA", SHA, 1, "lock:u1", "tok-a", keys=(2,), reply=release_reply)
    h.complete(a, value="u1.v0")
    redis(h, 2, b, "EVALSHA", SHA, 1, "lock:u1", "tok-b", keys=(2,), reply=1)
    h.complete(b, value="u1.v0")
    h.probe("u1", "u1.v0", "u1.v0")
    return h.build()


# -- mutual exclusion -----------------------------------------------------------------------


def test_a_holder_writing_after_the_next_holder_past_its_expiry_breaks_mutual_exclusion():
    history = late_holder(late_write=lambda h, a: redis(h, 1, a, "SETEX", "user:u1", 3600, entry("u1.v0"), reply=True))
    verdict = verdicts(history)[MUTUAL_EXCLUSION]
    assert verdict.status == "violated"
    [finding] = verdict.violations
    message = finding.message
    assert "client 1 took lock:u1 at step 4 (expires at t=10 s)" in message
    assert "still wrote user:u1 at step 10 (t=12 s" in message and "2 s after its lock expired" in message
    assert "client 2 had taken lock:u1 at step 8" in message and "fencing token" in message
    assert finding.steps == (4, 8, 9, 10)
    assert verdict.figures["holders_past_expiry"] == 1 and verdict.figures["longest_past_expiry"] == 2
    assert verdict.figures["lock_holds"] == 2


def test_a_late_write_a_fence_rejected_takes_no_effect():
    fenced_sql = late_holder(late_write=lambda h, a: sql(h, 1, a, "UPDATE users SET name=%s WHERE id=%s AND fence < %s", "x", "u1", 1, rowcount=0))
    fenced_cas = late_holder(late_write=lambda h, a: redis(h, 1, a, "EVALSHA", "ab" * 20, 1, "user:u1", entry("u1.v0"), 1, keys=(2,), reply=0))
    for history in (fenced_sql, fenced_cas):
        verdict = verdicts(history)[MUTUAL_EXCLUSION]
        assert verdict.status == "ok"
        assert verdict.figures["holders_past_expiry"] == 1  # its release still came after expiry


def test_late_writes_are_judged_per_resource_the_source_included():
    update = "UPDATE users SET name=%s WHERE id=%s"
    source = late_holder(
        their_write=lambda h, b: sql(h, 2, b, update, "b", "u1"),
        late_write=lambda h, a: sql(h, 1, a, update, "a", "u1"),
    )
    [finding] = verdicts(source)[MUTUAL_EXCLUSION].violations
    assert "still wrote the source (users) at step 10" in finding.message
    # Client 1's late write lands where client 2 never wrote: no order of the two to break.
    elsewhere = late_holder(
        their_write=lambda h, b: sql(h, 2, b, update, "b", "u1"),
        late_write=lambda h, a: redis(h, 1, a, "SETEX", "user:u1", 3600, entry("u1.v0"), reply=True),
    )
    assert verdicts(elsewhere)[MUTUAL_EXCLUSION].status == "ok"


def test_writes_landing_in_the_order_the_lock_was_taken_are_fine():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    a = h.at(0).invoke(1, "read", "u1")
    redis(h, 1, a, "SET", "lock:u1", "tok-a", "NX", "EX", 10, reply=True)
    b = h.at(11).invoke(2, "read", "u1")
    redis(h, 2, b, "SET", "lock:u1", "tok-b", "NX", "EX", 10, reply=True)
    redis(h, 1, a, "SETEX", "user:u1", 3600, entry("u1.v0"), reply=True)  # before client 2's: as if it left first
    redis(h, 2, b, "SETEX", "user:u1", 3600, entry("u1.v0"), reply=True)
    redis(h, 1, a, "DEL", "lock:u1", reply=1)
    h.complete(a, value="u1.v0")
    h.complete(b, value="u1.v0")
    verdict = verdicts(h.build())[MUTUAL_EXCLUSION]
    assert verdict.status == "ok" and verdict.figures["holders_past_expiry"] == 1


def test_a_lock_without_ttl_taken_while_held_names_the_release_that_freed_it():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    a = h.invoke(1, "read", "u1")
    redis(h, 1, a, "SET", "lock:u1", "1", "NX", reply=True)
    c = h.invoke(3, "read", "u1")
    redis(h, 3, c, "DEL", "lock:u1", reply=1)  # client 3 never held it
    h.complete(c, value="u1.v0")
    b = h.invoke(2, "read", "u1")
    redis(h, 2, b, "SET", "lock:u1", "1", "NX", reply=True)
    redis(h, 2, b, "SETEX", "user:u1", 3600, entry("u1.v0"), reply=True)
    redis(h, 1, a, "SETEX", "user:u1", 3600, entry("u1.v0"), reply=True)
    h.complete(a, value="u1.v0")
    h.complete(b, value="u1.v0")
    found = verdicts(h.build())
    [overlap] = found[MUTUAL_EXCLUSION].violations
    assert "(no TTL)" in overlap.message and "after client 3's release at step 5 removed client 1's lock" in overlap.message
    assert "expired" not in overlap.message
    [foreign] = found[FOREIGN_RELEASE].violations
    assert "client 3 did not hold lock:u1 then" in foreign.message


# -- release by a non-owner -----------------------------------------------------------------


def test_a_bare_del_removing_the_next_holders_value_is_a_release_by_a_non_owner():
    history = late_holder(late_write=lambda h, a: None, release_reply=1)
    verdict = verdicts(history)[FOREIGN_RELEASE]
    [finding] = verdict.violations
    assert finding.message.startswith("client 1 released lock:u1 at step 10 (DEL lock:u1), but the value there was client 2's (set at step 8")
    assert "own lock had expired at t=10 s" in finding.message
    assert "bare DEL" in finding.message and "compare-and-delete" in finding.message
    assert finding.steps == (8, 10)
    assert verdict.figures["foreign_releases"] == 1


def test_a_compare_and_delete_that_returned_0_releases_nothing():
    history = late_holder(late_write=lambda h, a: None, release="script", release_reply=0)
    assert verdicts(history)[FOREIGN_RELEASE].status == "ok"
    # The same call replying 1 removed client 2's value (say both used one token): found.
    removed = late_holder(late_write=lambda h, a: None, release="script", release_reply=1)
    [finding] = verdicts(removed)[FOREIGN_RELEASE].violations
    assert "both set the same token" in finding.message


def test_a_bare_del_of_ones_own_lock_is_fine():
    h = HistoryBuilder()
    a = h.invoke(1, "read", "u1")
    redis(h, 1, a, "SET", "lock:u1", "1", "NX", "EX", 10, reply=True)
    redis(h, 1, a, "DEL", "lock:u1", reply=1)
    h.complete(a, value=None)
    found = verdicts(h.build())
    assert found[FOREIGN_RELEASE].status == "ok" and found[MUTUAL_EXCLUSION].figures["lock_holds"] == 1


def test_redis_py_lock_calls_are_understood():
    """``r.lock(name, timeout=10)``: ``SET name token NX PX 10000``, released by ``EVALSHA``
    of its compare-and-delete (``KEYS[1]`` the name, ``ARGV[1]`` the token), which replies 0
    when the token is gone; ``extend`` is a script with ``token, ms, replace``."""
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    a = h.at(0).invoke(1, "write", "u1", "u1.v1")
    redis(h, 1, a, "SET", "lock:u1", "aa" * 16, "NX", "PX", 10000, reply=True)
    redis(h, 1, a, "EVALSHA", "ee" * 20, 1, "lock:u1", "aa" * 16, 5000, 0, keys=(2,), reply=1)  # extend by 5 s: t=15
    b = h.at(16).invoke(2, "write", "u1", "u1.v2")
    redis(h, 2, b, "SET", "lock:u1", "bb" * 16, "NX", "PX", 10000, reply=True)
    redis(h, 2, b, "SET", "user:u1", entry("u1.v2"), reply=True)
    h.at(18)
    redis(h, 1, a, "SET", "user:u1", entry("u1.v1"), reply=True)
    redis(h, 1, a, "EVALSHA", SHA, 1, "lock:u1", "aa" * 16, keys=(2,), reply=0)
    h.complete(a, status="error", error="LockNotOwnedError")
    redis(h, 2, b, "EVALSHA", SHA, 1, "lock:u1", "bb" * 16, keys=(2,), reply=1)
    h.complete(b)
    h.probe("u1", "u1.v1", "u1.v1")
    found = verdicts(h.build())
    [overlap] = found[MUTUAL_EXCLUSION].violations
    assert "(expires at t=15 s)" in overlap.message and "3 s after its lock expired" in overlap.message
    assert found[MUTUAL_EXCLUSION].figures["longest_past_expiry"] == 3
    assert found[FOREIGN_RELEASE].status == "ok" and found[LEAK].status == "ok"


# -- leaks ----------------------------------------------------------------------------------


def _taken(*, ttl=(), release=False, crash=False, probe=True):
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    a = h.at(0).invoke(1, "read", "u1")
    redis(h, 1, a, "SET", "lock:u1", "1", "NX", *ttl, reply=True)
    if release:
        redis(h, 1, a, "DEL", "lock:u1", reply=1)
    h.at(1).complete(a, status="indeterminate" if crash else "ok", value=None if crash else "u1.v0")
    if probe:
        redis(h, 3, None, "GET", "user:u1", actor="probe")
        h.probe("u1", "u1.v0", "u1.v0")
    return verdicts(h.build())[LEAK]


def test_a_lock_never_released_and_without_ttl_leaks():
    verdict = _taken()
    [finding] = verdict.violations
    assert "lock:u1 was still held at quiescence (step 5, t=1 s): client 1 took it at step 3 and never released it" in finding.message
    assert "no TTL" in finding.message and verdict.figures["leaked_locks"] == 1


def test_a_lock_left_with_a_ttl_leaks_until_it_expires():
    [finding] = _taken(ttl=("EX", 10)).violations
    assert "until it expires at t=10 s (9 s on)" in finding.message


def test_a_crashed_holders_ttl_is_its_recovery_but_no_ttl_is_a_leak():
    recovered = _taken(ttl=("EX", 10), crash=True)
    assert recovered.status == "ok" and "crashed holding it" in recovered.findings[0].message
    assert _taken(crash=True).status == "violated"


def test_a_released_lock_does_not_leak_and_no_quiescence_is_unknown():
    assert _taken(release=True).status == "ok"
    assert _taken(probe=False).status == "unknown"


# -- locks the target names -----------------------------------------------------------------


def _scripted_lock(locks=()):
    """A lock taken and released by scripts alone: no SET NX tells it is one."""
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    a = h.at(0).invoke(1, "read", "u1")
    redis(h, 1, a, "EVALSHA", "11" * 20, 1, "mutex:u1", "tok-a", keys=(2,), reply=1)
    b = h.at(5).invoke(2, "read", "u1")
    redis(h, 2, b, "DEL", "mutex:u1", reply=1)
    h.complete(b, value="u1.v0")
    h.complete(a, value="u1.v0")
    return History.of(h.events, locks=locks)


def test_target_locks_name_keys_the_commands_cannot_and_survive_a_saved_history():
    assert key_roles(_scripted_lock()).of("mutex:u1") != LOCK
    assert verdicts(_scripted_lock())[FOREIGN_RELEASE].status == "ok"
    history = _scripted_lock(locks=("mutex:*",))
    assert key_roles(history).of("mutex:u1") == LOCK
    again = History.from_json(history.to_json())
    assert again == history and again.locks == ("mutex:*",)
    assert verdicts(again)[FOREIGN_RELEASE].status == "violated"
    assert check(again, Contract.strict()) == check(history, Contract.strict())
    assert "locks" not in json.loads(_scripted_lock().to_json())  # written only when named


def test_target_locks_are_validated():
    build = TARGETS["seed-lock"].build
    assert Target(name="t", build=build, locks="lock:*").locks == ("lock:*",)
    with pytest.raises(TargetError, match=r"locks=\(1,\) must be key names or patterns"):
        Target(name="t", build=build, locks=(1,))


# -- explorations ---------------------------------------------------------------------------


class _Figures:
    """Keeps the largest of each lock figure over every example explored."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    @hookimpl
    def cachecheck_check(self, history, contract):
        for verdict in lock_safety(history):
            for name, value in verdict.figures.items():
                self.seen[name] = max(self.seen.get(name, 0.0), value)


def test_the_seeds_lock_fails_in_lock_terms(servers):
    """Its bare DEL removes the lock of the client that took it after it expired.

    Four decisions at least: client 1 takes the lock and pauses, time passes, client 2 takes it
    and pauses inside, client 1 goes on and releases (the drain finishes the newest operation
    first, so without that last decision client 2 leaves before client 1's DEL).
    """
    with pytest.raises(CachecheckFailure) as info:
        explore(TARGETS["seed-lock"], Budget(examples=600, seed=5), servers=servers)
    properties = info.value.report.properties
    assert "violated" in (properties[MUTUAL_EXCLUSION], properties[FOREIGN_RELEASE])
    assert count_decisions(info.value.violation.trace) <= 5
    story = str(info.value)
    assert "lock:user:u" in story and ("took" in story or "released" in story) and "lock" in story.split("\n")[2]


def test_the_fenced_token_lock_passes_while_holders_outlive_their_locks(servers):
    figures = _Figures()
    report = explore(TARGETS["fenced-token-lock"], Budget(examples=300, seed=2), plugins=[figures], servers=servers)
    assert report.passed
    for name in (MUTUAL_EXCLUSION, FOREIGN_RELEASE, LEAK):
        assert report.properties[name] == "ok"
    # The fence was put to the test: some holder worked on after its lock expired.
    assert figures.seen["holders_past_expiry"] >= 1 and figures.seen["longest_past_expiry"] > 0


@pytest.mark.slow
def test_the_fenced_token_lock_passes_2000_examples_with_slow_calls():
    """Slow calls (5 s, 60 s, against a 10 s lock) let holders outlive their locks mid-write."""
    slow = dataclasses.replace(TARGETS["fenced-token-lock"], faults=("slow",), slow=(5, 60))
    report = explore(slow, Budget(examples=2000, seed=5))
    assert report.passed and report.examples >= 2000
    assert report.holders_past_expiry > 0  # the fence was put to the test


def test_the_unfenced_token_lock_breaks_mutual_exclusion_through_expiry(servers):
    with pytest.raises(CachecheckFailure) as info:
        explore(TARGETS["unfenced-token-lock"], Budget(examples=300, seed=2), servers=servers)
    properties = info.value.report.properties
    assert properties[MUTUAL_EXCLUSION] == "violated" and properties[FOREIGN_RELEASE] == "ok"
    story = str(info.value)
    assert "[mutual-exclusion]" in story and "after its lock expired" in story and "fencing token" in story


def test_the_bare_del_token_lock_releases_another_clients_lock(servers):
    with pytest.raises(CachecheckFailure) as info:
        explore(TARGETS["bare-del-token-lock"], Budget(examples=300, seed=2), servers=servers)
    assert info.value.report.properties[FOREIGN_RELEASE] == "violated"
    story = str(info.value)
    assert "[lock-release-by-non-owner]" in story and "bare DEL" in story and "but the value there was client" in story


class RedisPyLockLayer:
    """Writes under redis-py's ``r.lock()``, a lost lock's release error swallowed."""

    def __init__(self, r, connection):
        self.r, self.db = r, SeedDatabase(connection)

    def get_user(self, user_id):
        return self.db.query("SELECT * FROM users WHERE id = %s", user_id)

    def update_user(self, user_id, data):
        from redis.exceptions import LockNotOwnedError

        lock = self.r.lock(f"lock:user:{user_id}", timeout=10, sleep=0.1)
        lock.acquire()
        try:
            self.db.execute("UPDATE users SET name=%s WHERE id=%s", data["name"], user_id)
        finally:
            try:
                lock.release()
            except LockNotOwnedError:
                pass


def test_a_layer_on_redis_py_lock_is_judged_unchanged(servers):
    with pytest.raises(CachecheckFailure) as info:
        explore(seed_interface("redis-py-lock", RedisPyLockLayer), Budget(examples=500, seed=1), servers=servers)
    assert info.value.report.properties[MUTUAL_EXCLUSION] == "violated"
    story = str(info.value)
    assert "the source (users)" in story and "after its lock expired" in story

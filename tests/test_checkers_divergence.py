"""divergence: probes at quiescence, how long the cache stays wrong, and the story."""

import math

from _histories import HistoryBuilder

from pytest_cachecheck.checkers.divergence import divergence
from pytest_cachecheck.contract import Contract

STRICT = Contract.strict()
FILL = """SETEX user:u1 3600 '{"name": "u1.v0"}'"""


def _race(*, invalidations=("DEL user:u1",), fill=FILL, source_result="[('u1.v0',)]", heal_after=3600.0):
    """The classic cache-aside race: client 1 misses and reads the source, client 2 updates the
    source and invalidates, client 1 then fills the cache with what it read."""
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")  # steps 0-1
    read = h.at(10, step=2).invoke(1, "read", "u1")
    h.call(1, read, "redis", "GET user:u1", "None")  # 3
    h.call(1, read, "sql", "SELECT name FROM users WHERE id = 'u1'", source_result)  # 4
    write = h.at(11).invoke(2, "write", "u1", "u1.v1")  # 5
    h.call(2, write, "sql", "UPDATE users SET name = 'u1.v1' WHERE id = 'u1'", "1 row")  # 6
    h.call(2, write, "sql", "COMMIT", "None")  # 7
    h.at(step=10 - len(invalidations))
    for command in invalidations:
        h.call(2, write, "redis", command, "1")  # ..., 9
    if fill is not None:
        h.call(1, read, "redis", fill, "True")  # 10
    else:
        h.at(step=11)
    h.complete(read, value="u1.v0")  # 11
    h.complete(write)  # 12
    h.at(20).probe("u1", "u1.v0", "u1.v1")  # 13
    if heal_after is not None:  # the entry, filled at t=11 when u1.v1 was acknowledged, expires
        h.at(11 + heal_after).probe("u1", "u1.v1", "u1.v1")  # 14
    return h


def test_no_probe_means_the_run_never_reached_quiescence():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    verdict = divergence(h.build(), STRICT)
    assert verdict.status == "unknown"
    assert verdict.findings == () and dict(verdict.figures) == {}


def test_agreeing_probes_are_ok():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.setup("u2", None)
    h.probe("u1", "u1.v0", "u1.v0")
    h.probe("u2", None, None)
    verdict = divergence(h.build(), STRICT)
    assert verdict.status == "ok" and verdict.findings == ()
    assert verdict.figures == {"probed_keys": 2, "diverged_keys": 0, "longest_divergence": 0.0}


def test_the_story_of_a_stale_fill():
    verdict = divergence(_race().build(), STRICT)
    assert verdict.status == "violated"
    [finding] = verdict.findings
    assert finding.message == (
        "client 1 read the source (u1.v0) at step 4, before client 2's write of u1.v1; "
        "client 2 updated the source (step 7) and invalidated the cache (DEL user:u1, step 9); "
        "client 1 then filled the cache with u1.v0 at step 10 "
        """(SETEX user:u1 3600 '{"name": "u1.v0"}'). """
        "The cache disagrees with the source (u1.v1) until the entry expires in 3600 s."
    )
    assert finding.key == "u1"
    assert finding.steps == (4, 6, 7, 9, 10, 13)
    assert finding.figures == {"persists": 3600.0}
    assert verdict.figures == {"probed_keys": 1, "diverged_keys": 1, "longest_divergence": 3600.0}


def test_divergence_without_expiry_persists_forever():
    verdict = divergence(_race(fill="SET user:u1 u1.v0", heal_after=None).build(), Contract.bounded(10**9))
    assert verdict.status == "violated"
    [finding] = verdict.findings
    assert finding.figures["persists"] == math.inf
    assert verdict.figures["longest_divergence"] == math.inf
    assert finding.message.endswith(
        "filled the cache with u1.v0 at step 10 (SET user:u1 u1.v0). "
        "The cache disagrees with the source (u1.v1) and never heals on its own (no expiry)."
    )


def test_persistence_is_measured_to_the_first_agreeing_probe():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.write(1, "u1", "u1.v1")
    h.at(20).probe("u1", "u1.v0", "u1.v1")
    h.at(50).probe("u1", "u1.v0", "u1.v1")  # another entry expired; this one still wrong
    h.at(80).probe("u1", "u1.v1", "u1.v1")
    h.at(90).probe("u1", "u1.v1", "u1.v1")
    [finding] = divergence(h.build(), STRICT).findings
    assert finding.figures == {"persists": 80.0}  # from u1.v1's acknowledgement at t=0


def test_strict_contract_rejects_even_a_divergence_that_heals_at_once():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(20).write(1, "u1", "u1.v1")
    h.probe("u1", "u1.v0", "u1.v1")
    h.probe("u1", "u1.v1", "u1.v1")  # the entry expired at this very instant
    verdict = divergence(h.build(), STRICT)
    assert verdict.findings[0].figures == {"persists": 0.0}
    assert verdict.status == "violated"


def test_bounded_contract_allows_divergence_that_heals_in_time():
    history = _race().build()
    within = divergence(history, Contract.bounded(3600))
    assert within.status == "ok"
    assert [f.violates for f in within.findings] == [False]
    beyond = divergence(history, Contract.bounded(3599))
    assert beyond.status == "violated"


def test_keys_are_probed_separately():
    h = _race()
    h.at(3700).probe("u2", "u2.v0", "u2.v0")
    verdict = divergence(h.build(), STRICT)
    assert [f.key for f in verdict.findings] == ["u1"]
    assert verdict.figures["probed_keys"] == 2


def test_a_write_that_never_touched_the_cache():
    [finding] = divergence(_race(invalidations=()).build(), STRICT).findings
    assert (
        "client 2 updated the source (step 7) without touching the cache; client 1 then filled"
        in finding.message
    )


def test_several_invalidations_are_listed_and_long_ones_clipped():
    long_key = "DEL " + "k" * 100
    [finding] = divergence(_race(invalidations=("DEL user:u1", long_key)).build(), STRICT).findings
    clipped = long_key[:77] + "..."
    assert f"invalidated the cache (DEL user:u1; {clipped}, steps 8, 9);" in finding.message


def test_plain_sentence_when_the_calls_are_missing():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(2).write(2, "u1", "u1.v1")  # steps 2-3
    h.at(5).probe("u1", "u1.v0", "u1.v1")
    [finding] = divergence(h.build(), STRICT).findings
    assert finding.message == (
        "a fresh read of u1 at quiescence returns u1.v0 but the source holds u1.v1 "
        "(client 2's write, acknowledged at step 3). "
        "The cache disagrees with the source (u1.v1) and never heals on its own (no expiry)."
    )


def test_plain_sentence_names_the_last_cache_write_when_the_source_read_is_missing():
    # The fill's value never appears in a result of the filler's SQL statements.
    [finding] = divergence(_race(source_result="[('u1.v01',)]").build(), STRICT).findings
    assert finding.message == (
        "a fresh read of u1 at quiescence returns u1.v0 but the source holds u1.v1 "
        "(client 2's write, acknowledged at step 12); the last cache write carrying u1.v0 was "
        """client 1's SETEX user:u1 3600 '{"name": "u1.v0"}' at step 10. """
        "The cache disagrees with the source (u1.v1) until the entry expires in 3600 s."
    )


def test_the_fill_is_a_whole_token_match():
    # Client 1 only wrote u1.v01 (another value) to the cache, never u1.v0.
    [finding] = divergence(_race(fill="SET user:u1 u1.v01").build(), STRICT).findings
    assert finding.message.startswith("a fresh read of u1 at quiescence returns u1.v0")
    assert "last cache write" not in finding.message


def test_the_source_read_must_be_the_fillers_own():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.call(3, None, "sql", "SELECT name FROM users", "[('u1.v0',)]")  # someone else's read
    w = h.invoke(2, "write", "u1", "u1.v1")
    h.call(2, w, "sql", "UPDATE users SET name = 'u1.v1'", "1 row")
    h.complete(w)
    fill = h.call(1, None, "redis", "SET user:u1 u1.v0", "True")
    h.probe("u1", "u1.v0", "u1.v1")
    [finding] = divergence(h.build(), STRICT).findings
    assert finding.message.startswith("a fresh read of u1 at quiescence")
    assert f"the last cache write carrying u1.v0 was client 1's SET user:u1 u1.v0 at step {fill}" in finding.message


def test_no_race_is_told_when_the_source_read_came_after_the_write():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.write(2, "u1", "u1.v1")  # steps 2-3, acknowledged first
    r = h.invoke(1, "read", "u1")
    h.call(1, r, "sql", "SELECT name FROM replica.users", "[('u1.v0',)]")  # a lagging replica
    h.call(1, r, "redis", "SET user:u1 u1.v0", "True")  # step 6
    h.complete(r, value="u1.v0")
    h.probe("u1", "u1.v0", "u1.v1")
    [finding] = divergence(h.build(), STRICT).findings
    assert finding.message.startswith(
        "a fresh read of u1 at quiescence returns u1.v0 but the source holds u1.v1 (client 2's "
        "write, acknowledged at step 3); the last cache write carrying u1.v0 was client 1's "
        "SET user:u1 u1.v0 at step 6."
    )


def test_a_cached_absence_is_told_plainly():
    h = HistoryBuilder()
    h.setup("u1", None)
    h.at(1).write(2, "u1", "u1.v1")  # steps 2-3
    h.at(5).probe("u1", None, "u1.v1")
    h.at(31).probe("u1", "u1.v1", "u1.v1")  # 30 s after u1.v1 was acknowledged
    [finding] = divergence(h.build(), STRICT).findings
    assert finding.message == (
        "a fresh read of u1 at quiescence returns nothing but the source holds u1.v1 "
        "(client 2's write, acknowledged at step 3). "
        "The cache disagrees with the source (u1.v1) until the entry expires in 30 s."
    )


def test_a_deleted_key_still_cached():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.delete(2, "u1")  # steps 2-3
    h.probe("u1", "u1.v0", None)
    [finding] = divergence(h.build(), STRICT).findings
    assert finding.message.startswith(
        "a fresh read of u1 at quiescence returns u1.v0 but the source holds nothing "
        "(client 2's delete, acknowledged at step 3)."
    )

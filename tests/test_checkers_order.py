"""The shared order helpers: which write a read saw, and what supersedes what."""

from _histories import HistoryBuilder

from pytest_cachecheck.checkers._order import mentions, producers, seen_by, supersedes, writes_of
from pytest_cachecheck.checkers._words import clip, got, who, write_of


def _ops():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.setup("u2", "u2.v0")
    h.write(1, "u1", "u1.v1")
    h.read(2, "u1", "u1.v1")
    h.delete(1, "u1")
    first = h.invoke(1, "write", "u1", "u1.v2")
    second = h.invoke(2, "write", "u1", "u1.v3")  # concurrent with the first
    h.complete(first)
    h.complete(second)
    return {op.written if op.is_write else f"read{op.op}": op for op in h.build().operations()}, h


def test_writes_of_a_key_include_setup_and_deletes_but_not_reads_or_other_keys():
    ops, h = _ops()
    writes = writes_of(h.build().operations(), "u1")
    assert [(w.client, w.kind, w.written) for w in writes] == [
        (0, "write", "u1.v0"),
        (1, "write", "u1.v1"),
        (1, "delete", None),
        (1, "write", "u1.v2"),
        (2, "write", "u1.v3"),
    ]


def test_producers_finds_the_write_of_a_value():
    ops, h = _ops()
    writes = writes_of(h.build().operations(), "u1")
    assert producers(writes, "u1.v1") == [ops["u1.v1"]]
    assert producers(writes, "u2.v0") == []
    assert [w.kind for w in producers(writes, None)] == ["delete"]


def test_a_read_cannot_have_seen_a_write_that_began_after_it_returned():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.delete(1, "u1")
    read = h.read(2, "u1", None)
    h.delete(3, "u1")
    ops = h.build().operations()
    writes = writes_of(ops, "u1")
    [seen] = seen_by(ops[read - 1], writes)
    assert seen.client == 1
    assert len(producers(writes, None)) == 2


def test_supersedes_requires_completion_before_invocation_on_the_same_key():
    ops, _ = _ops()
    assert supersedes(ops["u1.v1"], ops["u1.v0"])
    assert not supersedes(ops["u1.v0"], ops["u1.v1"])
    assert not supersedes(ops["u1.v2"], ops["u1.v3"])  # concurrent writes are unordered
    assert not supersedes(ops["u1.v3"], ops["u1.v2"])
    assert not supersedes(ops["u1.v1"], ops["u2.v0"])  # another key
    assert not supersedes(ops["read4"], ops["u1.v0"])  # a read is not a write


def test_mentions_matches_whole_tokens_only():
    assert mentions("""SETEX user:u1 3600 '{"name": "u1.v1"}'""", "u1.v1")
    assert mentions("u1.v1", "u1.v1")
    assert not mentions("SET user:u1 u1.v10", "u1.v1")
    assert not mentions("SET user:u1 xu1.v1", "u1.v1")
    assert not mentions("SET user:u1 u1.v1.2", "u1.v1")
    assert not mentions("SET user:u1 au1xv1", "u1.v1")  # the dot is literal, not a wildcard


def test_words_name_setup_initial_values_and_deletes():
    ops, _ = _ops()
    assert who(0) == "setup" and who(3) == "client 3"
    assert write_of(ops["u1.v1"]) == "client 1's write of u1.v1"
    assert write_of(ops[None]) == "client 1's delete of u1"
    assert write_of(ops["u1.v0"]) == "setup's write of u1.v0"
    assert got("u1.v0", [ops["u1.v0"]]) == "the initial value u1.v0"
    assert got("u1.v1", [ops["u1.v1"]]) == "u1.v1"
    assert got(None, [ops[None]]) == "nothing"
    assert clip("x" * 100) == "x" * 77 + "..." and clip("short") == "short"

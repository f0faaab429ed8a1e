"""stale-read and phantom-read."""

import pytest
from _histories import HistoryBuilder

from pytest_cachecheck.checkers.staleness import phantom_reads, stale_reads
from pytest_cachecheck.contract import Contract

STRICT = Contract.strict()


def _pinned():
    """Client 3 wrote u1.v0; client 1 wrote u1.v1 (acknowledged at step 9, t=2); client 2 then
    read u1.v0 at step 14, t=12."""
    h = HistoryBuilder()
    h.at(0, step=2).write(3, "u1", "u1.v0")
    w = h.at(1, step=8).invoke(1, "write", "u1", "u1.v1")
    h.at(2).complete(w)
    h.at(12, step=14).read(2, "u1", "u1.v0")
    return h.build()


def test_stale_read_message_and_figures():
    verdict = stale_reads(_pinned(), STRICT)
    assert verdict.status == "violated"
    [finding] = verdict.findings
    assert finding.message == (
        "client 2 read u1 at step 14 (t=12 s) and got u1.v0, but client 1's write of u1.v1 "
        "was acknowledged at step 9 (t=2 s): 10 s stale, 1 write behind."
    )
    assert finding.key == "u1"
    assert finding.steps == (9, 14, 15)
    assert finding.figures == {"age": 10.0, "lag": 1}
    assert verdict.figures == {"reads": 1, "stale_reads": 1, "stale_window": 10.0}


def test_initial_value_is_named_as_such():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(1).write(1, "u1", "u1.v1")
    h.at(4).read(2, "u1", "u1.v0")
    [finding] = stale_reads(h.build(), STRICT).findings
    assert finding.message == (
        "client 2 read u1 at step 4 (t=4 s) and got the initial value u1.v0, but client 1's write "
        "of u1.v1 was acknowledged at step 3 (t=1 s): 3 s stale, 1 write behind."
    )


def test_read_of_the_newest_value_is_not_stale():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(1).write(1, "u1", "u1.v1")
    h.at(4).read(2, "u1", "u1.v1")
    verdict = stale_reads(h.build(), STRICT)
    assert verdict.status == "ok" and verdict.findings == ()
    assert verdict.figures == {"reads": 1, "stale_reads": 0, "stale_window": 0.0}


def test_read_concurrent_with_a_write_is_never_stale():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    w = h.at(1).invoke(1, "write", "u1", "u1.v1")
    r = h.at(2).invoke(2, "read", "u1")
    h.at(3).complete(w)  # acknowledged after the read began
    h.at(9).complete(r, value="u1.v0")
    assert stale_reads(h.build(), STRICT).findings == ()


def test_concurrent_writes_are_unordered():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    first = h.at(1).invoke(1, "write", "u1", "u1.v1")
    second = h.invoke(2, "write", "u1", "u1.v2")
    h.at(2).complete(first)
    h.complete(second)
    h.at(5).read(3, "u1", "u1.v1")
    h.read(3, "u1", "u1.v2")
    h.read(4, "u1", "u1.v1")
    verdict = stale_reads(h.build(), STRICT)
    assert verdict.findings == ()
    assert verdict.figures["reads"] == 3


def test_age_counts_from_the_first_acknowledgement_and_lag_counts_every_newer_write():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(3).write(1, "u1", "u1.v1")
    h.at(5).write(2, "u1", "u1.v2")
    h.at(6).delete(1, "u1")
    h.at(10).read(3, "u1", "u1.v0")
    [finding] = stale_reads(h.build(), STRICT).findings
    assert finding.figures == {"age": 7.0, "lag": 3}
    assert "client 1's write of u1.v1 was acknowledged at step 3 (t=3 s)" in finding.message
    assert finding.message.endswith("7 s stale, 3 writes behind.")


@pytest.mark.parametrize("status", ["error", "indeterminate", None])
def test_only_acknowledged_writes_make_a_read_stale(status):
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    w = h.at(1).invoke(1, "write", "u1", "u1.v1")
    if status is not None:
        h.complete(w, status=status)
    h.at(4).read(2, "u1", "u1.v0")
    assert stale_reads(h.build(), STRICT).findings == ()


def test_reads_that_did_not_succeed_are_not_checked():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(1).write(1, "u1", "u1.v1")
    r = h.at(4).invoke(2, "read", "u1")
    h.complete(r, status="error", value="u1.v0", error="TimeoutError()")
    h.invoke(3, "read", "u1")  # still in flight
    verdict = stale_reads(h.build(), STRICT)
    assert verdict.findings == () and verdict.figures["reads"] == 0


def test_bounded_contract_keeps_young_stale_reads_as_figures():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(1).write(1, "u1", "u1.v1")
    h.at(6).read(2, "u1", "u1.v0")  # 5 s stale
    history = h.build()

    within = stale_reads(history, Contract.bounded(10))
    assert within.status == "ok"
    assert [f.violates for f in within.findings] == [False]
    assert within.figures["stale_window"] == 5.0

    beyond = stale_reads(history, Contract.bounded(4))
    assert beyond.status == "violated"
    assert [f.violates for f in beyond.findings] == [True]

    exactly = stale_reads(history, Contract.bounded(5))
    assert exactly.status == "ok"


def test_strict_contract_rejects_even_a_zero_second_stale_read():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(1).write(1, "u1", "u1.v1")
    h.read(2, "u1", "u1.v0")  # same virtual instant, but after the acknowledgement
    verdict = stale_reads(h.build(), STRICT)
    assert verdict.status == "violated"
    assert verdict.findings[0].figures["age"] == 0.0


def test_read_of_the_initial_value_after_a_delete_is_stale():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(1).delete(1, "u1")
    h.at(2).read(2, "u1", "u1.v0")
    [finding] = stale_reads(h.build(), STRICT).findings
    assert "but client 1's delete of u1 was acknowledged at step 3" in finding.message


def test_read_of_nothing_is_stale_only_against_every_delete_it_may_have_seen():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(1).delete(1, "u1")
    h.at(2).write(1, "u1", "u1.v1")
    h.at(3).read(2, "u1", None)
    [finding] = stale_reads(h.build(), STRICT).findings
    assert "got nothing, but client 1's write of u1.v1" in finding.message

    # A second delete, concurrent with the read, may be the one it saw.
    d = h.at(4).invoke(3, "delete", "u1")
    h.read(2, "u1", None)
    h.complete(d)
    verdict = stale_reads(h.build(), STRICT)
    assert len(verdict.findings) == 1  # only the first read
    assert verdict.figures["reads"] == 2


def test_keys_are_judged_separately():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.setup("u2", "u2.v0")
    h.at(1).write(1, "u2", "u2.v1")
    h.at(2).read(2, "u1", "u1.v0")
    assert stale_reads(h.build(), STRICT).findings == ()


# phantom-read


def test_a_value_no_write_produced_is_a_phantom():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(1).read(1, "u1", "zz")
    verdict = phantom_reads(h.build())
    assert verdict.status == "violated"
    [finding] = verdict.findings
    assert finding.message == "client 1 read u1 and got 'zz', which no write of u1 produced."
    assert finding.steps == (2, 3)
    assert verdict.figures == {"reads": 1, "phantom_reads": 1}
    # A phantom read is not attributable, so it is no stale read.
    assert stale_reads(h.build(), STRICT).findings == ()


def test_another_keys_value_is_a_phantom():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.setup("u2", "u2.v0")
    h.read(1, "u1", "u2.v0")
    assert len(phantom_reads(h.build()).findings) == 1


def test_nothing_is_a_phantom_when_the_key_existed_and_was_never_deleted():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.write(1, "u1", "u1.v1")
    h.read(2, "u1", None)
    [finding] = phantom_reads(h.build()).findings
    assert finding.message == "client 2 read u1 and got None, which no write of u1 produced."


@pytest.mark.parametrize("how", ["deleted", "absent at start", "no setup recorded"])
def test_nothing_is_legitimate_when_some_write_stored_it(how):
    h = HistoryBuilder()
    if how == "deleted":
        h.setup("u1", "u1.v0")
        h.delete(1, "u1")
    elif how == "absent at start":
        h.setup("u1", None)
        h.write(1, "u1", "u1.v1")
    else:
        h.write(1, "u1", "u1.v1")
    h.read(2, "u1", None)
    verdict = phantom_reads(h.build())
    assert verdict.status == "ok" and verdict.findings == ()


def test_a_value_of_a_failed_write_is_no_phantom():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    w = h.invoke(1, "write", "u1", "u1.v1")
    h.complete(w, status="error", error="ConnectionError()")
    h.read(2, "u1", "u1.v1")
    assert phantom_reads(h.build()).findings == ()

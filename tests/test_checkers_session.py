"""read-your-writes and monotonic-reads."""

from _histories import HistoryBuilder

from pytest_cachecheck.checkers.session import monotonic_reads, read_your_writes
from pytest_cachecheck.contract import Contract

STRICT = Contract.strict()


def _reads_back_its_old_value(writer=1, reader=1):
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.at(1).write(writer, "u1", "u1.v1")  # steps 2-3
    h.at(2).read(reader, "u1", "u1.v0")  # steps 4-5
    return h.build()


def test_read_your_writes_violation():
    verdict = read_your_writes(_reads_back_its_old_value(), STRICT)
    assert verdict.status == "violated"
    [finding] = verdict.findings
    assert finding.message == (
        "client 1 read u1 at step 4 and got the initial value u1.v0, although its own write of "
        "u1.v1 had been acknowledged at step 3."
    )
    assert finding.steps == (3, 4, 5)
    assert verdict.figures == {"reads": 1, "own_writes_missed": 1}


def test_another_clients_write_is_not_a_session_matter():
    verdict = read_your_writes(_reads_back_its_old_value(writer=2, reader=1), STRICT)
    assert verdict.status == "ok" and verdict.findings == ()


def test_reading_your_own_write_or_a_newer_one_is_fine():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.write(1, "u1", "u1.v1")
    h.read(1, "u1", "u1.v1")
    h.write(2, "u1", "u1.v2")
    h.read(1, "u1", "u1.v2")
    assert read_your_writes(h.build(), STRICT).findings == ()


def test_own_write_concurrent_with_the_read_or_unacknowledged_does_not_count():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    w = h.invoke(1, "write", "u1", "u1.v1")
    h.read(2, "u1", "u1.v0")
    h.complete(w, status="error", error="ConnectionError()")
    h.read(1, "u1", "u1.v0")
    assert read_your_writes(h.build(), STRICT).findings == ()


def test_own_delete_then_reading_the_old_value_names_the_delete():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.write(1, "u1", "u1.v1")
    h.delete(1, "u1")
    h.read(1, "u1", "u1.v1")
    [finding] = read_your_writes(h.build(), STRICT).findings
    assert "got u1.v1, although its own delete of u1 had been acknowledged at step 5." in finding.message


def test_session_findings_are_figures_when_the_contract_does_not_promise_them():
    contract = Contract(max_staleness=0, session_guarantees=False)
    verdict = read_your_writes(_reads_back_its_old_value(), contract)
    assert verdict.status == "ok"
    assert [f.violates for f in verdict.findings] == [False]


def _goes_back_in_time():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")  # steps 0-1
    h.write(2, "u1", "u1.v1")  # steps 2-3
    h.read(1, "u1", "u1.v1")  # steps 4-5
    h.read(1, "u1", "u1.v0")  # steps 6-7
    return h


def test_monotonic_reads_violation():
    verdict = monotonic_reads(_goes_back_in_time().build(), STRICT)
    assert verdict.status == "violated"
    [finding] = verdict.findings
    assert finding.message == (
        "client 1 read u1 at step 4 and got u1.v1, then read it again at step 6 and went back to "
        "the initial value u1.v0."
    )
    assert finding.steps == (4, 5, 6, 7)
    assert verdict.figures == {"reads": 2, "backward_reads": 1}


def test_monotonic_reads_off_contract_is_reported_not_violated():
    verdict = monotonic_reads(_goes_back_in_time().build(), Contract.bounded(60))
    assert verdict.status == "ok"
    assert [f.violates for f in verdict.findings] == [False]


def test_reads_by_different_clients_or_of_different_keys_are_not_compared():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.setup("u2", "u2.v0")
    h.write(2, "u1", "u1.v1")
    h.read(1, "u1", "u1.v1")
    h.read(3, "u1", "u1.v0")  # another client
    h.read(1, "u2", "u2.v0")  # another key
    assert monotonic_reads(h.build(), STRICT).findings == ()


def test_overlapping_reads_are_not_ordered():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.write(2, "u1", "u1.v1")
    first = h.invoke(1, "read", "u1")
    second = h.invoke(1, "read", "u1")  # e.g. a background refresh of the same process
    h.complete(first, value="u1.v1")
    h.complete(second, value="u1.v0")
    assert monotonic_reads(h.build(), STRICT).findings == ()


def test_values_of_concurrent_writes_may_be_read_in_either_order():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    a = h.invoke(2, "write", "u1", "u1.v1")
    b = h.invoke(3, "write", "u1", "u1.v2")
    h.complete(a)
    h.complete(b)
    h.read(1, "u1", "u1.v2")
    h.read(1, "u1", "u1.v1")
    h.read(1, "u1", "u1.v2")
    assert monotonic_reads(h.build(), STRICT).findings == ()


def test_each_backward_read_is_reported_once():
    h = _goes_back_in_time()
    h.read(1, "u1", "u1.v1")  # forward again: fine
    h.read(1, "u1", "u1.v0")  # backward again, against two earlier reads of u1.v1
    verdict = monotonic_reads(h.build(), STRICT)
    assert [f.steps for f in verdict.findings] == [(4, 5, 6, 7), (8, 9, 10, 11)]

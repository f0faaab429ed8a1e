"""Lost writes and reordering, on hand-written histories: the indeterminate-operation rules."""

from _histories import HistoryBuilder

from pytest_cachecheck.checkers.durability import lost_writes
from pytest_cachecheck.contract import Contract


def judged(history, contract=Contract.strict()):
    return {v.property: v for v in lost_writes(history, contract)}


def base():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    return h


def test_an_acknowledged_write_missing_from_the_source_is_lost():
    h = base()
    w = h.at(1).invoke(1, "write", "u1", "u1.v1")
    h.complete(w)
    h.call(1, None, "fault", "crash c1", "process killed, restarted")
    h.at(7).probe("u1", "u1.v0", "u1.v0")
    verdicts = judged(h.build())
    assert verdicts["lost-write"].status == "violated"
    assert verdicts["reordering"].status == "ok"
    [finding] = verdicts["lost-write"].findings
    assert finding.message == (
        "client 1's write of u1.v1 was acknowledged at step 3 but never reached the source "
        "(client 1 crashed at step 4, before a flush): the source ends on u1.v0 "
        "(setup's write of u1.v0, acknowledged at step 1)."
    )
    assert verdicts["lost-write"].figures == {"lost_writes": 1, "loss_window": 6.0}


def test_a_value_that_reached_the_source_then_went_back_is_reordering():
    h = base()
    w1 = h.at(1).invoke(1, "write", "u1", "u1.v1")
    h.complete(w1)
    w2 = h.invoke(1, "write", "u1", "u1.v2")
    h.complete(w2)
    h.call(1, None, "sql", "UPDATE users SET name = 'u1.v2' WHERE id = 'u1'", "1 row")
    h.call(1, None, "sql", "UPDATE users SET name = 'u1.v1' WHERE id = 'u1'", "1 row")
    h.probe("u1", "u1.v1", "u1.v1")
    verdicts = judged(h.build())
    assert verdicts["reordering"].status == "violated"
    assert verdicts["lost-write"].status == "ok"
    assert "reached the source, but was overwritten by an older value" in verdicts["reordering"].findings[0].message


def test_an_indeterminate_write_is_never_required():
    h = base()
    w = h.at(1).invoke(1, "write", "u1", "u1.v1")
    h.complete(w, status="indeterminate")
    h.probe("u1", "u1.v0", "u1.v0")
    assert judged(h.build())["lost-write"].status == "ok"


def test_an_indeterminate_write_that_reached_the_source_covers_older_writes():
    h = base()
    w1 = h.at(1).invoke(1, "write", "u1", "u1.v1")
    h.complete(w1)
    w2 = h.invoke(2, "write", "u1", "u1.v2")
    h.complete(w2, status="indeterminate")
    h.probe("u1", "u1.v2", "u1.v2")
    verdicts = judged(h.build())
    assert verdicts["lost-write"].status == "ok" and verdicts["reordering"].status == "ok"


def test_an_indeterminate_write_older_than_an_acknowledged_one_cannot_excuse_its_loss():
    h = base()
    w1 = h.at(1).invoke(2, "write", "u1", "u1.v1")
    h.complete(w1, status="indeterminate")
    w2 = h.invoke(1, "write", "u1", "u1.v2")
    h.complete(w2)
    h.probe("u1", "u1.v1", "u1.v1")
    [finding] = judged(h.build())["lost-write"].findings
    assert finding.message.startswith("client 1's write of u1.v2 was acknowledged")


def test_concurrent_writes_may_end_either_way():
    h = base()
    w1 = h.at(1).invoke(1, "write", "u1", "u1.v1")
    w2 = h.invoke(2, "write", "u1", "u1.v2")
    h.complete(w2)
    h.complete(w1)
    h.probe("u1", "u1.v1", "u1.v1")
    verdicts = judged(h.build())
    assert verdicts["lost-write"].status == "ok" and verdicts["reordering"].status == "ok"


def test_a_best_effort_contract_reports_the_loss_without_failing():
    h = base()
    w = h.at(1).invoke(1, "write", "u1", "u1.v1")
    h.complete(w)
    h.at(31).probe("u1", "u1.v0", "u1.v0")
    verdict = judged(h.build(), Contract.best_effort())["lost-write"]
    assert verdict.status == "ok"
    assert [f.violates for f in verdict.findings] == [False]
    assert verdict.figures["loss_window"] == 30.0


def test_without_probes_durability_is_unknown():
    h = base()
    w = h.at(1).invoke(1, "write", "u1", "u1.v1")
    h.complete(w)
    from pytest_cachecheck.checkers import durability

    assert [v.status for v in durability.cachecheck_check(h.build(), Contract())] == ["unknown", "unknown"]

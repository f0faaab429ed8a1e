"""errors: operations the layer failed with an exception."""

from _histories import HistoryBuilder

from pytest_cachecheck.checkers.errors import errors


def test_an_operation_that_raised_is_a_violation():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    r = h.at(step=5).invoke(1, "read", "u1")
    h.at(step=7).complete(r, status="error", error="KeyError('x')")
    w = h.invoke(2, "write", "u1", "u1.v1")
    h.complete(w, status="error", error="LockError('lock:u1 not acquired')")
    verdict = errors(h.build())
    assert verdict.status == "violated"
    assert [f.message for f in verdict.findings] == [
        "client 1's read of u1 raised KeyError('x') (step 7).",
        "client 2's write of u1 raised LockError('lock:u1 not acquired') (step 9).",
    ]
    assert verdict.findings[0].steps == (5, 7)
    assert verdict.figures == {"operations": 3, "errors": 2}


def test_indeterminate_and_in_flight_operations_are_not_errors():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    crashed = h.invoke(1, "write", "u1", "u1.v1")
    h.complete(crashed, status="indeterminate")
    h.invoke(2, "read", "u1")
    h.read(3, "u1", "u1.v0")
    verdict = errors(h.build())
    assert verdict.status == "ok" and verdict.findings == ()
    assert verdict.figures == {"operations": 4, "errors": 0}

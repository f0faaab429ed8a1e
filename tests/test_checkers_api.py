"""check(), checker_manager() and third-party checkers."""

import math

import pytest
from _histories import HistoryBuilder

from pytest_cachecheck import checkers
from pytest_cachecheck.checkers import BUILTIN_CHECKERS, check, checker_manager
from pytest_cachecheck.contract import Contract
from pytest_cachecheck.history import History
from pytest_cachecheck.hooks import hookimpl
from pytest_cachecheck.verdict import Finding, Verdict

BUILTIN_PROPERTIES = [
    "confinement",
    "divergence",
    "errors",
    "lock-leak",
    "lock-release-by-non-owner",
    "lost-write",
    "monotonic-reads",
    "mutual-exclusion",
    "phantom-read",
    "process-hazards",
    "read-your-writes",
    "reordering",
    "stale-read",
    "stampede",
]


def _eventful():
    """A history with something for every checker to say."""
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.setup("u2", "u2.v0")
    r = h.at(1).invoke(1, "read", "u1")
    h.call(1, r, "redis", "GET user:u1", "None")
    h.call(1, r, "sql", "SELECT name FROM users WHERE id = 'u1'", "[('u1.v0',)]")
    w = h.invoke(2, "write", "u1", "u1.v1")
    h.call(2, w, "sql", "UPDATE users SET name = 'u1.v1' WHERE id = 'u1'", "1 row")
    h.call(2, w, "redis", "DEL user:u1", "1")
    h.call(1, r, "redis", "SET user:u1 u1.v0", "True")
    h.complete(r, value="u1.v0")
    h.complete(w)
    h.at(4).read(2, "u1", "u1.v0")  # stale, and not its own write
    h.read(3, "u1", "zz")  # phantom
    e = h.invoke(3, "delete", "u2")
    h.complete(e, status="error", error="RuntimeError('boom')")
    h.at(9).probe("u1", "u1.v0", "u1.v1")
    h.probe("u2", "u2.v0", "u2.v0")
    return h.build()


def test_builtins_cover_every_property_sorted_by_name():
    assert BUILTIN_CHECKERS == (
        checkers.staleness,
        checkers.session,
        checkers.divergence,
        checkers.durability,
        checkers.errors,
        checkers.confinement,
        checkers.locks,
        checkers.stampede,
    )
    verdicts = check(_eventful(), Contract.strict())
    assert [v.property for v in verdicts] == BUILTIN_PROPERTIES
    assert {v.property: v.status for v in verdicts} == {
        "confinement": "ok",
        "divergence": "violated",
        "errors": "violated",
        "lock-leak": "ok",
        "lock-release-by-non-owner": "ok",
        "lost-write": "ok",
        "monotonic-reads": "ok",
        "mutual-exclusion": "ok",
        "phantom-read": "violated",
        "process-hazards": "ok",
        "read-your-writes": "violated",
        "reordering": "ok",
        "stale-read": "violated",
        "stampede": "ok",
    }


def test_a_saved_history_rechecks_to_the_same_verdicts():
    history = _eventful()
    text = history.to_json()
    again = History.from_json(text)
    assert again == history
    for contract in (Contract.strict(), Contract.bounded(5)):
        assert check(again, contract) == check(history, contract)
    divergence = next(v for v in check(again, Contract.strict()) if v.property == "divergence")
    assert divergence.figures["longest_divergence"] == math.inf


class _CountsReads:
    @hookimpl
    def cachecheck_check(self, history, contract):
        reads = [op for op in history.operations() if op.kind == "read"]
        return Verdict.of("b-reads", [], {"reads": len(reads)})


class _Returns:
    def __init__(self, value):
        self.value = value

    @hookimpl
    def cachecheck_check(self, history):  # a checker may take only the arguments it needs
        return self.value

    def __repr__(self):
        return f"_Returns({self.value!r})"


def test_a_third_party_checker_joins_the_builtins():
    verdicts = check(_eventful(), Contract.strict(), plugins=[_CountsReads()])
    assert [v.property for v in verdicts] == ["b-reads", *BUILTIN_PROPERTIES]
    assert verdicts[0].figures == {"reads": 3}


def test_a_checker_may_return_several_verdicts_or_none():
    several = _Returns([Verdict.of("zz-one"), Verdict.of("aa-two", [Finding("aa-two", "bad")])])
    verdicts = check(_eventful(), Contract.strict(), plugins=[several, _Returns(None)])
    names = [v.property for v in verdicts]
    assert names == ["aa-two", *BUILTIN_PROPERTIES, "zz-one"]
    assert verdicts[0].status == "violated"


@pytest.mark.parametrize(
    "value, complaint",
    [
        ("oops", "returned 'oops'; return a pytest_cachecheck.verdict.Verdict"),
        ([Verdict.of("x"), 3], "returned an iterable containing 3"),
        ({"property": "x"}, "returned {'property': 'x'}"),
    ],
)
def test_a_bad_return_value_names_the_plugin(value, complaint):
    with pytest.raises(TypeError) as raised:
        check(_eventful(), Contract.strict(), plugins=[_Returns(value)])
    message = str(raised.value)
    assert message.startswith(f"cachecheck_check of plugin _Returns({value!r})")
    assert complaint in message


def test_an_unmarked_checker_is_rejected_with_the_fix():
    class Unmarked:
        def cachecheck_check(self, history, contract):
            return None

    with pytest.raises(TypeError, match=r"without the hook marker.*@pytest_cachecheck.hooks.hookimpl"):
        checker_manager([Unmarked()])


def test_a_hook_wrapper_is_rejected():
    class Wrapper:
        @hookimpl(wrapper=True)
        def cachecheck_check(self, history, contract):
            return (yield)

    with pytest.raises(TypeError, match="hook wrapper"):
        check(_eventful(), Contract.strict(), plugins=[Wrapper()])


def test_each_manager_is_fresh():
    extra = _CountsReads()
    with_extra = checker_manager([extra])
    plain = checker_manager()
    assert with_extra.is_registered(extra)
    assert not plain.is_registered(extra)
    assert set(plain.get_plugins()) == set(BUILTIN_CHECKERS)

"""Stampede: source loads of one key while it is missing, the contract's bound, and the layers."""

import dataclasses
import re

import pytest
from pytest_cachecheck.strategies.catalogue import CORRECT, KNOWN_BUGS

from _histories import HistoryBuilder
from _structured import redis
from pytest_cachecheck import Budget, CachecheckFailure, Contract, explore
from pytest_cachecheck.checkers import check
from pytest_cachecheck.checkers.stampede import stampede
from pytest_cachecheck.history import Call, Statement

TARGETS = {target.name: target for target in (*KNOWN_BUGS, *CORRECT)}
SELECT = "SELECT * FROM users WHERE id = %s"
FILL = '{"id": "u1", "name": "u1.v0"}'


def sql(h, client, op, text, *params, reply=None):
    step, time = h._stamp()
    h.events.append(Call(step, time, client, f"client-{client}", op, "sql", request=Statement(text, params), reply=reply))
    return step


def herd(h, key="u1", readers=(1, 2, 3)):
    """Each reader misses ``key`` and loads it; the last one fills. Returns the ops and steps."""
    ops = {c: h.invoke(c, "read", key) for c in readers}
    misses = {c: redis(h, c, ops[c], "GET", f"user:{key}") for c in readers}
    loads = {c: sql(h, c, ops[c], SELECT, key, reply=[(key, f"{key}.v0")]) for c in readers}
    fill = redis(h, readers[-1], ops[readers[-1]], "SETEX", f"user:{key}", 60, FILL.replace("u1", key), reply=True)
    for c in readers:
        h.complete(ops[c], value=f"{key}.v0")
    return misses, loads, fill


def seeded():
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    h.setup("u2", "u2.v0")
    return h


def test_a_window_with_more_loads_than_the_bound_is_told_with_its_steps():
    h = seeded()
    misses, loads, fill = herd(h)
    verdict = stampede(h.build(), Contract(stampede=1))
    assert verdict.status == "violated"
    [finding] = verdict.violations
    assert finding.key == "u1" and finding.figures["loads"] == 3
    assert finding.steps == (misses[1], *loads.values(), fill)
    message = finding.message
    assert f"from step {misses[1]}, when client 1's GET found nothing" in message
    assert f"to step {fill}, when client 3 filled it" in message
    assert "read for u1 3 times" in message and "the contract allows 1" in message
    assert f"client 2 (step {loads[2]})" in message


def test_a_window_within_the_bound_passes_and_the_figure_is_kept():
    h = seeded()
    herd(h)
    verdict = stampede(h.build(), Contract(stampede=3))
    assert verdict.status == "ok" and not verdict.findings
    assert verdict.figures["stampede_max"] == 3 and verdict.figures["stampede_mean"] == 3


def test_the_figure_is_computed_for_every_target_even_without_a_bound():
    h = seeded()
    herd(h, readers=(1, 2))
    herd(h, key="u2", readers=(1,))
    verdict = stampede(h.build(), Contract())
    assert verdict.status == "ok"
    assert verdict.figures == {"stampede_max": 2, "stampede_mean": 1.5, "stampede_windows": 2, "stampede_loads": 3}


def test_windows_per_key_are_independent():
    h = seeded()
    herd(h, key="u1", readers=(1,))
    herd(h, key="u2", readers=(2,))
    verdict = stampede(h.build(), Contract(stampede=1))
    assert verdict.status == "ok" and verdict.figures["stampede_windows"] == 2


def test_a_fall_through_after_a_lock_wait_is_counted():
    h = seeded()
    holder, waiter = h.invoke(1, "read", "u1"), h.invoke(2, "read", "u1")
    redis(h, 1, holder, "GET", "user:u1")
    redis(h, 1, holder, "SET", "lock:user:u1", "1", "EX", 10, "NX", reply=True)
    first = sql(h, 1, holder, SELECT, "u1", reply=[("u1", "u1.v0")])
    redis(h, 2, waiter, "GET", "user:u1")
    redis(h, 2, waiter, "SET", "lock:user:u1", "1", "EX", 10, "NX", reply=None)
    h.at(5)
    fell = sql(h, 2, waiter, SELECT, "u1", reply=[("u1", "u1.v0")])
    redis(h, 1, holder, "SETEX", "user:u1", 3600, FILL, reply=True)
    redis(h, 1, holder, "DEL", "lock:user:u1", reply=1)
    h.complete(holder, value="u1.v0")
    h.complete(waiter, value="u1.v0")
    [finding] = stampede(h.build(), Contract(stampede=1)).violations
    assert f"client 1 (step {first}), client 2 (step {fell}, after waiting 5 s for the lock)" in finding.message


def test_a_load_after_an_invalidation_belongs_to_the_miss_that_caused_it():
    """A reader that missed before a writer's DEL and loads after it is not the next window's herd."""
    h = seeded()
    reader = h.invoke(1, "read", "u1")
    redis(h, 1, reader, "GET", "user:u1")
    h.write(2, "u1", "u1.v1")
    redis(h, 2, None, "DEL", "user:u1", reply=0)  # the writer's invalidation, as background work
    sql(h, 1, reader, SELECT, "u1", reply=[("u1", "u1.v1")])
    h.complete(reader, value="u1.v1")
    later = h.invoke(2, "read", "u1")
    redis(h, 2, later, "GET", "user:u1")
    sql(h, 2, later, SELECT, "u1", reply=[("u1", "u1.v1")])
    redis(h, 2, later, "SETEX", "user:u1", 60, '{"name": "u1.v1"}', reply=True)
    h.complete(later, value="u1.v1")
    verdict = stampede(h.build(), Contract(stampede=1))
    assert verdict.status == "ok" and verdict.figures["stampede_windows"] == 2


def test_a_refused_fill_does_not_close_the_window():
    h = seeded()
    a, b = h.invoke(1, "read", "u1"), h.invoke(2, "read", "u1")
    redis(h, 1, a, "GET", "user:u1")
    sql(h, 1, a, SELECT, "u1", reply=[("u1", "u1.v0")])
    redis(h, 1, a, "SET", "user:u1", FILL, "NX", reply=None)  # lost the race: wrote nothing
    redis(h, 2, b, "GET", "user:u1")
    sql(h, 2, b, SELECT, "u1", reply=[("u1", "u1.v0")])
    assert stampede(h.build(), Contract()).figures["stampede_max"] == 2


def test_the_checker_registers_as_a_plugin():
    h = seeded()
    herd(h, readers=(1, 2))
    verdicts = {v.property: v for v in check(h.build(), Contract(stampede=1))}
    assert verdicts["stampede"].status == "violated"


@pytest.mark.parametrize("bound", [0, -1, 1.5, True, "1"])
def test_the_bound_must_be_a_positive_whole_number(bound):
    with pytest.raises(ValueError, match=r"Contract.stampede=.* must be None \(unbounded\) or a whole number >= 1"):
        Contract(stampede=bound)


def test_the_bound_is_described_and_allowed_on_every_constructor():
    assert Contract.strict(stampede=2).describe().endswith("at most 2 source loads of a missing key")
    assert Contract.bounded(60, stampede=1).stampede == 1
    assert Contract.best_effort(stampede=1).describe() == (
        "strict (no stale read, converges at quiescence), best-effort durability, at most 1 source load of a missing key"
    )
    assert "source load" not in Contract().describe()


# Exploration.


def bounded(name, **fields):
    target = TARGETS[name]
    return dataclasses.replace(target, contract=dataclasses.replace(target.contract, stampede=1), **fields)


def stampede_failure(target, examples=300, seed=1):
    with pytest.raises(CachecheckFailure) as info:
        explore(target, Budget(examples=examples, seed=seed))
    return info.value


def test_a_plain_cache_aside_fails_single_flight_with_the_stampede_story():
    failure = stampede_failure(bounded("seed-cache-aside"))
    assert failure.report.properties["stampede"] == "violated"
    assert re.search(
        r"\[stampede\] while u1 was missing from the cache \(from step \d+, when client \d's GET found nothing, "
        r"to step \d+, when client \d filled it\), the source was read for u1 2 times: by client \d \(step \d+\), "
        r"client \d \(step \d+\); the contract allows 1\.",
        str(failure),
    ), str(failure)


def test_the_seeds_early_refresh_stampedes_on_a_miss():
    """Its miss path goes straight to the source: two readers missing at once both load."""
    failure = stampede_failure(bounded("seed-early-refresh", write=None))
    assert failure.report.properties["stampede"] == "violated"
    assert "the source was read for u1 2 times" in str(failure)
    assert "get_with_early_refresh" not in str(failure)  # told in cache terms, not code


def test_the_single_flight_layer_loads_twice_only_when_a_stall_outlives_its_lease():
    """Waiters poll while the lease holder is merely preempted: the fair clock lets the holder run
    before their polls move time, so the lease holds.  Only a stated stall (a ``Tick`` while the
    holder is paused: a process pause) outlives the lease; then the waiter loads too."""
    failure = stampede_failure(bounded("single-flight-cache-aside"), seed=3)
    story = str(failure)
    assert failure.report.properties["stampede"] == "violated"
    assert re.search(r"the source was read for u\d 2 times", story)
    assert re.search(r"SET user:u\d lease:", story) and "Tick(seconds=" in story


def test_the_single_flight_and_refreshing_layers_pass_the_built_in_properties():
    for name in ("single-flight-cache-aside", "refreshing-cache-aside"):
        report = explore(TARGETS[name], Budget(examples=150, seed=4))
        assert report.passed, name


def test_a_pass_reports_the_stampede_figure():
    target = dataclasses.replace(TARGETS["seed-cache-aside"], contract=Contract.bounded(3600))
    report = explore(target, Budget(examples=50, seed=2))
    [line] = [line for line in report.summary_lines() if line.startswith("  stampede:")]
    match = re.fullmatch(r"  stampede: at most (\d+) source loads? of one missing key \(mean (\d+\.\d)\)", line)
    assert match, line
    assert int(match.group(1)) >= 2 and 1.0 <= float(match.group(2)) <= int(match.group(1))


@pytest.mark.slow
def test_the_single_flight_layer_passes_the_built_in_properties_over_2000_examples():
    report = explore(TARGETS["single-flight-cache-aside"], Budget(examples=2000, seed=5))
    assert report.passed and report.examples >= 2000

"""The indexed checkers give exactly the verdicts of their former, quadratic definitions.

``_reference_*`` below are the checkers as they were written before they were indexed (one scan
of the whole history per read, per write), kept here only as the specification the fast ones are
held to: on every random history, each of these properties' verdict (status, findings with their
messages, keys, steps and figures, and the verdict's figures) must be equal.
Histories come from the benchmark's simulation (``benchmarks/bench_check.py``) and from a raw
generator that draws events with no layer behind them (reused values, overlapping operations of
one client, completions never received), which reaches the corners a simulation rarely does.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import math
import re
import time
from pathlib import Path
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_cachecheck.checkers import divergence, durability, session, staleness
from pytest_cachecheck.checkers._order import mentioning, mentions
from pytest_cachecheck.checkers._words import got, show, what, who, write_of
from pytest_cachecheck.contract import Contract
from pytest_cachecheck.history import (
    INJECTED,
    SETUP_CLIENT,
    Call,
    Complete,
    History,
    Invoke,
    Operation,
    Probe,
)
from pytest_cachecheck.verdict import Finding, Verdict

_BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_check.py"
_spec = importlib.util.spec_from_file_location("bench_check", _BENCH)
bench_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_check)
synthetic_history = bench_check.synthetic_history

CONTRACTS = [Contract.strict(), Contract.best_effort(max_staleness=3)]
"""Between them, every finding's ``violates`` goes both ways: stale reads' ages either side of
3 s, session guarantees and durability promised or not."""


# The former definitions, verbatim but for their views of the history (computed here the way the
# history used to compute them) and their names.


def _ref_operations(history: History) -> list[Operation]:
    by_op: dict[int, Operation] = {}
    for event in history.events:
        if isinstance(event, Invoke):
            by_op[event.op] = Operation(
                op=event.op, client=event.client, kind=event.kind, key=event.key,
                invoke_step=event.step, invoke_time=event.time, written=event.value,
            )
        elif isinstance(event, Complete):
            started = by_op[event.op]
            by_op[event.op] = Operation(
                op=started.op, client=started.client, kind=started.kind, key=started.key,
                invoke_step=started.invoke_step, invoke_time=started.invoke_time,
                written=started.written, complete_step=event.step, complete_time=event.time,
                status=event.status, observed=event.value, error=event.error,
            )
    return list(by_op.values())


def _ref_calls(history: History) -> list[Call]:
    return [event for event in history.events if isinstance(event, Call)]


def _ref_probes(history: History) -> list[Probe]:
    return [event for event in history.events if isinstance(event, Probe)]


def _ref_writes_of(operations, key):
    return [op for op in operations if op.is_write and op.key == key]


def _ref_producers(writes, value):
    return [write for write in writes if write.written == value]


def _ref_seen_by(read, writes):
    return [write for write in _ref_producers(writes, read.observed) if not read.precedes(write)]


def _ref_supersedes(newer, older):
    return newer.is_write and older.is_write and newer.key == older.key and older.precedes(newer)


def _ref_mentions(text, token):
    return re.search(rf"(?<![\w.]){re.escape(token)}(?![\w.])", text) is not None


def _ref_ok_reads(operations):
    return [op for op in operations if op.kind == "read" and op.status == "ok"]


def _reference_stale_reads(history, contract):
    operations = _ref_operations(history)
    reads = _ref_ok_reads(operations)
    findings = []
    for read in reads:
        finding = _ref_stale_finding(read, _ref_writes_of(operations, read.key), contract)
        if finding is not None:
            findings.append(finding)
    figures = {
        "reads": len(reads),
        "stale_reads": len(findings),
        "stale_window": max((f.figures["age"] for f in findings), default=0.0),
    }
    return Verdict.of("stale-read", findings, figures)


def _ref_stale_finding(read, writes, contract):
    candidates = _ref_seen_by(read, writes)
    if not candidates:
        return None
    options = []
    for write in candidates:
        newer = [
            n for n in writes if n.acknowledged and _ref_supersedes(n, write) and n.precedes(read)
        ]
        if not newer:
            return None
        first = min(newer, key=lambda w: w.complete_step)
        age = round(read.invoke_time - first.complete_time, 6)
        options.append((age, len(newer), first))
    age, lag, first = min(options, key=lambda option: option[:2])
    message = (
        f"{who(read.client)} read {read.key} at step {read.invoke_step} "
        f"(t={read.invoke_time:g} s) and got {got(read.observed, candidates)}, "
        f"but {write_of(first)} was acknowledged at step {first.complete_step} "
        f"(t={first.complete_time:g} s): {age:g} s stale, "
        f"{lag} write{'' if lag == 1 else 's'} behind."
    )
    return Finding(
        property="stale-read", message=message, key=read.key,
        steps=(first.complete_step, read.invoke_step, read.complete_step),
        figures={"age": age, "lag": lag},
        violates=contract.is_strict or age > contract.max_staleness,
    )


def _reference_phantom_reads(history):
    operations = _ref_operations(history)
    reads = _ref_ok_reads(operations)
    findings = []
    for read in reads:
        writes = _ref_writes_of(operations, read.key)
        if _ref_producers(writes, read.observed):
            continue
        if read.observed is None and not any(w.client == SETUP_CLIENT for w in writes):
            continue
        findings.append(Finding(
            property="phantom-read",
            message=f"{who(read.client)} read {read.key} and got {read.observed!r}, which no write of {read.key} produced.",
            key=read.key, steps=(read.invoke_step, read.complete_step),
        ))
    return Verdict.of("phantom-read", findings, {"reads": len(reads), "phantom_reads": len(findings)})


def _reference_read_your_writes(history, contract):
    operations = _ref_operations(history)
    reads = _ref_ok_reads(operations)
    findings = []
    for read in reads:
        writes = _ref_writes_of(operations, read.key)
        candidates = _ref_seen_by(read, writes)
        own = [w for w in writes if w.client == read.client and w.acknowledged and w.precedes(read)]
        if not candidates or not all(any(_ref_supersedes(w, seen) for w in own) for seen in candidates):
            continue
        missed = [w for w in own if any(_ref_supersedes(w, seen) for seen in candidates)]
        mine = max(missed, key=lambda w: w.complete_step)
        findings.append(Finding(
            property="read-your-writes",
            message=(
                f"{who(read.client)} read {read.key} at step {read.invoke_step} and got "
                f"{got(read.observed, candidates)}, although its own {what(mine)} had been "
                f"acknowledged at step {mine.complete_step}."
            ),
            key=read.key, steps=(mine.complete_step, read.invoke_step, read.complete_step),
            violates=contract.session_guarantees,
        ))
    return Verdict.of("read-your-writes", findings, {"reads": len(reads), "own_writes_missed": len(findings)})


def _reference_monotonic_reads(history, contract):
    operations = _ref_operations(history)
    reads = _ref_ok_reads(operations)
    findings = []
    for later in reads:
        writes = _ref_writes_of(operations, later.key)
        seen_later = _ref_seen_by(later, writes)
        earlier_reads = [r for r in reads if r.client == later.client and r.key == later.key and r.precedes(later)]
        for earlier in reversed(earlier_reads):
            seen_earlier = _ref_seen_by(earlier, writes)
            if seen_later and seen_earlier and all(
                _ref_supersedes(newer, older) for newer in seen_earlier for older in seen_later
            ):
                findings.append(Finding(
                    property="monotonic-reads",
                    message=(
                        f"{who(later.client)} read {later.key} at step {earlier.invoke_step} and got "
                        f"{got(earlier.observed, seen_earlier)}, then read it again at step "
                        f"{later.invoke_step} and went back to {got(later.observed, seen_later)}."
                    ),
                    key=later.key,
                    steps=(earlier.invoke_step, earlier.complete_step, later.invoke_step, later.complete_step),
                    violates=contract.session_guarantees,
                ))
                break
    return Verdict.of("monotonic-reads", findings, {"reads": len(reads), "backward_reads": len(findings)})


def _reference_durability(history, contract):
    if not _ref_probes(history):
        return [Verdict("lost-write", "unknown"), Verdict("reordering", "unknown")]
    operations = _ref_operations(history)
    final: dict[str, str | None] = {}
    for probe in _ref_probes(history):
        final.setdefault(probe.key, probe.source)
    sql = [c for c in _ref_calls(history) if c.system == "sql"]
    faults = [c for c in _ref_calls(history) if c.system == "fault"]
    lost, reordered = [], []
    for key, value in final.items():
        writes = _ref_writes_of(operations, key)
        ending = _ref_producers(writes, value)
        for write in writes:
            if write.status != "ok" or write.written is None or not ending:
                continue
            if any(end is write or not _ref_supersedes(write, end) for end in ending):
                continue
            older = ending[0]
            reached = any(_ref_mentions(c.command, write.written) for c in sql)
            what_ = f"{write_of(write)} was acknowledged at step {write.complete_step}"
            holds = f"the source ends on {show(value)} ({write_of(older)}, acknowledged at step {older.complete_step})"
            if reached:
                message = f"{what_} and reached the source, but was overwritten by an older value: {holds}."
            else:
                after = [c for c in faults if c.step > (write.complete_step or 0)]
                cause = ""
                if after:
                    fault = f"{who(after[0].client)} crashed" if after[0].command.startswith("crash ") else after[0].command
                    cause = f" ({fault} at step {after[0].step}, before a flush)"
                message = f"{what_} but never reached the source{cause}: {holds}."
            finding = Finding(
                property="reordering" if reached else "lost-write", message=message, key=key,
                steps=(write.complete_step or write.invoke_step,),
                figures={"acknowledged_at": write.complete_time or 0.0}, violates=contract.durable,
            )
            (reordered if reached else lost).append(finding)
    end = history.events[-1].time if history.events else 0.0
    window = max((end - f.figures["acknowledged_at"] for f in lost), default=0.0)
    return [
        Verdict.of("lost-write", lost, {"lost_writes": len(lost), "loss_window": window}),
        Verdict.of("reordering", reordered, {"reordered_writes": len(reordered)}),
    ]


def _reference_errors(history):
    operations = _ref_operations(history)
    injected = {c.op for c in _ref_calls(history) if INJECTED in c.result}
    findings = [
        Finding(
            property="errors",
            message=f"{who(op.client)}'s {op.kind} of {op.key} raised {op.error} (step {op.complete_step}).",
            key=op.key, steps=(op.invoke_step, op.complete_step),
        )
        for op in operations
        if op.status == "error" and op.op not in injected
    ]
    return Verdict.of("errors", findings, {"operations": len(operations), "errors": len(findings)})


def _reference(history: History, contract: Contract) -> list[Verdict]:
    return [
        _reference_stale_reads(history, contract),
        _reference_phantom_reads(history),
        _reference_read_your_writes(history, contract),
        _reference_monotonic_reads(history, contract),
        *_reference_durability(history, contract),
        _reference_errors(history),
    ]


def _indexed(history: History, contract: Contract) -> list[Verdict]:
    from pytest_cachecheck.checkers import errors

    return [
        staleness.stale_reads(history, contract),
        staleness.phantom_reads(history),
        session.read_your_writes(history, contract),
        session.monotonic_reads(history, contract),
        divergence.divergence(history, contract),
        *durability.cachecheck_check(history, contract),
        errors.errors(history),
    ]


def assert_same_verdicts(history: History) -> list[Verdict]:
    """Every property's verdict equals the reference's, under every contract; returns the strict
    verdicts so that a test can check the history was worth judging.

    Divergence is left out: its definitions of a fill and of how long a divergence persists have
    moved on since (its own tests pin them), and what made it quadratic, finding the calls that
    mention a value, is :func:`mentioning`, held to :func:`mentions` below.
    """
    assert history.operations() == _ref_operations(history)
    assert history.calls == _ref_calls(history) and history.probes == _ref_probes(history)
    for op in {call.op for call in history.calls}:
        assert history.calls_of(op) == [call for call in _ref_calls(history) if call.op == op]
    for contract in CONTRACTS:
        fresh = History(history.events)  # nothing cached from a previous contract
        indexed = {verdict.property: verdict for verdict in _indexed(fresh, contract)}
        for expected in _reference(history, contract):
            assert indexed[expected.property] == expected, f"{expected.property} under {contract}"
    return _indexed(history, CONTRACTS[0])


# A raw generator: events drawn at random, no layer behind them.


def raw_history(seed: int, operations: int = 40) -> History:
    """Operations of a few clients on two keys (and reads of a third that nothing writes), with
    values drawn from a tiny pool (so reused,
    and read back as phantoms, other keys' values or nothing), overlapping freely (a client may
    have several in flight), ending ok, error, indeterminate or never; random calls and faults
    between them, and (usually) probes at the end."""
    rng = Random(seed)
    keys = ["a", "b"]
    pool = {key: [f"{key}.v{i}" for i in range(4)] for key in keys + ["c"]}
    events: list = []
    clock = {"step": 0, "time": 0.0}

    def emit(cls, **fields):
        events.append(cls(step=clock["step"], time=clock["time"], **fields))
        clock["step"] += rng.choice((1, 1, 1, 2))
        clock["time"] += rng.choice((0.0, 0.0, 0.5, 1.0, 3.0))

    def value_of(key):
        return rng.choice(pool[key] + [None])

    for key in keys:
        if rng.random() < 0.8:
            emit(Invoke, client=SETUP_CLIENT, op=len(events) + 1000, kind="write", key=key, value=value_of(key))
            emit(Complete, client=SETUP_CLIENT, op=events[-1].op)
    in_flight: list[Invoke] = []
    next_op = 1
    while next_op <= operations or in_flight:
        roll = rng.random()
        if next_op <= operations and (roll < 0.4 or not in_flight):
            key, kind = rng.choice(keys), rng.choice(("read", "read", "write", "write", "delete"))
            if rng.random() < 0.05:
                key, kind = "c", "read"  # a key nothing writes, not even setup
            value = value_of(key) if kind == "write" else None
            emit(Invoke, client=rng.randint(1, 3), op=next_op, kind=kind, key=key, value=value)
            in_flight.append(events[-1])
            next_op += 1
        elif roll < 0.55:
            token = rng.choice(pool[rng.choice(keys)])
            system = rng.choice(("redis", "redis", "sql", "sql", "fault"))
            op = rng.choice([None] + [invoke.op for invoke in in_flight])
            command = rng.choice((f"SET k {token}", f"DEL k", f"UPDATE t SET v = '{token}'", f"crash c{rng.randint(1, 3)}", "cache lost"))
            result = rng.choice(("None", f"[('{token}',)]", f"raised X: {INJECTED} boom", token + "0"))
            emit(Call, client=rng.randint(0, 3), actor="c", op=op, system=system, command=command, result=result)
        else:
            invoke = in_flight.pop(rng.randrange(len(in_flight)))
            if next_op > operations and rng.random() < 0.1:
                continue  # never completes
            status = rng.choice(("ok", "ok", "ok", "ok", "error", "indeterminate"))
            observed = None
            if invoke.kind == "read":
                observed = rng.choice(pool[invoke.key] + [None, rng.choice(pool["a"] + pool["b"]), "zz"])
            emit(Complete, client=invoke.client, op=invoke.op, status=status, value=observed, error="E()" if status == "error" else None)
    if rng.random() < 0.8:
        for _ in range(rng.randint(1, 5)):
            key = rng.choice(keys + ["c"])
            emit(Probe, key=key, observed=value_of(key), source=value_of(key))
    return History.of(events)


@pytest.mark.parametrize("seed", range(300))
def test_raw_histories_get_the_former_verdicts(seed):
    assert_same_verdicts(raw_history(seed))


def test_raw_histories_reach_every_kind_of_finding():
    """The raw generator is worth its cost: over its seeds, every property has findings."""
    found: set[str] = set()
    for seed in range(300):
        found |= {v.property for v in _indexed(raw_history(seed), CONTRACTS[0]) if v.findings}
    assert found == {
        "stale-read", "phantom-read", "read-your-writes", "monotonic-reads", "divergence",
        "lost-write", "reordering", "errors",
    }


SIMULATED = [
    dict(operations=120, clients=3, keys=1, noise=0.2, shared_clients=0.5),
    dict(operations=200, clients=6, keys=20, noise=0.1),
    dict(operations=250, clients=8, keys=2, noise=0.05, shared_clients=0.3),
    dict(operations=150, clients=4, keys=2, noise=0.1, quiescent=False),
]
SEEDS = range(10)


@pytest.mark.parametrize("shape", SIMULATED, ids=lambda shape: f"{shape['operations']}ops-{shape['keys']}keys")
@pytest.mark.parametrize("seed", SEEDS)
def test_simulated_histories_get_the_former_verdicts(shape, seed):
    assert_same_verdicts(synthetic_history(seed=seed, **shape))


def test_the_simulation_is_deterministic_and_exact_in_size():
    history = synthetic_history(300, keys=3, seed=5, noise=0.1)
    assert history == synthetic_history(300, keys=3, seed=5, noise=0.1)
    assert history != synthetic_history(300, keys=3, seed=6, noise=0.1)
    assert len(history.operations()) == 300
    assert not synthetic_history(300, keys=3, seed=5, quiescent=False).probes


def test_simulated_histories_reach_every_kind_of_finding():
    found: set[str] = set()
    for seed in SEEDS:
        for shape in SIMULATED:
            verdicts = _indexed(synthetic_history(seed=seed, **shape), CONTRACTS[0])
            found |= {v.property for v in verdicts if v.findings}
    assert found == {
        "stale-read", "phantom-read", "read-your-writes", "monotonic-reads", "divergence",
        "lost-write", "reordering", "errors",
    }


# The history's views.


def test_views_leave_equality_and_the_collector_as_they_were():
    history, twin, frozen = raw_history(1), raw_history(1), gc.get_freeze_count()
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            _indexed(History(history.events), Contract.strict())
            _indexed(history, Contract.strict())
            assert gc.isenabled() is enabled and gc.get_freeze_count() == frozen
        finally:
            gc.enable()
    assert history == twin and history.to_json() == twin.to_json()


def test_a_completion_never_invoked_is_refused():
    history = History.of([Complete(step=0, time=0.0, client=1, op=7)])
    with pytest.raises(ValueError, match="completion of op 7 that was never invoked"):
        history.operations()
    with pytest.raises(ValueError, match="completion of op 7 that was never invoked"):
        staleness.stale_reads(history, Contract.strict())


def test_a_reinvoked_op_starts_afresh():
    history = History.of([
        Invoke(step=0, time=0.0, client=1, op=1, kind="read", key="a"),
        Complete(step=1, time=0.0, client=1, op=1, value="x"),
        Invoke(step=2, time=0.0, client=1, op=1, kind="write", key="a", value="a.v1"),
    ])
    assert history.operations() == _ref_operations(history)
    assert history.operations()[0].complete_step is None


# The index behind divergence and durability: which calls mention which values.

_TEXT = st.text(alphabet="ab.1 '_:-\n", max_size=12)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(_TEXT, max_size=6), tokens=st.lists(_TEXT, max_size=4))
def test_mentioning_finds_exactly_what_mentions_finds(texts, tokens):
    calls = [Call(i, 0.0, 1, "c1", None, "redis", text, "") for i, text in enumerate(texts)]
    found = mentioning(calls, tokens, lambda call: call.command)
    assert found == {token: [c for c in calls if mentions(c.command, token)] for token in tokens}


def test_mentioning_skips_a_token_inside_a_longer_run():
    calls = [Call(1, 0.0, 1, "c1", None, "redis", "SET k xu1.v1", ""), Call(2, 0.0, 1, "c1", None, "redis", "SET k xu1.v1 u1.v1", "")]
    assert [call.step for call in mentioning(calls, ["u1.v1"], lambda call: call.command)["u1.v1"]] == [2]


# Growth: a history ten times longer takes about ten times longer, not a hundred.


def _tiled(history: History, times: int, *, same_keys: bool) -> History:
    """``history`` run ``times`` times over, one copy after another: steps, times and op ids
    shifted, values renamed per copy (so still unique), keys renamed per copy unless
    ``same_keys`` (then every key's own history grows ``times``-fold too)."""
    last = history.events[-1]
    events = []
    for copy in range(times):
        step, clock, ops = copy * (last.step + 1), copy * (last.time + 1), copy * 1_000_000

        def renamed(value, copy=copy):
            return None if value is None else f"{value}~{copy}"

        key = (lambda key: key) if same_keys else (lambda key, copy=copy: f"{key}~{copy}")
        for event in history.events:
            shifted = {"step": event.step + step, "time": event.time + clock}
            if isinstance(event, Invoke):
                shifted.update(op=event.op + ops, key=key(event.key), value=renamed(event.value))
            elif isinstance(event, Complete):
                shifted.update(op=event.op + ops, value=renamed(event.value))
            elif isinstance(event, Call):
                shifted.update(op=None if event.op is None else event.op + ops)
            elif isinstance(event, Probe):
                continue  # one quiescence, at the very end
            events.append(dataclasses.replace(event, **shifted))
    return History.of(events)


def _seconds_to_check(history: History) -> float:
    """The best of three, each on a fresh copy (nothing cached)."""
    best = math.inf
    for _ in range(3):
        fresh = History(history.events)
        started = time.perf_counter()
        _indexed(fresh, Contract.strict())
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("same_keys", [False, True], ids=["many keys", "each key ten times longer"])
def test_checking_grows_with_the_history_not_its_square(same_keys):
    base = synthetic_history(2_000, keys=4, seed=1)
    small, large = _tiled(base, 2, same_keys=same_keys), _tiled(base, 20, same_keys=same_keys)
    ratio = _seconds_to_check(large) / _seconds_to_check(small)
    # Linear growth gives about 10 (log factors and noise a little more); quadratic, 100.
    assert ratio < 30, f"checking 10x the operations took {ratio:.0f}x as long"

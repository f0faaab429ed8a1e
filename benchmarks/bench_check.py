"""How long the built-in checkers take, as a history grows from a thousand to a million operations.

Prints, for synthetic histories of 1e3 to 1e6 operations: the time to build the history (apart:
it is the recorder's cost, not the checkers'), the wall and CPU seconds of each built-in checker
on it (each on a fresh copy, so each pays for the index the checkers share) and of
``check(history, Contract.strict())`` as a whole, and the peak memory of the process.  Figures,
not assertions: run it on a quiet machine (CPU seconds tell a busy machine from a slow checker).

    python benchmarks/bench_check.py [--sizes 1e3,1e4,1e5,1e6] [--keys N] [--seed 0]

The histories come from :func:`synthetic_history`: clients running the seed's cache-aside layer
(a read misses, reads the source, fills the cache; a write updates the source and deletes the
entry) over many keys, with the layer's natural races (stale reads, divergence at the end),
write-behind writes flushed late or lost, crashes (indeterminate operations), errors, injected
failures, and a little noise (reads of old, absent or invented values).  The tests
(``tests/test_checkers_scale.py``) use the same generator, on small histories, to compare the
checkers with their former quadratic definitions.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time
from random import Random
from typing import Callable, Iterator

from pytest_cachecheck.checkers import (
    check,
    checker_manager,
    confinement,
    divergence,
    durability,
    errors,
    session,
    staleness,
)
from pytest_cachecheck.contract import Contract
from pytest_cachecheck.history import INJECTED, Call, Complete, History, Invoke, Probe

__all__ = ["synthetic_history"]


def synthetic_history(
    operations: int,
    *,
    clients: int = 32,
    keys: int | None = None,
    seed: int = 0,
    quiescent: bool = True,
    noise: float = 0.02,
    shared_clients: float = 0.0,
) -> History:
    """A history of exactly ``operations`` operations (the setup writes included).

    ``keys`` defaults to one per 200 operations; key ``u0`` is the hottest (keys are drawn with
    a quadratic skew).  ``quiescent`` ends the run with every operation completed, the
    write-behind buffer drained and every key probed; otherwise the run stops with operations in
    flight and no probe.  ``noise`` is the chance that a read returns something the layer did not
    serve (an older value of the key, nothing, another key's value, an invented one) and that a
    write reuses an older value.  ``shared_clients`` is the share of actors that run as the
    same client as another actor, so that one client has overlapping operations.  The same
    arguments give the same history.
    """
    return _Simulation(operations, clients, keys, seed, quiescent, noise, shared_clients).run()


class _Simulation:
    """One run of the seed's cache-aside layer, recorded as the harness would record it."""

    def __init__(self, operations, clients, keys, seed, quiescent, noise, shared_clients) -> None:
        self.rng = Random(seed)
        self.budget = operations
        self.actors = max(1, clients)
        self.keys = [f"u{i}" for i in range(keys if keys is not None else max(1, operations // 200))]
        self.quiescent = quiescent
        self.noise = noise
        self.client_of = [
            self.rng.randrange(1, i + 1) if i > 1 and self.rng.random() < shared_clients else i
            for i in range(1, self.actors + 1)
        ]
        self.events: list = []
        self.step = 0
        self.time = 0.0
        self.next_op = 1
        self.source: dict[str, str | None] = {}
        self.cache: dict[str, str | None] = {}
        self.values: dict[str, list[str]] = {key: [] for key in self.keys}
        self.pending: list[tuple[int, str, str | None]] = []  # write-behind: (client, key, value)

    # Recording.

    def emit(self, cls, **fields) -> None:
        self.events.append(cls(step=self.step, time=self.time, **fields))
        self.step += 1

    def call(self, client: int, op: int | None, system: str, command: str, result: str = "None") -> None:
        self.emit(Call, client=client, actor=f"c{client}", op=op, system=system, command=command, result=result)

    def new_op(self) -> int:
        self.budget -= 1
        self.next_op += 1
        return self.next_op - 1

    def fresh(self, key: str) -> str:
        values = self.values[key]
        if values and self.rng.random() < self.noise:
            return self.rng.choice(values)  # a reused value: values are no longer unique
        values.append(f"{key}.v{len(values)}")
        return values[-1]

    # The run.

    def run(self) -> History:
        for key in self.keys:
            if self.budget <= 0:
                break
            self.setup(key)
        running: dict[int, Iterator[None]] = {}
        while self.budget > 0 or (self.quiescent and running):
            actor = self.rng.randrange(self.actors)
            script = running.get(actor)
            if script is None:
                if self.budget <= 0:
                    continue
                script = running[actor] = self.operation(self.client_of[actor])
            if next(script, StopIteration) is StopIteration:
                del running[actor]
            if self.rng.random() < 0.3:
                self.time += self.rng.choice((0.5, 1.0, 2.0))
            if self.pending and self.rng.random() < 0.02:
                self.flush(self.pending.pop(self.rng.randrange(len(self.pending))))
            if self.rng.random() < 0.001:  # the write-behind queue lived in the cache too
                self.cache.clear()
                self.pending.clear()
                self.call(0, None, "fault", "cache lost", "every entry gone")
        if self.quiescent:
            self.drain()
        return History.of(self.events)

    def setup(self, key: str) -> None:
        roll = self.rng.random()
        if roll < 0.05:
            return  # nothing records the key's state before the run
        value = self.fresh(key) if roll < 0.9 else None
        op = self.new_op()
        self.emit(Invoke, client=0, op=op, kind="write", key=key, value=value)
        self.emit(Complete, client=0, op=op)
        self.source[key] = value

    def operation(self, client: int) -> Iterator[None]:
        key = self.keys[int(len(self.keys) * self.rng.random() ** 2)]
        roll = self.rng.random()
        if roll < 0.7:
            return self.read(client, key)
        if roll < 0.93:
            return self.write(client, key, self.fresh(key))
        return self.write(client, key, None)

    def read(self, client: int, key: str) -> Iterator[None]:
        op = self.new_op()
        self.emit(Invoke, client=client, op=op, kind="read", key=key)
        yield
        if key in self.cache:
            observed = self.cache[key]
            self.call(client, op, "redis", f"GET user:{key}", _entry(observed))
        else:
            self.call(client, op, "redis", f"GET user:{key}", "None")
            yield
            observed = self.source.get(key)
            rows = "[]" if observed is None else f"[('{observed}',)]"
            self.call(client, op, "sql", f"SELECT name FROM users WHERE id = '{key}'", rows)
            yield
            while self.rng.random() < 0.5:
                yield  # a slow fill: the window in which a write makes it stale
            if self.rng.random() < 0.02:
                self.call(client, op, "redis", f"GET user:{key}", "None")
                self.emit(Complete, client=client, op=op, status="error", error="KeyError('name')")
                return
            self.cache[key] = observed
            self.call(client, op, "redis", f"SETEX user:{key} 3600 {_entry(observed)}", "True")
        yield
        if self.rng.random() < self.noise:
            observed = self.rng.choice([None, f"{key}.x{op}", f"u{op % 7}.v0", *self.values[key][-5:]])
        self.emit(Complete, client=client, op=op, value=observed)

    def write(self, client: int, key: str, value: str | None) -> Iterator[None]:
        op = self.new_op()
        kind = "write" if value is not None else "delete"
        self.emit(Invoke, client=client, op=op, kind=kind, key=key, value=value)
        yield
        roll = self.rng.random()
        if roll < 0.05:  # write-behind: acknowledged now, flushed later (or lost)
            self.pending.append((client, key, value))
            self.emit(Complete, client=client, op=op)
            return
        if roll < 0.08:  # the process dies, before or after the source heard of it
            if self.rng.random() < 0.5:
                self.update(client, op, key, value)
            self.call(client, op, "fault", f"crash c{client}", "process killed, restarted")
            self.emit(Complete, client=client, op=op, status="indeterminate")
            self.pending = [p for p in self.pending if p[0] != client]
            return
        if roll < 0.1:  # an injected failure, passed on
            self.call(client, op, "sql", _update(key, value), f"raised OperationalError: {INJECTED} failure")
            self.emit(Complete, client=client, op=op, status="error", error=f"OperationalError('{INJECTED}')")
            return
        self.update(client, op, key, value)
        yield
        self.call(client, op, "sql", "COMMIT")
        yield
        self.call(client, op, "redis", f"DEL user:{key}", "1" if key in self.cache else "0")
        self.cache.pop(key, None)
        yield
        if self.rng.random() < 0.01:
            self.emit(Complete, client=client, op=op, status="error", error="LockError('lock:u not acquired')")
        else:
            self.emit(Complete, client=client, op=op)

    def update(self, client: int, op: int | None, key: str, value: str | None) -> None:
        self.call(client, op, "sql", _update(key, value), "1 row")
        self.source[key] = value

    def flush(self, pending: tuple[int, str, str | None]) -> None:
        client, key, value = pending
        self.update(client, None, key, value)

    def drain(self) -> None:
        """Quiescence: flush what the write-behind buffer holds, then probe every key."""
        if self.pending and self.rng.random() < 0.5:
            client = self.pending[0][0]
            self.call(client, None, "fault", f"crash c{client}", "process killed, restarted")
            self.pending = [p for p in self.pending if p[0] != client]
        for pending in self.pending:
            self.flush(pending)
        self.time += 1.0
        for key in self.keys:
            source = self.source.get(key)
            observed = self.cache.get(key, source)
            if self.values[key] and self.rng.random() < self.noise:
                observed = self.rng.choice(self.values[key])  # an entry nothing above explains
            self.emit(Probe, key=key, observed=observed, source=source)
            if observed != source:
                self.time += 5.0
                if self.rng.random() < 0.3:
                    self.emit(Probe, key=key, observed=observed, source=source)
                if self.rng.random() < 0.7:
                    self.time += 3600.0
                    self.emit(Probe, key=key, observed=source, source=source)


def _entry(value: str | None) -> str:
    return "None" if value is None else "'" + json.dumps({"name": value}) + "'"


def _update(key: str, value: str | None) -> str:
    if value is None:
        return f"DELETE FROM users WHERE id = '{key}'"
    return f"UPDATE users SET name = '{value}' WHERE id = '{key}'"


# The benchmark.

CHECKERS: dict[str, Callable[[History, Contract], object]] = {
    "stale-read": staleness.stale_reads,
    "phantom-read": lambda history, contract: staleness.phantom_reads(history),
    "read-your-writes": session.read_your_writes,
    "monotonic-reads": session.monotonic_reads,
    "divergence": divergence.divergence,
    "durability": durability.cachecheck_check,
    "errors": lambda history, contract: errors.errors(history),
    "confinement": confinement.cachecheck_check,
}


def _timed(function: Callable[[], object]) -> tuple[float, float, object]:
    """Wall and CPU seconds of ``function()``, and what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bench(size: int, keys: int | None, seed: int) -> None:
    contract = Contract.strict()
    built, _, history = _timed(lambda: synthetic_history(size, keys=keys, seed=seed))
    print(
        f"\n{size:,} operations, {len(history):,} events, "
        f"{len({e.key for e in history.events if isinstance(e, Probe)}):,} keys: built in {built:.2f} s",
        flush=True,
    )
    print(f"  {'checker':<18} {'wall s':>8} {'cpu s':>8}")
    for name, checker in CHECKERS.items():
        fresh = History(history.events)  # nothing cached: each checker pays for its own views
        wall, cpu, _ = _timed(lambda: checker(fresh, contract))
        print(f"  {name:<18} {wall:8.3f} {cpu:8.3f}", flush=True)
    manager = checker_manager()
    fresh = History(history.events)
    wall, cpu, verdicts = _timed(lambda: check(fresh, contract, manager=manager))
    found = ", ".join(f"{v.property} {len(v.findings)}" for v in verdicts if v.findings)
    print(f"  {'all (check)':<18} {wall:8.3f} {cpu:8.3f}   findings: {found or 'none'}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak memory so far {peak:,.0f} MB", flush=True)
    del history, fresh, verdicts
    gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1e3,1e4,1e5,1e6", help="comma-separated operation counts")
    parser.add_argument("--keys", type=int, default=None, help="keys (default: one per 200 operations)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        sizes = [int(float(size)) for size in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        parser.error(f"--sizes={args.sizes!r}: give comma-separated positive numbers, like 1e3,1e4")
    if args.keys is not None and args.keys < 1:
        parser.error(f"--keys={args.keys}: give at least one key")
    for size in sizes:
        bench(size, args.keys, args.seed)


if __name__ == "__main__":
    main()

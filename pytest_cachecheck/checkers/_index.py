"""A history indexed per key, once, so that each checker judges it in O(n log n).

The definitions in :mod:`._order` say what a checker asks about one read (which writes it may
have seen, which writes supersede them); asked per read over the whole history they cost
O(reads x writes).  This index answers the same questions from per-key arrays: sorted steps,
running minima and maxima, binary search, and one Fenwick tree per key for counts.
``tests/test_checkers_scale.py`` holds the indexed checkers to the verdicts of the direct
definitions on random histories.

Two facts carry every shortcut:

* the writes of a value a read may have seen (:func:`._order.seen_by`) are a prefix, in
  invocation order, of the writes of that value;
* a write supersedes every write of a set exactly when it was invoked after the latest
  completion among them, and some write of the set exactly when it was invoked after the
  earliest.
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_right
from typing import Callable, NamedTuple, TypeVar

from ..history import SETUP_CLIENT, Call, History, paused_collector

__all__ = ["INF", "Index", "KeyWrites", "Op", "Seen", "calls_of", "in_bulk", "index"]

F = TypeVar("F", bound=Callable)

INF = math.inf


class Op(NamedTuple):
    """An operation as the checkers read it: :class:`~pytest_cachecheck.history.Operation`'s
    fields in a tuple, several times cheaper to build by the million than the frozen dataclass
    (the stories in :mod:`._words` take either)."""

    op: int
    client: int
    kind: str
    key: str
    invoke_step: int
    invoke_time: float
    written: str | None = None
    complete_step: int | None = None
    complete_time: float | None = None
    status: str | None = None
    observed: str | None = None
    error: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.status == "ok"


class Seen(NamedTuple):
    """What an acknowledged read may have seen (:func:`._order.seen_by`, summarised; never
    empty): the first ``count`` writes of the value it observed, in invocation order."""

    count: int
    first_invoke: int
    """The earliest candidate's invoke step."""
    earliest_completion: float
    """The smallest completion step among the candidates (``inf`` if none completed)."""
    latest_completion: float
    """The largest completion step, ``inf`` when some candidate never completed."""
    initial: bool
    """Whether every candidate is the setup client's write."""


class KeyWrites:
    """The writes and deletes of one key, whatever their status.

    Invariants: ``writes`` is in invocation order (increasing ``invoke_step``, op ids being
    unique in a history), ``acked`` is its acknowledged subsequence, ``by_value[v]`` the writes
    of ``v`` in invocation order.  The arrays behind the queries are built on first use.
    """

    def __init__(self, writes: list[Op]) -> None:
        self.writes = writes
        by_value: dict[str | None, list[Op]] = {}
        for write in writes:
            same = by_value.get(write.written)
            if same is None:
                by_value[write.written] = [write]
            else:
                same.append(write)
        # Tuples, not lists: the collector stops tracking a tuple of tuples, so a million of
        # them cost nothing to the full collections a long check may trigger.
        self.by_value: dict[str | None, tuple[Op, ...]] = {value: tuple(same) for value, same in by_value.items()}
        self.has_setup = any(write.client == SETUP_CLIENT for write in writes)
        self.acked = [write for write in writes if write.status == "ok"]
        self._runs: dict[str | None, tuple[list[int], list[float], list[float], list[bool]]] = {}
        self._newer: tuple[list[int], list[Op | None]] | None = None
        self._own: dict[int, tuple[list[int], list[int], list[Op]]] | None = None

    def producers(self, value: str | None) -> tuple[Op, ...]:
        """:func:`._order.producers` of ``value`` among the key's writes."""
        return self.by_value.get(value, ())

    def seen(self, reads: list[Op]) -> list[Seen | None]:
        """:func:`._order.seen_by` for each of ``reads`` (acknowledged reads of this key),
        summarised; ``None`` where it is empty."""
        found: list[Seen | None] = []
        shared: dict[str | None, Seen] = {}  # the usual case: one write of the value
        for read in reads:
            writes = self.by_value.get(read.observed)
            if not writes:
                found.append(None)
            elif len(writes) == 1:
                if read.complete_step < writes[0].invoke_step:
                    found.append(None)
                    continue
                seen = shared.get(read.observed)
                if seen is None:
                    write = writes[0]
                    completed = INF if write.complete_step is None else write.complete_step
                    seen = Seen(1, write.invoke_step, completed, completed, write.client == SETUP_CLIENT)
                    shared[read.observed] = seen
                found.append(seen)
            else:
                invokes, earliest, latest, initial = self._run(read.observed)
                count = bisect_right(invokes, read.complete_step)
                last = count - 1
                found.append(
                    Seen(count, invokes[0], earliest[last], latest[last], initial[last]) if count else None
                )
        return found

    def latest_completion(self, value: str | None) -> float:
        """The largest completion step among the writes of ``value`` (``inf`` if one never
        completed, ``-inf`` if there are none)."""
        return self._run(value)[2][-1] if value in self.by_value else -INF

    def _run(self, value: str | None) -> tuple[list[int], list[float], list[float], list[bool]]:
        """Over the writes of ``value``: their invoke steps, and the running minimum and
        maximum of their completion steps and running "all by setup", so that any prefix is
        summarised in O(1)."""
        run = self._runs.get(value)
        if run is None:
            invokes, earliest, latest, initial = [], [], [], []
            low, high, setup = INF, -INF, True
            for write in self.by_value[value]:
                completed = INF if write.complete_step is None else write.complete_step
                low, high = min(low, completed), max(high, completed)
                setup = setup and write.client == SETUP_CLIENT
                invokes.append(write.invoke_step)
                earliest.append(low)
                latest.append(high)
                initial.append(setup)
            run = self._runs[value] = (invokes, earliest, latest, initial)
        return run

    def newer(self) -> tuple[list[int], list[Op | None]]:
        """The invoke steps of the acknowledged writes, and for each position ``i`` the write
        acknowledged first among ``acked[i:]`` (``None`` at the end).

        So the acknowledged write acknowledged first among those invoked after step ``a`` is
        ``first[bisect_right(invokes, a)]``, and some acknowledged write was invoked after ``a``
        and acknowledged before ``b`` exactly when that one was acknowledged before ``b``.
        """
        if self._newer is None:
            first: list[Op | None] = [None] * (len(self.acked) + 1)
            for i in range(len(self.acked) - 1, -1, -1):
                best, write = first[i + 1], self.acked[i]
                first[i] = write if best is None or write.complete_step < best.complete_step else best
            self._newer = ([write.invoke_step for write in self.acked], first)
        return self._newer

    def count_newer(self, queries: list[tuple[float, int]]) -> list[int]:
        """For each ``(after, before)``: how many acknowledged writes were invoked after step
        ``after`` and acknowledged before step ``before``.

        Offline, in O((n + q) log n): the queries in order of ``before``; the writes enter a
        Fenwick tree over invocation ranks in order of acknowledgement, as ``before`` passes them.
        """
        invokes, _ = self.newer()
        acked = self.acked
        by_completion = sorted(range(len(acked)), key=lambda i: acked[i].complete_step)
        tree = [0] * (len(acked) + 1)
        counts = [0] * len(queries)
        entered = 0
        for q in sorted(range(len(queries)), key=lambda q: queries[q][1]):
            after, before = queries[q]
            while entered < len(acked) and acked[by_completion[entered]].complete_step < before:
                i = by_completion[entered] + 1
                while i < len(tree):
                    tree[i] += 1
                    i += i & -i
                entered += 1
            i, invoked_by_then = bisect_right(invokes, after), 0
            while i > 0:
                invoked_by_then += tree[i]
                i -= i & -i
            counts[q] = entered - invoked_by_then
        return counts

    def own(self, client: int) -> tuple[list[int], list[int], list[Op]]:
        """``client``'s acknowledged writes of the key in order of acknowledgement: their
        completion steps, the running maximum of their invoke steps, and the writes."""
        if self._own is None:
            self._own = {}
            for write in sorted(self.acked, key=lambda write: write.complete_step):
                completions, max_invoke, writes = self._own.setdefault(write.client, ([], [], []))
                completions.append(write.complete_step)
                max_invoke.append(max(write.invoke_step, max_invoke[-1] if max_invoke else -1))
                writes.append(write)
        return self._own.get(client, _NONE_OWN)


_new_op = functools.partial(tuple.__new__, Op)
"""``Op`` from a tuple of all its fields, without the Python-level ``Op.__new__``."""
_NONE_OWN: tuple[list[int], list[int], list[Op]] = ([], [], [])
_NO_WRITES = KeyWrites([])


class Index:
    """A history's operations partitioned per key, built once and shared by the checkers.

    ``operations`` are every operation in invocation order (as :class:`Op`); ``reads`` the
    acknowledged reads and ``seen`` their :class:`Seen` (aligned); ``reads_of[key]`` the
    positions in ``reads`` of the key's reads, in order; ``writes(key)`` the key's
    :class:`KeyWrites`.
    """

    def __init__(self, history: History) -> None:
        operations: list[Op] = []
        reads: list[Op] = []
        reads_of: dict[str, list[int]] = {}
        writes: dict[str, list[Op]] = {}
        for i, c in history.joined():  # each invoke, and its completion or None
            if c is None:
                op = _new_op((i.op, i.client, i.kind, i.key, i.step, i.time, i.value, None, None, None, None, None))
            else:
                op = _new_op((
                    i.op, i.client, i.kind, i.key, i.step, i.time, i.value,
                    c.step, c.time, c.status, c.value, c.error,
                ))
            operations.append(op)
            kind = i.kind
            if kind == "read":
                if c is not None and c.status == "ok":
                    positions = reads_of.get(i.key)
                    if positions is None:
                        reads_of[i.key] = [len(reads)]
                    else:
                        positions.append(len(reads))
                    reads.append(op)
            elif kind == "write" or kind == "delete":  # Operation.is_write
                same = writes.get(i.key)
                if same is None:
                    writes[i.key] = [op]
                else:
                    same.append(op)
        self.operations, self.reads, self.reads_of = operations, reads, reads_of
        self.keys = {key: KeyWrites(key_writes) for key, key_writes in writes.items()}
        self.seen: list[Seen | None] = [None] * len(reads)
        for key, positions in reads_of.items():
            for position, seen in zip(positions, self.writes(key).seen([reads[p] for p in positions])):
                self.seen[position] = seen

    def writes(self, key: str) -> KeyWrites:
        return self.keys.get(key, _NO_WRITES)


def index(history: History) -> Index:
    """The history's :class:`Index`, built on first use and kept with the history."""
    return history.cached("checkers index", Index)


def calls_of(history: History, system: str) -> list[Call]:
    """The history's calls of ``system`` (``redis``, ``sql``, ``fault``...) in step order,
    partitioned on first use and kept with the history (do not mutate)."""
    return history.cached("checkers calls by system", _calls_by_system).get(system, [])


def _calls_by_system(history: History) -> dict[str, list[Call]]:
    by_system: dict[str, list[Call]] = {}
    for call in history.calls:
        calls = by_system.get(call.system)
        if calls is None:
            by_system[call.system] = [call]
        else:
            calls.append(call)
    return by_system


def in_bulk(checker: F) -> F:
    """``checker``, run with the cyclic garbage collector paused, and what it allocated filed as
    old afterwards (see :func:`~pytest_cachecheck.history.paused_collector`): on a history of a
    million operations, each collection a checker's allocations trigger rescans millions of
    objects and can cost more than the checker itself."""

    @functools.wraps(checker)
    def judge(*args, **kwargs):
        with paused_collector():
            return checker(*args, **kwargs)

    return judge  # type: ignore[return-value]

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
* a write supersedes every write of a set exactly when it was invoked after the last of them
  completed; it supersedes one of them exactly when invoked after the first of them completed.
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_right
from typing import Callable, NamedTuple, TypeVar

from ..history import SETUP_CLIENT, History, paused_collector

__all__ = ["INF", "Index", "KeyWrites", "Op", "Seen", "in_bulk", "index"]

F = TypeVar("F", bound=Callable)

INF = math.inf


class Op(NamedTuple):
    """An operation as the checkers read it: :class:`~pytest_cachecheck.history.Operation`'s
    fields and properties in a tuple, which costs a fifth as much to build by the million as
    the frozen dataclass (stories take either)."""

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
    def is_write(self) -> bool:
        return self.kind in ("write", "delete")

    @property
    def acknowledged(self) -> bool:
        return self.status == "ok"

    def precedes(self, other: "Op") -> bool:
        """Whether this operation completed before ``other`` was invoked (real-time order)."""
        return self.complete_step is not None and self.complete_step < other.invoke_step


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

    def seen(self, read: Op) -> Seen | None:
        """:func:`._order.seen_by` for an acknowledged ``read`` of this key (``None``: empty)."""
        writes = self.by_value.get(read.observed)
        if not writes:
            return None
        if len(writes) == 1:  # the usual case: values are unique per key
            write = writes[0]
            if read.complete_step < write.invoke_step:
                return None
            completed = INF if write.complete_step is None else write.complete_step
            return Seen(1, write.invoke_step, completed, completed, write.client == SETUP_CLIENT)
        invokes, earliest, latest, initial = self._run(read.observed)
        count = bisect_right(invokes, read.complete_step)
        if count == 0:
            return None
        return Seen(count, invokes[0], earliest[count - 1], latest[count - 1], initial[count - 1])

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
        self.operations = [
            Op(i.op, i.client, i.kind, i.key, i.step, i.time, i.value)
            if c is None
            else Op(i.op, i.client, i.kind, i.key, i.step, i.time, i.value, c.step, c.time, c.status, c.value, c.error)
            for i, c in history.joined()  # each invoke and its completion
        ]
        self.reads: list[Op] = []
        self.reads_of: dict[str, list[int]] = {}
        writes: dict[str, list[Op]] = {}
        for op in self.operations:
            kind = op.kind
            if kind == "read":
                if op.status == "ok":
                    positions = self.reads_of.get(op.key)
                    if positions is None:
                        self.reads_of[op.key] = [len(self.reads)]
                    else:
                        positions.append(len(self.reads))
                    self.reads.append(op)
            elif kind == "write" or kind == "delete":  # Op.is_write, inlined
                same = writes.get(op.key)
                if same is None:
                    writes[op.key] = [op]
                else:
                    same.append(op)
        self.keys = {key: KeyWrites(key_writes) for key, key_writes in writes.items()}
        self.seen: list[Seen | None] = [None] * len(self.reads)
        for key, positions in self.reads_of.items():
            key_writes = self.writes(key)
            for position in positions:
                self.seen[position] = key_writes.seen(self.reads[position])

    def writes(self, key: str) -> KeyWrites:
        return self.keys.get(key, _NO_WRITES)


def index(history: History) -> Index:
    """The history's :class:`Index`, built on first use and kept with the history."""
    return history.cached("checkers index", Index)


def in_bulk(checker: F) -> F:
    """``checker``, run with the cyclic garbage collector paused (see
    :func:`~pytest_cachecheck.history.paused_collector`): on a history of a million operations
    a full collection, triggered by what a checker allocates, rescans millions of events and
    can cost more than the checker itself."""

    @functools.wraps(checker)
    def judge(*args, **kwargs):
        with paused_collector():
            return checker(*args, **kwargs)

    return judge  # type: ignore[return-value]

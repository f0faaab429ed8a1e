"""What happened in one run: plain, frozen, serialisable records.

A history is the only input of a checker, so it carries everything a property needs and nothing
that depends on the machine it ran on.  Two clocks order it:

* ``step`` numbers every event in the order it was recorded.  Exactly one simulated task runs
  between two scheduling points, so ``step`` is a total order consistent with causality.
  "Before" in every property definition means a smaller ``step``.
* ``time`` is virtual seconds since the run began.  It only moves when the machine advances the
  clock or a task sleeps, so many events share one ``time``; it measures ages and windows, never
  order.

Invariant: events are stored in strictly increasing ``step`` order, and ``time`` never decreases
along it.

Operations are Porcupine-style closed intervals ``[invoke, complete]``: two operations are
concurrent when neither completed before the other was invoked.  Every value written is unique
per key (the harness makes it so), so a read is attributable to exactly one write.  The value a
key holds before the run is written by the *setup* client (``client == 0``), acknowledged at
step 0.  A delete is a write of ``None``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, TypeVar, Union

from ._calls import Batch, Command, LockPoint, Raised, Request, Rows, Sleep, Statement, decode, encode, outcome_text

__all__ = [
    "Batch",
    "Call",
    "Command",
    "LockPoint",
    "Raised",
    "Rows",
    "Sleep",
    "Statement",
    "Complete",
    "Event",
    "History",
    "Invoke",
    "Operation",
    "Probe",
    "SETUP_CLIENT",
]

SETUP_CLIENT = 0
"""The client that writes each key's initial value before the run."""

INJECTED = "cachecheck: injected"
"""Begins the message of every failure the harness injects (the ``error`` fault), so that the
history tells an injected failure from one of the layer's own."""

REFUSED = "cachecheck: refused"
"""Begins the message of every call a server (or the harness) refused because it reached beyond
the run's own data: a Redis command outside the run's ACL user, a SQL statement outside the run's
role.  The layer sees the driver's own error; the ``confinement`` checker reports the attempt."""

HAZARD = "hazard"
"""The ``system`` of a :class:`Call` the harness records when the layer does something to the
test process itself: leaves a thread running, forks, installs a signal handler or an alarm."""

OpKind = Literal["read", "write", "delete"]
Status = Literal["ok", "error", "indeterminate"]


@dataclass(frozen=True)
class Invoke:
    """A client began an operation on ``key``; ``value`` is what a write or delete stores."""

    step: int
    time: float
    client: int
    op: int
    kind: OpKind
    key: str
    value: str | None = None


@dataclass(frozen=True)
class Complete:
    """An operation returned.

    ``status`` is ``ok`` (acknowledged), ``error`` (the layer raised: ``error`` holds the
    exception) or ``indeterminate`` (its client crashed or hung mid-flight: it may or may not
    have taken effect, like Jepsen's ``:info``).  ``value`` is the comparable value a read
    observed.
    """

    step: int
    time: float
    client: int
    op: int
    status: Status = "ok"
    value: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Call:
    """One scheduling point executed: a Redis command, SQL statement or commit, sleep, or lock.

    ``system`` is ``redis``, ``sql``, ``sleep`` or ``lock`` (``fault`` and ``hazard`` for what
    the harness records itself).  ``op`` is the operation the task was running, or ``None`` for
    setup and background work.

    The call as data: ``request`` is what was asked (a :class:`Command`, :class:`Batch`,
    :class:`Statement`, :class:`Sleep` or :class:`LockPoint`; ``None`` for a call recorded as
    text only); the outcome is ``reply`` (what it returned, as data: str, bytes, int, float,
    list, :class:`Rows`...), or ``error`` (a :class:`Raised`), or ``blocked`` (the reason the
    point found its resource taken; the task then waits and the call is tried again).

    ``command`` and ``result`` are the text a trace shows (``SETEX user:u1 3600 '{"name":
    "u1.v0"}'``): rendered from the data when not given.  Invariant: a call with a ``request``
    has exactly the text its data renders to, so the data alone (:meth:`History.to_json`)
    rebuilds an equal call.
    """

    step: int
    time: float
    client: int
    actor: str
    op: int | None
    system: str
    command: str = None  # type: ignore[assignment]  # rendered from ``request`` when None
    result: str = None  # type: ignore[assignment]  # rendered from the outcome when None
    request: Request | None = dataclasses.field(default=None, hash=False)
    reply: Any = dataclasses.field(default=None, hash=False)
    error: Raised | None = None
    blocked: str | None = None

    def __post_init__(self) -> None:
        if self.command is None:
            object.__setattr__(self, "command", self.request.text() if self.request is not None else "")
        if self.result is None:
            object.__setattr__(self, "result", outcome_text(self.reply, self.error, self.blocked))

    @property
    def commands(self) -> tuple[Command, ...]:
        """The Redis commands this call sent: one, several for a :class:`Batch`, none for SQL,
        sleeps, locks and calls recorded as text only."""
        request = self.request
        if type(request) is Command:
            return (request,)
        if type(request) is Batch:
            return request.commands
        return ()

    @property
    def keys(self) -> tuple[Any, ...]:
        """Every key this call's Redis commands name, as the layer named them, in order."""
        return tuple(key for command in self.commands for key in command.keys)


@dataclass(frozen=True)
class Probe:
    """A fresh client read ``key`` through the layer at quiescence (nothing in flight).

    ``observed`` is what the layer returned; ``source`` is what the source of truth holds.  The
    harness probes once at quiescence, then again after each jump of the clock to the cache's
    next expiry, until they agree or nothing is left to expire.

    ``time`` is when the probe was recorded, after the layer's read returned; ``began`` is when
    that read began, before any work of the layer's own (a lock wait, a sleep) moved the clock.
    ``expired`` is the expiry deadline the clock last jumped past before this probe: the last
    instant the entry that expired then still existed (a key is gone only once the clock is
    strictly past its deadline, as in Redis).  Both are ``None`` when not known (``began`` then
    reads as ``time``; ``expired`` as "no jump").
    """

    step: int
    time: float
    key: str
    observed: str | None
    source: str | None
    began: float | None = None
    expired: float | None = None

    @property
    def start(self) -> float:
        """When the probe's read began (``time`` for a probe recorded without ``began``)."""
        return self.time if self.began is None else self.began


Event = Union[Invoke, Complete, Call, Probe]

SCHEMA = "cachecheck-history/1"
"""The version :meth:`History.to_json` writes; :meth:`History.from_json` refuses any other."""
T = TypeVar("T")

_EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in (Invoke, Complete, Call, Probe)}


@dataclass(frozen=True)
class Operation:
    """An invoke joined with its completion (``complete_step`` is ``None`` while in flight)."""

    op: int
    client: int
    kind: OpKind
    key: str
    invoke_step: int
    invoke_time: float
    written: str | None = None
    complete_step: int | None = None
    complete_time: float | None = None
    status: Status | None = None
    observed: str | None = None
    error: str | None = None

    @property
    def is_write(self) -> bool:
        return self.kind in ("write", "delete")

    @property
    def acknowledged(self) -> bool:
        return self.status == "ok"

    def precedes(self, other: "Operation") -> bool:
        """Whether this operation completed before ``other`` was invoked (real-time order)."""
        return self.complete_step is not None and self.complete_step < other.invoke_step


@dataclass(frozen=True)
class History:
    """An ordered, immutable sequence of events with the views checkers need.

    ``locks`` names the Redis keys (names or glob patterns) the target said it uses as locks
    (:attr:`~pytest_cachecheck.Target.locks`), so that a checker, or an offline re-check, tells
    them from the commands' own evidence (:func:`~pytest_cachecheck.history.roles.key_roles`).
    """

    events: tuple[Event, ...]
    locks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        last_step, last_time = -1, float("-inf")
        for event in self.events:
            if event.step <= last_step or event.time < last_time:
                raise ValueError(
                    f"history out of order at {event!r}: step {event.step} after {last_step}, "
                    f"time {event.time} after {last_time}"
                )
            last_step, last_time = event.step, event.time

    def __iter__(self):
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def cached(self, name: str, build: Callable[["History"], T]) -> T:
        """``build(self)``, computed on first use and kept with the history under ``name``.

        A history is immutable, so a view derived from it never goes stale: checkers share the
        indices they build (per key, per operation) instead of rescanning the events.  ``name``
        must say what ``build`` computes; the views are no part of equality or serialisation.
        Views are built under :func:`paused_collector`.
        """
        views = self.__dict__.setdefault("_views", {})
        if name not in views:
            with paused_collector():
                views[name] = build(self)
        return views[name]

    def of_type(self, cls: type) -> list[Any]:
        """The events that are instances of ``cls``, in step order (a fresh list each call)."""
        return list(self._of_type(cls))

    def _of_type(self, cls: type) -> tuple[Any, ...]:
        by_type = self.cached("events by type", History._events_by_type)
        matching = [kind for kind in by_type if issubclass(kind, cls)]
        if len(matching) <= 1:  # one pass over the events serves every event type
            return by_type[matching[0]] if matching else ()
        return self.cached(f"of_type {cls.__module__}.{cls.__qualname__}", lambda history: tuple(
            event for event in history.events if isinstance(event, cls)
        ))

    def _events_by_type(self) -> dict[type, tuple[Any, ...]]:
        by_type: dict[type, list[Any]] = {}
        for event in self.events:
            kind = type(event)
            events = by_type.get(kind)
            if events is None:
                by_type[kind] = [event]
            else:
                events.append(event)
        return {kind: tuple(events) for kind, events in by_type.items()}

    @property
    def calls(self) -> list[Call]:
        return self.of_type(Call)

    @property
    def probes(self) -> list[Probe]:
        return self.of_type(Probe)

    def operations(self) -> list[Operation]:
        """Every operation in invocation order, completed or still in flight (computed once)."""
        return list(self.cached("operations", lambda history: tuple(
            _operation(invoke, complete) for invoke, complete in history.joined()
        )))

    def joined(self) -> tuple[tuple[Invoke, Complete | None], ...]:
        """Every operation as its invoke and its completion (``None`` while in flight), in
        invocation order: what :meth:`operations` is made of, without an object per operation
        (computed once; raises ``ValueError`` on a completion of an op never invoked)."""
        return self.cached("joined", History._join)

    def _join(self) -> tuple[tuple[Invoke, Complete | None], ...]:
        invoked: dict[int, Invoke] = {}
        completed: dict[int, Complete] = {}
        for event in self.events:
            if type(event) is Call:
                continue  # most events: skipped at the cost of one test
            if isinstance(event, Invoke):
                invoked[event.op] = event
                completed.pop(event.op, None)  # a re-invoked op starts afresh
            elif isinstance(event, Complete):
                if event.op not in invoked:
                    raise ValueError(f"completion of op {event.op} that was never invoked")
                completed[event.op] = event
        return tuple((invoke, completed.get(op)) for op, invoke in invoked.items())

    def calls_of(self, op: int) -> list[Call]:
        """The calls operation ``op`` made, in step order (indexed once, then O(1) per op)."""
        return list(self.cached("calls by op", History._calls_by_op).get(op, ()))

    def _calls_by_op(self) -> dict[int | None, list[Call]]:
        by_op: dict[int | None, list[Call]] = {}
        for call in self._of_type(Call):
            calls = by_op.get(call.op)
            if calls is None:
                by_op[call.op] = [call]
            else:
                calls.append(call)
        return by_op

    # Serialisation: a history can be saved and re-checked without re-running anything.

    def to_json(self) -> str:
        """The history as JSON: ``{"schema": "cachecheck-history/1", "events": [...]}``, and
        ``"locks": [...]`` when the target named its locks.

        Each event is an object of its fields plus ``"type"``.  A call with a ``request`` is
        written as data alone (its text is rendered again when read); values JSON lacks (bytes,
        tuples, sets, non-string keys) are tagged one-key objects, so :meth:`from_json` gives
        back an equal history, binary values included.
        """
        rows = [_row(event) for event in self.events]
        document: dict[str, Any] = {"schema": SCHEMA, "events": rows}
        if self.locks:  # written only when named, so a history without them reads as before
            document["locks"] = list(self.locks)
        return json.dumps(document, indent=None, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "History":
        """The history :meth:`to_json` wrote (also the earlier bare list of text-only events)."""
        data = json.loads(text)
        if isinstance(data, dict):
            if data.get("schema") != SCHEMA:
                raise ValueError(
                    f"not a history this version of pytest-cachecheck reads: schema {data.get('schema')!r}, "
                    f"expected {SCHEMA!r}"
                )
            rows = data["events"]
            locks = tuple(data.get("locks", ()))
        elif isinstance(data, list):
            rows, locks = data, ()  # the first format: events with text-only calls, which still read as such
        else:
            raise ValueError(f"not a cachecheck history: a JSON {type(data).__name__}")
        events = []
        for row in rows:
            kind = row.pop("type")
            if kind not in _EVENT_TYPES:
                raise ValueError(f"unknown history event type {kind!r}")
            events.append(_EVENT_TYPES[kind](**{name: decode(value) for name, value in row.items()}))
        return cls(tuple(events), locks)

    @classmethod
    def of(cls, events: Iterable[Event], locks: Iterable[str] = ()) -> "History":
        return cls(tuple(events), tuple(locks))


@contextlib.contextmanager
def paused_collector() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block; after a bulk of allocations, file what
    is young as old.

    For code that builds or walks a history's views: on a large history it allocates objects by
    the million, none in a cycle.  Collecting them would free nothing, yet the young generations'
    collections would scan them all on their way to the oldest one (seconds, for a million
    operations).  So after more than ``_BULK`` allocations they are moved there at once, which
    is what ``gc.freeze()`` then ``gc.unfreeze()`` does (unless the process keeps frozen objects
    of its own).  Small blocks, an exploration's, leave the collector's rhythm alone.
    """
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_count()[0] > _BULK and gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        if running:
            gc.enable()


_BULK = 100_000
"""Objects allocated (net) in a :func:`paused_collector` block past which they are filed as old."""


def _row(event: Event) -> dict[str, Any]:
    """One event as a JSON object: its type and fields (a call's text left out when its data
    renders it)."""
    row: dict[str, Any] = {"type": type(event).__name__}
    derived = type(event) is Call and event.request is not None  # type: ignore[union-attr]
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if derived and field.name in ("command", "result"):
            continue
        if type(event) is Call and field.name in ("request", "reply", "error", "blocked") and value is None:
            continue
        row[field.name] = encode(value)
    return row


def _operation(invoke: Invoke, complete: Complete | None) -> Operation:
    """An invoke joined with its completion, if any."""
    if complete is None:
        return Operation(
            invoke.op, invoke.client, invoke.kind, invoke.key, invoke.step, invoke.time, invoke.value
        )
    return Operation(
        invoke.op, invoke.client, invoke.kind, invoke.key, invoke.step, invoke.time, invoke.value,
        complete.step, complete.time, complete.status, complete.value, complete.error,
    )

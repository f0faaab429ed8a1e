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

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Union

__all__ = [
    "Call",
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

    ``system`` is ``redis``, ``sql``, ``sleep`` or ``lock``; ``command`` and ``result`` are
    rendered text (``SETEX user:u1 3600 '{"name": "u1.v0"}'``).  ``op`` is the operation the task
    was running, or ``None`` for setup and background work.
    """

    step: int
    time: float
    client: int
    actor: str
    op: int | None
    system: str
    command: str
    result: str


@dataclass(frozen=True)
class Probe:
    """A fresh client read ``key`` through the layer at quiescence (nothing in flight).

    ``observed`` is what the layer returned; ``source`` is what the source of truth holds.  The
    harness probes once at quiescence, then again after each jump of the clock to the cache's
    next expiry, until they agree or nothing is left to expire.
    """

    step: int
    time: float
    key: str
    observed: str | None
    source: str | None


Event = Union[Invoke, Complete, Call, Probe]

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
    """An ordered, immutable sequence of events with the views checkers need."""

    events: tuple[Event, ...]

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

    def of_type(self, cls: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, cls)]

    @property
    def calls(self) -> list[Call]:
        return self.of_type(Call)

    @property
    def probes(self) -> list[Probe]:
        return self.of_type(Probe)

    def operations(self) -> list[Operation]:
        """Every operation in invocation order, completed or still in flight (computed once)."""
        cached = self.__dict__.get("_operations")
        if cached is None:
            cached = self._join_operations()
            object.__setattr__(self, "_operations", cached)
        return list(cached)

    def _join_operations(self) -> tuple[Operation, ...]:
        by_op: dict[int, Operation] = {}
        for event in self.events:
            if isinstance(event, Invoke):
                by_op[event.op] = Operation(
                    op=event.op,
                    client=event.client,
                    kind=event.kind,
                    key=event.key,
                    invoke_step=event.step,
                    invoke_time=event.time,
                    written=event.value,
                )
            elif isinstance(event, Complete):
                started = by_op.get(event.op)
                if started is None:
                    raise ValueError(f"completion of op {event.op} that was never invoked")
                by_op[event.op] = dataclasses.replace(
                    started,
                    complete_step=event.step,
                    complete_time=event.time,
                    status=event.status,
                    observed=event.value,
                    error=event.error,
                )
        return tuple(by_op.values())

    def calls_of(self, op: int) -> list[Call]:
        return [call for call in self.calls if call.op == op]

    # Serialisation: a history can be saved and re-checked without re-running anything.

    def to_json(self) -> str:
        rows = [{"type": type(event).__name__, **dataclasses.asdict(event)} for event in self.events]
        return json.dumps(rows, indent=None, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "History":
        events = []
        for row in json.loads(text):
            kind = row.pop("type")
            if kind not in _EVENT_TYPES:
                raise ValueError(f"unknown history event type {kind!r}")
            events.append(_EVENT_TYPES[kind](**row))
        return cls(tuple(events))

    @classmethod
    def of(cls, events: Iterable[Event]) -> "History":
        return cls(tuple(events))


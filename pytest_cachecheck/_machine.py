"""The Hypothesis state machine that takes every decision of a run.

Rules: ``read(client, key, pause_after)``, ``write(...)`` and ``delete(...)`` start an operation
on a client (a busy client first finishes what it was doing) and run it for ``pause_after``
scheduling points, or to the end when ``pause_after`` is None; ``resume(client, pause_after)``
runs a paused operation on; ``tick(seconds)`` advances virtual time.  At teardown the run drains
(newest operation first), probes every key with a fresh client, and is judged.

The encoding is chosen for shrinking and for search.  A preemption is an argument, and its
simplest value (None: run on) removes it, so the minimal program keeps only the pauses the bug
needs: the seed's cache-aside race is two decisions, a read paused after its source query and
a write.  No rule has a precondition: a filtered rule choice shifts every later choice when a
step is deleted, so resuming an idle client is a no-op instead, which the shrinker deletes or
the trace leaves out.  Written values are not drawn: each write stores the next fresh token.
"""

from __future__ import annotations

from typing import Any, Callable

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from ._run import Run, RunConfig
from ._scheduler import Stall, UncontrolledBlocking
from .target import Target
from .verdict import Finding, Verdict

TICKS = (1.0, 10.0, 60.0, 600.0, 3600.0)
MAX_PAUSE = 12
"""A preemption after more points than this is left to ``resume``."""


class Decision:
    """One choice of the machine; its repr is the line the program prints."""

    __slots__ = ()

    def apply(self, run: Run) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class Start(Decision):
    """Start an operation on ``client`` and run it for ``pause_after`` points (None: to the end)."""

    __slots__ = ("client", "key", "pause_after")
    kind = ""

    def __init__(self, client: int, key: str, pause_after: int | None = None) -> None:
        self.client, self.key, self.pause_after = client, key, pause_after

    def apply(self, run: Run) -> None:
        run.start(self.client, self.kind, self.key, self.pause_after, text=repr(self))

    def __repr__(self) -> str:
        pause = "" if self.pause_after is None else f", pause_after={self.pause_after}"
        return f"{type(self).__name__}(client={self.client}, key={self.key!r}{pause})"


class Read(Start):
    __slots__ = ()
    kind = "read"


class Write(Start):
    __slots__ = ()
    kind = "write"


class Delete(Start):
    __slots__ = ()
    kind = "delete"


class Resume(Decision):
    """Run ``client``'s paused operation on for ``pause_after`` points (None: to the end)."""

    __slots__ = ("client", "pause_after")

    def __init__(self, client: int, pause_after: int | None = None) -> None:
        self.client, self.pause_after = client, pause_after

    def apply(self, run: Run) -> None:
        run.resume(self.client, self.pause_after, text=repr(self))

    def __repr__(self) -> str:
        pause = "" if self.pause_after is None else f", pause_after={self.pause_after}"
        return f"Resume(client={self.client}{pause})"


class Tick(Decision):
    """Advance virtual time by ``seconds``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def apply(self, run: Run) -> None:
        run.tick(self.seconds, text=repr(self))

    def __repr__(self) -> str:
        return f"Tick(seconds={self.seconds:g})"


_STARTS = {"read": Read, "write": Write, "delete": Delete}


# How often each value is drawn: weights, by repetition in one flat list.
_PAUSE_WEIGHTS = {None: 6, 1: 4, 2: 4, 3: 4, 4: 1, 5: 1, 6: 1, 8: 1, 10: 1, 12: 1}


def decisions(target: Target) -> st.SearchStrategy[Decision]:
    """Every decision the machine can take on ``target``, simplest first.

    One strategy behind one rule, rather than a rule per kind: Hypothesis's swarm testing
    disables whole rules per example, and a run whose writes or reads are all disabled cannot
    race.  It is a single ``sampled_from`` over every decision, weighted by repetition (one
    draw per decision instead of a nest of them: generation is several times faster), and
    ordered so that shrinking towards the first element simplifies: ``Resume`` of client 1
    first (a no-op when idle), then operations that run on to the end, ticks, and only then
    preemptions.  Short pauses are drawn more often, since most operations take a few points;
    the first key is drawn more often, since races need two clients on one key.
    """
    clients = range(1, target.clients + 1)
    key_weights = {key: (len(target.keys) if i == 0 else 1) for i, key in enumerate(target.keys)}
    starts = [_STARTS[kind] for kind in target.kinds]
    per_branch: list[list[tuple[tuple, Decision]]] = []
    per_branch.append(
        [((p is not None, 0, c, 0, p or 0), Resume(c, p)) for c in clients for p in _weighted(_PAUSE_WEIGHTS)]
    )
    for order, start in enumerate(starts, 1):
        per_branch.append(
            [
                ((p is not None, order, c, list(key_weights).index(k), p or 0), start(c, k, p))
                for c in clients
                for k in _weighted(key_weights)
                for p in _weighted(_PAUSE_WEIGHTS)
            ]
        )
    per_branch.append([((False, len(starts) + 1, 0, i, 0), Tick(t)) for i, t in enumerate(TICKS)])
    # Each branch (resume, each kind of operation, tick) is drawn equally often.
    size = max(len(branch) for branch in per_branch)
    pool = [entry for branch in per_branch for entry in branch * (size // len(branch))]
    pool.sort(key=lambda entry: entry[0])
    return st.sampled_from([decision for _, decision in pool])


def _weighted(weights: dict) -> list:
    return [value for value, weight in weights.items() for _ in range(weight)]


class Violation(AssertionError):
    """An example broke a property; carries the verdicts and the annotated trace."""

    def __init__(self, headline: str, verdicts: list[Any], trace: str, history: Any) -> None:
        super().__init__(headline)
        self.headline = headline
        self.verdicts = verdicts
        self.trace = trace
        self.history = history


class Aborted(BaseException):
    """Uncontrolled blocking: the run cannot be continued, replayed or shrunk in wall time.

    A ``BaseException`` so that Hypothesis does not try to shrink it (each try would cost the
    watchdog's wall seconds); the exploration reports it with the trace as it stands.
    """

    def __init__(self, stall: Stall, trace: str) -> None:
        super().__init__(stall.message)
        self.stall = stall
        self.trace = trace


def build_machine(
    target: Target,
    config: RunConfig,
    backend: Any,
    judge: Callable[[Run, "Stall | None"], None],
    record: Callable[[Run], None],
) -> type[RuleBasedStateMachine]:
    """A machine class for ``target``.

    ``judge`` checks a quiescent run, or the stall that stopped it, and raises
    :class:`Violation`; ``record`` sees every run as it closes, failing or not, for the
    exploration's figures.
    """

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.run = Run(target, config, backend)
            self.run.machine_name = type(self).__name__

        def _repr_step(self, rule: Any, data: Any, result: Any) -> str:  # Hypothesis's printer
            text = super()._repr_step(rule, data, result)
            if not self.run.steps:
                return text
            lines = self.run.annotations(self.run.steps[-1])
            return "\n".join([text, *(f"    # {line}" for line in lines)])

        def decide(self, action: Callable[[], None]) -> None:
            if self.run.broken:
                return
            try:
                action()
            except UncontrolledBlocking as stall:
                self.run.broken = True
                raise Aborted(stall, self.run.trace()) from None
            except Stall as stall:
                self.run.broken = True
                judge(self.run, stall)

        def teardown(self) -> None:
            # A run broken by a stall already raised its Violation from the rule that found it.
            try:
                if not self.run.broken:
                    self.decide(self.run.quiesce)
                if not self.run.broken:
                    judge(self.run, None)
            finally:
                record(self.run)
                self.run.close()

    Machine.do = rule(step=decisions(target))(_do)
    Machine.__name__ = Machine.__qualname__ = _class_name(target.name)
    return Machine


def stall_verdict(run: Run, stall: Stall) -> Verdict:
    """A stall (hang, deadlock, livelock, error at quiescence) as a violated property."""
    finding = Finding(property=stall.kind, message=stall.message, steps=(len(run.scheduler.events),))
    return Verdict.of(stall.kind, [finding])


def _do(self: Any, step: "Decision") -> None:
    self.decide(lambda: step.apply(self.run))


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace(".", "-").replace("_", "-").split("-") if part) or "Layer"

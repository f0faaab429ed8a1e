"""The Hypothesis state machine that takes every decision of a run.

Rules, per simulated client ``cN``: ``cN_read(key)``, ``cN_write(key)``, ``cN_delete(key)`` start
an operation on an idle client and run it through its first scheduling point; ``cN_step()``
executes its next point; ``cN_finish()`` runs it to the end (or until it blocks).  ``tick``
advances virtual time.  At teardown the run drains, probes and is checked.

Shrinking removes rules, so the minimal failing program has the fewest decisions: operations that
do not matter disappear, and so do preemptions, because finishing an operation is one rule
where interleaving it point by point is many.  Written values are not drawn: every write stores
the next fresh token, so they cannot make a counterexample longer.
"""

from __future__ import annotations

from typing import Any, Callable

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from ._run import Run, RunConfig
from ._scheduler import Stall, UncontrolledBlocking
from .target import Target

TICKS = (1.0, 10.0, 60.0, 600.0, 3600.0)


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
    judge: Callable[[Run], None],
    record: Callable[[Run], None],
) -> type[RuleBasedStateMachine]:
    """A machine class for ``target``.

    ``judge`` checks a quiescent run and raises :class:`Violation`; ``record`` sees every run as
    it closes, failing or not, for the exploration's figures.
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
                judge_stall(self.run, stall)

        @rule(seconds=st.sampled_from(TICKS))
        def tick(self, seconds: float) -> None:
            self.decide(lambda: self.run.tick(seconds))

        def teardown(self) -> None:
            # A run broken by a stall already raised its Violation from the rule that found it.
            try:
                if not self.run.broken:
                    self.decide(self.run.quiesce)
                if not self.run.broken:
                    judge(self.run)
            finally:
                record(self.run)
                self.run.close()

    keys = st.sampled_from(target.keys)
    for number in range(1, target.clients + 1):
        for kind in target.kinds:
            _add(Machine, f"c{number}_{kind}", _starter(number, kind), keys, idle=number)
        _add(Machine, f"c{number}_step", _mover(number, "step"), None, busy=number)
        _add(Machine, f"c{number}_finish", _mover(number, "finish"), None, busy=number)
    Machine.__name__ = Machine.__qualname__ = _class_name(target.name)
    return Machine


def judge_stall(run: Run, stall: Stall) -> None:
    from .verdict import Finding, Verdict

    finding = Finding(property=stall.kind, message=stall.message, steps=(len(run.scheduler.events),))
    raise Violation(stall.message, [Verdict.of(stall.kind, [finding])], run.trace(), run.history())


def _starter(number: int, kind: str) -> Callable[..., None]:
    def start(self: Any, key: str) -> None:
        self.decide(lambda: self.run.start(number, kind, key))

    return start


def _mover(number: int, how: str) -> Callable[..., None]:
    def move(self: Any) -> None:
        self.decide(lambda: getattr(self.run, how)(number))

    return move


def _add(
    machine: type,
    name: str,
    function: Callable[..., None],
    keys: Any,
    *,
    idle: int | None = None,
    busy: int | None = None,
) -> None:
    function.__name__ = function.__qualname__ = name
    if idle is not None:
        guard = precondition(lambda self, n=idle: not self.run.broken and self.run.is_idle(n))
    else:
        guard = precondition(lambda self, n=busy: not self.run.broken and self.run.can_step(n))
    decorated = rule(key=keys)(function) if keys is not None else rule()(function)
    setattr(machine, name, guard(decorated))


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace(".", "-").replace("_", "-").split("-") if part) or "Layer"

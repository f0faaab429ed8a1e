"""The Hypothesis state machine that takes every decision of a run.

One rule, ``do(step)``, whose argument is a :mod:`decision <pytest_cachecheck._decisions>`:
start an operation on a client and preempt it after some points, resume a paused client, or
advance virtual time.  The printed program is therefore the interleaving itself.  At teardown
the run drains (newest operation first), probes every key with a fresh client, and is judged;
a stall (deadlock, hang) found on the way is judged at once.
"""

from __future__ import annotations

from typing import Any, Callable

from hypothesis.stateful import RuleBasedStateMachine, rule

from ._decisions import Decision, decisions
from ._run import Run, RunConfig
from ._scheduler import Stall, UncontrolledBlocking
from .target import Target
from .verdict import Finding, Verdict

class Violation(AssertionError):
    """An example broke a property; carries the verdicts and the annotated trace."""

    def __init__(self, verdicts: list[Any], trace: str, history: Any) -> None:
        super().__init__(", ".join(v.property for v in verdicts if v.status == "violated"))
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


def _do(self: Any, step: Decision) -> None:
    self.decide(lambda: step.apply(self.run))


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace(".", "-").replace("_", "-").split("-") if part) or "Layer"

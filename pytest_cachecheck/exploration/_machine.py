"""The Hypothesis state machine that takes every decision of a run.

One rule, ``do(step)``, whose argument is a :mod:`decision <pytest_cachecheck.exploration._decisions>`:
start an operation on a client and preempt it after some points, resume a paused client, or
advance virtual time.  The printed program is therefore the interleaving itself.  At teardown
the run drains (newest operation first), probes every key with a fresh client, and is judged;
a stall (deadlock, hang) found on the way is judged at once.

A server that fails under a run (goes away, refuses, stops answering) is no finding: after every
decision, and whenever the harness's own calls raise, the machine looks for such a fault; the
first one stops the exploration with :class:`EnvironmentAbort`, and the run is closed quietly,
within a time limit.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from hypothesis.stateful import RuleBasedStateMachine, rule

from ..backends._environment import (
    EnvironmentFailure,
    classify_exception,
    close_quietly,
    first_fault,
    real_systems,
    server_name,
    stalled_in_server,
)
from ..engine._scheduler import Stall, UncontrolledBlocking
from ..report._trace import annotations, trace
from ..target import Target
from ..verdict import Finding, Verdict
from ._decisions import Decision, decisions
from ._run import Run, RunConfig


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


class EnvironmentAbort(BaseException):
    """A server failed under the run: the exploration stops here, with ``failure``'s one line.

    A ``BaseException``, like :class:`Aborted`, so that Hypothesis neither shrinks it nor
    replays it (a replay meets a dead server, or a revived one, and Hypothesis would call the
    test flaky); nothing of it is saved in the example database.
    """

    def __init__(self, failure: EnvironmentFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


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

    examples = itertools.count(1)
    real = real_systems(backend)

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.example = next(examples)
            self.fault: EnvironmentFailure | None = None
            self._scanned = 0
            try:
                self.run = Run(target, config, backend)
            except Exception as exc:  # resetting or filling the servers, connecting, building
                self.check_environment(exc)
                raise
            self.run.machine_name = type(self).__name__

        def check_environment(self, exc: BaseException | None = None) -> None:
            """Raise :class:`EnvironmentAbort` if a server failed under this example.

            Looks at the calls recorded since the last look (a failure the layer saw, even if it
            caught it), then at ``exc`` (a failure of the harness's own calls), then, for a task
            the watchdog caught, at where it is stuck.
            """
            run = getattr(self, "run", None)
            fault = None
            if run is not None:
                events = run.scheduler.events
                fault = first_fault(events[self._scanned :], real)
                self._scanned = len(events)
            if fault is None:
                fault = classify_exception(exc, real)
            if fault is None and isinstance(exc, UncontrolledBlocking) and exc.task is not None:
                fault = stalled_in_server(exc.task, backend)
            if fault is None:
                return
            if run is not None:
                run.broken = True
            self.fault = EnvironmentFailure(fault, server_name(backend, fault.system), target.name, self.example)
            raise EnvironmentAbort(self.fault) from None

        def _repr_step(self, rule: Any, data: Any, result: Any) -> str:  # Hypothesis's printer
            text = super()._repr_step(rule, data, result)
            if not self.run.steps:
                return text
            lines = annotations(self.run.steps[-1], self.run.scheduler.events)
            return "\n".join([text, *(f"    # {line}" for line in lines)])

        def decide(self, action: Callable[[], None]) -> None:
            if self.run.broken:
                return
            try:
                action()
            except UncontrolledBlocking as stall:
                self.run.broken = True
                self.check_environment(stall)
                raise Aborted(stall, trace(self.run)) from None
            except Stall as stall:
                self.run.broken = True
                self.check_environment(stall)
                judge(self.run, stall)
            except Exception as exc:
                self.check_environment(exc)
                raise
            else:
                self.check_environment()

        def teardown(self) -> None:
            # A run broken by a stall already raised its Violation from the rule that found it;
            # one broken by a server fault is only closed.
            try:
                if not self.run.broken:
                    self.decide(self.run.quiesce)
                if not self.run.broken:
                    judge(self.run, None)
            finally:
                record(self.run)
                if self.fault is not None:
                    close_quietly(self.run.close)
                else:
                    self.close()

        def close(self) -> None:
            try:
                self.run.close()
            except Exception as exc:  # the servers may fail while the example's data is removed
                self.check_environment(exc)
                raise

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

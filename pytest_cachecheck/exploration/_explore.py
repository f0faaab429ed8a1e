"""Exploring a target: Hypothesis takes the decisions, checkers judge each run.

Every example is a fresh :class:`~pytest_cachecheck.exploration._run.Run`.  The first example that breaks
a property is shrunk by Hypothesis to the fewest decisions; the failure raised carries the story
of the minimal example and its annotated trace.  Blocking outside the harness's control cannot
be shrunk in wall time, so it is reported at once, unshrunk.

Determinism: a seed fixes Hypothesis's choices, and a run is a pure function of those choices,
so the same seed gives the same examples and the same trace, byte for byte.  The verdicts of a
failing exploration are those of its minimal example, so they do not depend on what the
example database replayed first.

A server that fails under the exploration (goes away, refuses, stops answering) stops it at
once: :class:`~pytest_cachecheck.backends._environment.EnvironmentFailure`, one line, no finding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.database import ExampleDatabase
from hypothesis.stateful import run_state_machine_as_test

from ..backends._environment import EnvironmentFailure, close_backend
from ..backends._servers import Servers
from ..checkers import check, checker_manager
from ..checkers.confinement import confinement, process_hazards
from ..engine import _patches
from ..engine._quiet import Chatter, quiet_layer
from ..engine._scheduler import Stall
from ..history._printable import printable
from ..report._report import Report, describe_failure
from ..report._trace import trace
from ..target import Target
from ._constants import no_local_constants
from ._machine import Aborted, EnvironmentAbort, Violation, build_machine, stall_verdict
from ._run import Run, RunConfig


class CachecheckFailure(AssertionError):
    """A target broke its contract.  ``str()`` is the full story; ``report`` the figures."""

    def __init__(self, message: str, report: Report, violation: Violation | None = None) -> None:
        super().__init__(message)
        self.report = report
        self.violation = violation


@dataclass(frozen=True)
class Budget:
    """How much to explore."""

    examples: int = 500
    steps: int = 20
    seed: int = 0
    database: ExampleDatabase | None = None
    replay: str = ""
    """How to re-run this exploration, for the failure message (default: the Budget itself)."""
    key: str = ""
    """Names this exploration in the example database (default: the target's name)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.examples, int) and self.examples >= 1):
            raise ValueError(f"examples={self.examples!r} must be a positive integer")
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"steps={self.steps!r} must be a positive integer")


def explore(
    target: Target,
    budget: Budget = Budget(),
    *,
    plugins: Iterable[Any] = (),
    config: RunConfig = RunConfig(),
    servers: Servers | None = None,
    backend: Any = None,
) -> Report:
    """Drive ``target`` through ``budget.examples`` interleavings; raise on the first violation.

    Runs on ``servers`` (the embedded default when None), or on an open ``backend``.  Returns
    the :class:`Report` when every example passed; raises :class:`CachecheckFailure` (an
    ``AssertionError``) with the minimal counterexample otherwise, or
    :class:`~pytest_cachecheck.backends._environment.EnvironmentFailure` (one line) when a server failed
    under the exploration.
    """
    checkers = checker_manager(plugins)
    own_backend = backend is None
    backend = backend if backend is not None else (servers or Servers()).backend()
    report = Report(target, backend.name, budget.seed)

    def judge(run: Run, stall: Stall | None) -> None:
        history = run.history()
        if stall is not None:
            # A stall ends the run before quiescence, so most properties cannot be judged; what
            # the layer tried beyond its data or process is known all the same, and is told too.
            beyond = (confinement(history), process_hazards(history))
            verdicts = [stall_verdict(run, stall), *(v for v in beyond if v.status == "violated")]
        else:
            verdicts = check(history, target.contract, manager=checkers)
        report.absorb_verdicts(verdicts)
        if any(v.status == "violated" for v in verdicts):
            report.first_failure(time.perf_counter() - started)
            cited = {step for v in verdicts if v.status == "violated" for f in v.findings for step in f.steps}
            found.append(Violation(verdicts, trace(run, keep=cited), history))
            raise found[-1]

    def record(run: Run) -> None:
        report.absorb_history(run.history())

    found: list[Violation] = []  # every failing example so far; shrinking only ever adds smaller ones
    machine = build_machine(target, config, backend, judge, record)
    # The database keys saved examples by this digest: one per target and test, so a failure
    # saved for one target is never replayed into another.
    machine._hypothesis_internal_add_digest = f"cachecheck:{budget.key or target.name}".encode()
    started = time.perf_counter()
    hypothesis_seed(budget.seed)(machine)
    run_settings = settings(
        max_examples=budget.examples,
        stateful_step_count=budget.steps,
        deadline=None,
        database=budget.database,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        print_blob=False,
    )
    failure: CachecheckFailure | None = None
    environment: EnvironmentFailure | None = None
    chatter = Chatter()
    try:
        with quiet_layer(chatter), _patches.simulated_world(), no_local_constants():
            try:
                run_state_machine_as_test(machine, settings=run_settings)
            except BaseException as exc:
                stopped = _stopped_by_us(exc)
                if stopped is exc:
                    raise
                raise stopped from None
    except Violation as violation:
        failure = _violated(target, budget, report, violation)
    except Aborted as aborted:
        if found:
            # A try made while shrinking blocked outside the harness: the failure already found
            # stands, as small as shrinking had made it.
            note = f"(Shrinking stopped here: a smaller try hit the watchdog: {printable(aborted.stall.message)})"
            failure = _violated(target, budget, report, found[-1], note)
        else:
            failure = _aborted(target, report, aborted)
    except EnvironmentAbort as abort:
        environment = abort.failure
    finally:
        if own_backend:
            cleanup = close_backend(backend, quietly=environment is not None, where=target.name, example=report.examples)
            if failure is None:  # a finding stands even if the server then fails at cleanup
                environment = environment or cleanup
        report.wall_seconds = time.perf_counter() - started
        report.layer_log_records = chatter.log_records
    if environment is not None:
        raise environment
    if failure is not None:
        raise failure
    return report


def _violated(target: Target, budget: Budget, report: Report, violation: Violation, note: str = "") -> CachecheckFailure:
    # The minimal example's verdicts, not every example's: shrinking meets other failures on its
    # way, and a database replay meets none of them.
    report.judged_by(violation.verdicts)
    replay = budget.replay or f"explore(target, Budget(seed={budget.seed}, examples={budget.examples}, steps={budget.steps}))"
    report.failure = describe_failure(target, violation.verdicts, violation.trace, replay)
    if note:
        report.failure += f"\n\n{note}"
    return CachecheckFailure(report.failure, report, violation)


def _aborted(target: Target, report: Report, aborted: Aborted) -> CachecheckFailure:
    report.properties = {aborted.stall.kind: "violated"}  # the verdict of the example that stalled
    report.failure = (
        f"cachecheck: {target.name} violates {aborted.stall.kind}\n\n"
        f"[{aborted.stall.kind}] {printable(aborted.stall.message)}\n\n"
        "Interleaving when it happened (not shrunk: each try would cost the watchdog's wall time):\n"
        f"{aborted.trace}"
    )
    return CachecheckFailure(report.failure, report)


def _stopped_by_us(exc: BaseException) -> BaseException:
    """The :class:`Aborted` or :class:`EnvironmentAbort` behind ``exc``, else ``exc`` itself.

    Both stop an example midway on purpose.  Hypothesis, while handling one, may find that the
    example drew less than an earlier one with the same start and raise its own error
    (``FlakyStrategyDefinition``) in its place; ours is then that error's context.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (Aborted, EnvironmentAbort)):
            return cause
        seen.add(id(cause))
        cause = cause.__context__
    return exc

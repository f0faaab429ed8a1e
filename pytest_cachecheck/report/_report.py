"""What an exploration tells, pass or fail: verdicts per property and the figures behind them.

A pass says something too: how many examples, scheduling steps and operations were explored,
the largest stale-read window seen, how often reads were served from the cache and how hard the
source was hit.  A failure reads like a story, then shows the minimal interleaving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from ..history import SETUP_CLIENT, Call, Complete, History, Invoke
from ..history._printable import printable
from ..target import Target
from ..verdict import Verdict

_RANK = {"ok": 0, "unknown": 1, "violated": 2}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def seconds(value: float) -> str:
    return "forever" if math.isinf(value) else f"{value:g} s"


@dataclass
class Report:
    """Figures accumulated over every example of one exploration of one target."""

    target: Target
    backend: str
    seed: int
    examples: int = 0
    points: int = 0
    operations: int = 0
    reads: int = 0
    hits: int = 0
    source_queries: int = 0
    stale_window: float = 0.0
    longest_divergence: float = 0.0
    stampede_max: float = 0.0
    """The most source loads of one key in one miss window, over every example."""
    stampede_loads: float = 0.0
    stampede_windows: float = 0.0
    """Miss windows that loaded the source, and their loads, over every example (their ratio is
    the mean stampede)."""
    lock_holds: int = 0
    holders_past_expiry: int = 0
    """Lock sections whose holder still wrote (or released) after its lock had expired."""
    longest_past_expiry: float = 0.0
    properties: dict[str, str] = field(default_factory=dict)
    """Each property's verdict: on a pass, the worst over every example; on a failure, the
    minimal example's (:meth:`judged_by`), whatever else the exploration met on its way."""
    within_contract: dict[str, int] = field(default_factory=dict)
    """Findings the contract allows (a stale read younger than the bound), per property."""
    failure: str | None = None
    wall_seconds: float = 0.0
    layer_log_records: int = 0
    seconds_to_first_failure: float | None = None
    examples_to_first_failure: int | None = None

    def absorb_history(self, history: History) -> None:
        """Count one example's work (whether or not it was judged)."""
        self.examples += 1
        reads: dict[int, int] = {}
        for event in history:
            if isinstance(event, Call):
                self.points += 1
                if event.op is not None and event.op in reads and event.system == "sql":
                    reads[event.op] += 1
                    self.source_queries += 1
            elif isinstance(event, Invoke) and event.client != SETUP_CLIENT:
                self.operations += 1
                if event.kind == "read":
                    reads[event.op] = 0
            elif isinstance(event, Complete) and event.op in reads and event.status == "ok":
                self.reads += 1
                self.hits += reads[event.op] == 0

    def absorb_verdicts(self, verdicts: Iterable[Verdict]) -> None:
        for verdict in verdicts:
            before = self.properties.get(verdict.property, "ok")
            if _RANK[verdict.status] >= _RANK[before]:
                self.properties[verdict.property] = verdict.status
            allowed = sum(1 for finding in verdict.findings if not finding.violates)
            if allowed:
                self.within_contract[verdict.property] = self.within_contract.get(verdict.property, 0) + allowed
            self.stale_window = max(self.stale_window, float(verdict.figures.get("stale_window", 0.0)))
            self.longest_divergence = max(
                self.longest_divergence, float(verdict.figures.get("longest_divergence", 0.0))
            )
            if verdict.property == "mutual-exclusion":
                self.lock_holds += int(verdict.figures.get("lock_holds", 0))
                self.holders_past_expiry += int(verdict.figures.get("holders_past_expiry", 0))
                self.longest_past_expiry = max(
                    self.longest_past_expiry, float(verdict.figures.get("longest_past_expiry", 0.0))
                )
            if verdict.property == "stampede":
                self.stampede_max = max(self.stampede_max, float(verdict.figures.get("stampede_max", 0.0)))
                self.stampede_loads += float(verdict.figures.get("stampede_loads", 0.0))
                self.stampede_windows += float(verdict.figures.get("stampede_windows", 0.0))

    def judged_by(self, verdicts: Iterable[Verdict]) -> None:
        """The verdicts of the failure the exploration ends on replace those accumulated.

        Shrinking runs many failing examples that break other properties, and a failure replayed
        from the example database runs none of them: only the minimal example's verdicts are
        the same either way.  The figures keep counting every example.
        """
        self.properties = {verdict.property: verdict.status for verdict in verdicts}

    def first_failure(self, elapsed: float) -> None:
        """Note when the first failing example was met (before any shrinking)."""
        if self.seconds_to_first_failure is None:
            self.seconds_to_first_failure = elapsed
            self.examples_to_first_failure = self.examples + 1

    @property
    def passed(self) -> bool:
        return self.failure is None

    def summary_lines(self) -> list[str]:
        verdicts = ", ".join(
            f"{name} {status}" + (f" ({self.within_contract[name]} within contract)" if name in self.within_contract else "")
            for name, status in sorted(self.properties.items())
        ) or "none judged"
        hit_rate = f"{100 * self.hits / self.reads:.0f}%" if self.reads else "n/a"
        per_read = f"{self.source_queries / self.reads:.2f}" if self.reads else "n/a"
        return [
            f"{self.target.name}: {'PASSED' if self.passed else 'FAILED'} "
            f"(contract: {self.target.contract.describe()}; {self.backend})",
            f"  verdicts: {verdicts}",
            f"  largest stale-read window: {seconds(self.stale_window)}; "
            f"longest divergence: {seconds(self.longest_divergence)}",
            f"  explored: {plural(self.examples, 'example')}, {plural(self.points, 'scheduling step')}, "
            f"{plural(self.operations, 'operation')} in {self.wall_seconds:.1f} s (test seed {self.seed})",
            f"  reads: {self.reads}, hit rate {hit_rate}, source queries per read {per_read}"
            + (f"; the layer logged {self.layer_log_records} records (not shown)" if self.layer_log_records else ""),
        ] + ([self._stampede_line()] if "stampede" in self.properties else []) + (
            [
                f"  locks: {plural(self.lock_holds, 'hold')}, {self.holders_past_expiry} of them worked past "
                f"the lock's expiry (longest by {seconds(self.longest_past_expiry)})"
            ]
            if self.lock_holds
            else []
        )

    def _stampede_line(self) -> str:
        if not self.stampede_windows:
            return "  stampede: no source load of a missing key"
        mean = self.stampede_loads / self.stampede_windows
        return (
            f"  stampede: at most {plural(int(self.stampede_max), 'source load')} of one missing key "
            f"(mean {mean:.1f})"
        )


def count_decisions(trace: str) -> int:
    """How many machine decisions a printed trace holds."""
    return sum(1 for line in trace.splitlines() if line.startswith("state."))


def describe_failure(target: Target, verdicts: list[Verdict], trace: str, replay: str) -> str:
    """The failure message: the findings told in cache terms, then the minimal interleaving."""
    violated = [v for v in verdicts if v.status == "violated"]
    names = ", ".join(v.property for v in violated) or "a property"
    lines = [f"cachecheck: {target.name} violates {names} (contract: {target.contract.describe()})", ""]
    for verdict in violated:
        for finding in verdict.violations:
            lines.append(printable(f"[{finding.property}] {finding.message}"))
    decisions = count_decisions(trace)
    lines += [
        "",
        f"Minimal interleaving ({plural(decisions, 'decision')}); replay: {replay}",
        trace,
    ]
    return "\n".join(lines)

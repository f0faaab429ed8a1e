"""What a checker concludes about one property of one history.

A verdict is three-valued, like Porcupine's: ``ok`` (the property holds on this history),
``violated`` (at least one finding lies outside the layer's contract) or ``unknown`` (the
checker could not decide, for instance because the run ended before quiescence).  Read
``unknown`` as "explore longer or drain", never as a pass.

Findings inside the contract (a stale read younger than the allowed staleness) are kept as
figures: they never fail a test, but the report shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

__all__ = ["Finding", "Verdict"]

VerdictStatus = Literal["ok", "violated", "unknown"]


@dataclass(frozen=True)
class Finding:
    """One observation about a property, told in cache terms.

    ``steps`` are the history steps the story points at; ``figures`` its numbers (``age``,
    ``lag``, ``persists`` ...); ``violates`` whether it lies outside the contract.
    """

    property: str
    message: str
    key: str | None = None
    steps: tuple[int, ...] = ()
    figures: Mapping[str, float] = field(default_factory=dict)
    violates: bool = True


@dataclass(frozen=True)
class Verdict:
    """A checker's conclusion on one property, with the figures the report shows."""

    property: str
    status: VerdictStatus
    findings: tuple[Finding, ...] = ()
    figures: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in ("ok", "violated", "unknown"):
            raise ValueError(f"Verdict.status={self.status!r} must be 'ok', 'violated' or 'unknown'")
        # Invariant: a verdict is violated exactly when one of its findings violates the contract.
        violating = any(f.violates for f in self.findings)
        if violating != (self.status == "violated"):
            raise ValueError(
                f"Verdict({self.property!r}) has status {self.status!r} but "
                f"{'a' if violating else 'no'} finding violates the contract"
            )

    @property
    def violations(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.violates)

    @classmethod
    def of(
        cls,
        property: str,
        findings: tuple[Finding, ...] | list[Finding] = (),
        figures: Mapping[str, float] | None = None,
    ) -> "Verdict":
        """The verdict its findings imply: violated if any violates the contract, else ok."""
        findings = tuple(findings)
        status: VerdictStatus = "violated" if any(f.violates for f in findings) else "ok"
        return cls(property, status, findings, dict(figures or {}))

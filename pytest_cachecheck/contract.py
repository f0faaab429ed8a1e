"""What a layer promises, against which findings are judged.

The default contract is strict: no read is ever stale once a newer write was acknowledged, the
cache agrees with the source at quiescence, and each client sees its own writes and never goes
back in time.  ``Contract.bounded(n)`` allows reads up to ``n`` virtual seconds stale and
divergence that heals within ``n`` seconds (a TTL-only cache states this honestly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Contract"]


@dataclass(frozen=True)
class Contract:
    """The properties a layer promises.

    >>> Contract.bounded(300).max_staleness
    300.0
    """

    max_staleness: float = 0.0
    """Virtual seconds a read may lag the newest acknowledged write, and divergence may last."""
    session_guarantees: bool = True
    """Whether read-your-writes and monotonic reads are promised per client."""
    timeout: float = 30.0
    """Virtual seconds an operation may spend sleeping or waiting on its own before it hangs."""
    durable: bool = True
    """Whether every acknowledged write must reach the source (False: best-effort, with figures)."""
    stampede: int | None = None
    """At most this many source loads of one key while it is missing from the cache (one miss
    window, see :mod:`~pytest_cachecheck.checkers.stampede`); ``None``: unbounded, a figure only.

    >>> Contract(stampede=1).describe()
    'strict (no stale read, converges at quiescence), at most 1 source load of a missing key'
    """

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_staleness", float(self.max_staleness))
        object.__setattr__(self, "timeout", float(self.timeout))
        if not (self.max_staleness >= 0):
            raise ValueError(f"Contract.max_staleness={self.max_staleness} must be >= 0 seconds.")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ValueError(f"Contract.timeout={self.timeout} must be a positive, finite number of seconds.")
        bound = self.stampede
        if bound is not None and (type(bound) is not int or bound < 1):
            raise ValueError(
                f"Contract.stampede={bound!r} must be None (unbounded) or a whole number >= 1 of source "
                f"loads per miss window (1: single-flight)."
            )

    @classmethod
    def strict(cls, *, timeout: float = 30.0, stampede: int | None = None) -> "Contract":
        """No stale read, no divergence, session guarantees held."""
        return cls(max_staleness=0.0, session_guarantees=True, timeout=timeout, stampede=stampede)

    @classmethod
    def bounded(cls, seconds: float, *, timeout: float = 30.0, stampede: int | None = None) -> "Contract":
        """Staleness and divergence allowed up to ``seconds``; no session guarantees."""
        return cls(max_staleness=seconds, session_guarantees=False, timeout=timeout, stampede=stampede)

    @classmethod
    def best_effort(
        cls, *, max_staleness: float = 0.0, timeout: float = 30.0, stampede: int | None = None
    ) -> "Contract":
        """Acknowledged writes may be lost (a write-behind cache says so); the loss is reported."""
        return cls(
            max_staleness=max_staleness, session_guarantees=False, timeout=timeout, durable=False, stampede=stampede
        )

    @property
    def is_strict(self) -> bool:
        return self.max_staleness == 0.0

    def describe(self) -> str:
        text = "strict (no stale read, converges at quiescence)" if self.is_strict else (
            f"bounded staleness of {self.max_staleness:g} s"
        )
        if not self.durable:
            text += ", best-effort durability"
        if self.stampede is not None:
            loads = "1 source load" if self.stampede == 1 else f"{self.stampede} source loads"
            text += f", at most {loads} of a missing key"
        return text

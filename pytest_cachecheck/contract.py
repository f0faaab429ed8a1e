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

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_staleness", float(self.max_staleness))
        object.__setattr__(self, "timeout", float(self.timeout))
        if not (self.max_staleness >= 0):
            raise ValueError(f"Contract.max_staleness={self.max_staleness} must be >= 0 seconds.")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ValueError(f"Contract.timeout={self.timeout} must be a positive, finite number of seconds.")

    @classmethod
    def strict(cls, *, timeout: float = 30.0) -> "Contract":
        """No stale read, no divergence, session guarantees held."""
        return cls(max_staleness=0.0, session_guarantees=True, timeout=timeout)

    @classmethod
    def bounded(cls, seconds: float, *, timeout: float = 30.0) -> "Contract":
        """Staleness and divergence allowed up to ``seconds``; no session guarantees."""
        return cls(max_staleness=seconds, session_guarantees=False, timeout=timeout)

    @classmethod
    def best_effort(cls, *, max_staleness: float = 0.0, timeout: float = 30.0) -> "Contract":
        """Acknowledged writes may be lost (a write-behind cache says so); the loss is reported."""
        return cls(max_staleness=max_staleness, session_guarantees=False, timeout=timeout, durable=False)

    @property
    def is_strict(self) -> bool:
        return self.max_staleness == 0.0

    def describe(self) -> str:
        text = "strict (no stale read, converges at quiescence)" if self.is_strict else (
            f"bounded staleness of {self.max_staleness:g} s"
        )
        return text if self.durable else text + ", best-effort durability"

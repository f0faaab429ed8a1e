"""Virtual time for one run.

Everything a layer asks of the clock inside a simulated client (``time.time``, ``monotonic``,
``sleep``, a Redis TTL, a lock timeout) is answered from here, so a 3600 s TTL or a polling loop
of ``sleep(0.1)`` costs no wall time and a run is a pure function of the machine's decisions.

Invariant: ``now`` never decreases.  It moves only when the machine advances it, or when a task
executes a sleep or a wait whose deadline has not yet passed (an autojump to that deadline).
"""

from __future__ import annotations

import math

EPOCH = 1_700_000_000.0
"""What ``time.time()`` reads at the start of every run (virtual seconds since 1970)."""
MONOTONIC_BASE = 10_000.0
"""What ``time.monotonic()`` reads at the start of every run."""


class VirtualClock:
    """Seconds since the run began, advanced only on purpose."""

    __slots__ = ("_now",)

    def __init__(self) -> None:
        self._now = 0.0

    @property
    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        """The reading of ``time.time()``."""
        return EPOCH + self._now

    def monotonic(self) -> float:
        """The reading of ``time.monotonic()`` and ``time.perf_counter()``."""
        return MONOTONIC_BASE + self._now

    def advance(self, seconds: float) -> None:
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"the clock can only move forward by a finite amount, not {seconds!r}")
        self._now += seconds

    def advance_to(self, when: float) -> float:
        """Move to ``when`` if it lies ahead; returns how far the clock moved."""
        moved = max(0.0, when - self._now)
        self._now += moved
        return moved

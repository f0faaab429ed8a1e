"""Faults armed for one connection's next call: it fails, or it is slow: it takes stated virtual seconds.

A decision arms a fault on a client's Redis client or SQL connection; the interposer takes it at
that connection's next call, inside the call's scheduling point.  Invariants: an armed fault
fires once, on a call being issued (never on the retry of a call already in flight, which the
interposer does not offer); a slow call is a fault event in the history, then a wait for the
clock (fair: the other clients run meanwhile, as they would while the call is on the wire),
then the call runs, so what it reads or writes is as of the delay's end.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..history import Call
from . import _context
from ._scheduler import Blocked, Scheduler


@dataclass
class NextCall:
    """What happens to the next call of one connection."""

    fail: bool = False
    slow: float = 0.0
    """Virtual seconds the next call takes before it runs (0: none)."""
    until: float | None = None
    """While a slow call waits: the time it runs at."""

    def take(self, scheduler: Scheduler, system: str) -> Blocked | bool:
        """At a call being issued: a wait for the clock while it is slow (the other clients run
        meanwhile, fairly), then whether it must fail instead of running."""
        if self.slow:
            seconds, self.slow = self.slow, 0.0
            task = _context.current_task()
            scheduler.log(
                Call, client=task.client if task else 0, actor=task.name if task else "fault",
                op=task.op if task else None, system="fault",
                command=f"slow: the next {system} call of {task.name if task else '?'} takes {seconds:g} s",
                result=f"until t={scheduler.clock.now + seconds:g} s",
            )
            self.until = scheduler.clock.now + seconds
        if self.until is not None:
            if scheduler.clock.now < self.until:
                return scheduler.later(self.until, f"slow {system} call")
            self.until = None
        fail, self.fail = self.fail, False
        return fail

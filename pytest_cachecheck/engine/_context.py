"""Which simulated task, and which virtual clock, the current thread belongs to.

The interposers and the patched ``time``/``random``/``threading`` functions consult this to
decide between the simulated world and the real one.  Threads the harness does not manage (the
pytest main thread, Hypothesis) see the real world, except inside :func:`virtual_time`, where
the harness itself reads Redis under a run's clock.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from ._clock import VirtualClock
    from ._scheduler import Task

_local = threading.local()


def current_task() -> "Task | None":
    return getattr(_local, "task", None)


def current_clock() -> "VirtualClock | None":
    return getattr(_local, "clock", None)


def enter_task(task: "Task") -> None:
    """Bind the calling thread to ``task`` for the rest of its life."""
    _local.task = task
    _local.clock = task.scheduler.clock


@contextmanager
def virtual_time(clock: "VirtualClock") -> Iterator[None]:
    """Read time from ``clock`` in the calling (harness) thread for the duration."""
    previous = getattr(_local, "clock", None)
    _local.clock = clock
    try:
        yield
    finally:
        _local.clock = previous

"""Teardown with a wall-time limit on every step: cleaning up never freezes a run.

Removing what a run created on a real server (rolling back its clients, resetting their sessions,
dropping its schema, database and role) talks to a server that may be slow, locked up by a
statement still in flight, or gone.  Each step runs under :func:`within`, on a helper thread the
caller waits for at most a given number of wall seconds; a step that does not finish in time is
left to its (daemon) thread, and the caller decides what to try next (cancel, terminate the run's
own backends) or gives up with a :class:`TeardownError`.

Invariant: :func:`within` returns or raises within ``seconds`` (plus thread start-up), whatever
the step does; nothing here ever waits without a limit.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_real_monotonic = time.monotonic  # captured before the clock is patched: a wall-clock bound


class StepTimeout(Exception):
    """A teardown step did not finish within its limit (its thread is left behind)."""


class TeardownError(RuntimeError):
    """A teardown step still failed after cancelling and ending what blocked it.

    ``str()`` is one line naming the server and the step; ``server``, ``step`` and ``reason``
    hold its parts.  Not a finding about the layer: the server (or the harness) failed to clean up.
    """

    def __init__(self, server: str, step: str, reason: str) -> None:
        self.server = server
        self.step = step
        self.reason = reason
        super().__init__(f"cachecheck: teardown failed on {server}: {step}: {reason}")


def within(seconds: float, step: Callable[[], T], name: str = "cachecheck-teardown") -> T:
    """``step()``'s result or exception, or :class:`StepTimeout` after ``seconds`` wall seconds."""
    done = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = step()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    if not done.wait(seconds):
        raise StepTimeout(f"did not finish within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def wait_until(seconds: float, condition: Callable[[], bool], interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds (True) or ``seconds`` wall seconds have passed (False)."""
    deadline = _real_monotonic() + seconds
    while True:
        if condition():
            return True
        if _real_monotonic() >= deadline:
            return False
        time.sleep(interval)

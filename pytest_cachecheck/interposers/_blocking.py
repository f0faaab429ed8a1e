"""Blocking Redis commands (``BLPOP``, ``BRPOP``, ``BLMOVE``, ``BZPOPMIN``, ``XREAD BLOCK`` ...) as
cooperative waits.

Sent as is, a blocking command would hold the baton while the server waits for another client's
push: no other client could run, and the watchdog would report a hang.  Here, inside its
scheduling point, the command is only sent when it cannot block (one of its source keys holds
data; ``XREAD`` is sent without ``BLOCK``); otherwise the task waits, in virtual time, until
another call touches one of those keys or the command's own timeout passes, and tries again.

Invariants: the reply is the blocking command's own (sent unchanged when it cannot block, so
redis-py shapes it as usual); a try after the timeout returns what the command returns on
timeout (None; ``XREAD``'s empty reply); a timeout of 0 waits until woken, and a wait nothing can
end is a stall like any other.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from ..engine import _context
from ..engine._scheduler import Blocked, Scheduler, Waitable
from ._redis_guard import text

_LAST_TIMEOUT = {"BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "BRPOPLPUSH", "BLMOVE"}
_FIRST_TIMEOUT = {"BLMPOP", "BZMPOP"}  # BLMPOP timeout numkeys key [key ...] ...
_ONE_SOURCE = {"BRPOPLPUSH", "BLMOVE"}  # the source key alone decides whether it blocks
_STREAMS = {"XREAD", "XREADGROUP"}


class _Push(Waitable):
    """Another call touching one of the keys a blocking command waits on."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__()
        self.label = f"a push to {', '.join(keys)}"


_waiting: "weakref.WeakKeyDictionary[Scheduler, dict[str, list[_Push]]]" = weakref.WeakKeyDictionary()


def touched(scheduler: Scheduler, keys: Any) -> None:
    """After a call ran: wake the blocking commands waiting on any of ``keys``."""
    waiting = _waiting.get(scheduler)
    if not waiting:
        return
    for key in keys:
        for push in waiting.get(text(key), ()):
            push.wake_all()


def cooperative(args: tuple, send: Callable[..., Any], scheduler: Scheduler) -> Callable[[], Any] | None:
    """The action for a blocking command (None for any other): ``send(*args)`` sends a command."""
    name = text(args[0]).upper() if args else ""
    if name in _LAST_TIMEOUT:
        sources, timeout = list(args[1:-1]), _seconds(args[-1])
        if name in _ONE_SOURCE:
            sources = sources[:1]
    elif name in _FIRST_TIMEOUT and len(args) > 3:
        numkeys = int(text(args[2]))
        sources, timeout = list(args[3 : 3 + numkeys]), _seconds(args[1])
    elif name in _STREAMS:
        upper = [text(arg).upper() if isinstance(arg, (str, bytes)) else "" for arg in args]
        if "BLOCK" not in upper:
            return None
        at = upper.index("BLOCK")
        timeout = _seconds(args[at + 1]) / 1000
        unblocked = args[:at] + args[at + 2 :]
        first = upper.index("STREAMS") + 1 - (2 if upper.index("STREAMS") > at else 0)
        sources = list(unblocked[first : first + (len(unblocked) - first) // 2])
    else:
        return None
    names = [text(key) for key in sources]
    push = _Push(names)
    deadline: list[float] = []

    def action() -> Any:
        task = _context.current_task()
        if not deadline:
            deadline.append(scheduler.clock.now + timeout if timeout > 0 else float("inf"))
        if name in _STREAMS:
            reply = send(*unblocked)
            found = bool(reply)
        else:
            found = bool(send("EXISTS", *sources))
            reply = send(*args) if found else None
        if found or (task is not None and task.timed_out) or scheduler.clock.now >= deadline[0]:
            _forget(scheduler, names, push)
            return reply
        waiting = _waiting.setdefault(scheduler, {})
        for key in names:
            if push not in waiting.setdefault(key, []):
                waiting[key].append(push)
        return Blocked(push, None if deadline[0] == float("inf") else deadline[0], f"waits for {push.label}")

    return action


def _forget(scheduler: Scheduler, names: list[str], push: _Push) -> None:
    waiting = _waiting.get(scheduler, {})
    for key in names:
        if push in waiting.get(key, ()):
            waiting[key].remove(push)


def _seconds(value: Any) -> float:
    return float(text(value)) if isinstance(value, (str, bytes)) else float(value)

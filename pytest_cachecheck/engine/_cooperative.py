"""Cooperative stand-ins for the ``threading`` primitives a layer creates.

Inside a simulated client, ``threading.Lock()`` and friends built by the layer's own code return
these (see ``_patches``).  Every acquire or wait is a scheduling point; a task that cannot get
the primitive waits on it instead of blocking its thread, so the scheduler keeps the baton and
can tell a deadlock (a wait-for cycle) from a pause.  Timeouts are in virtual seconds.

Semantics follow ``threading``: a ``Lock`` may be released by any task, an ``RLock`` only by
its owner; ``Condition.wait`` releases and re-acquires its lock; an ``Event`` wakes every
waiter.  Used from a thread the harness does not manage, a primitive behaves like a plain one
that must never be contended.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from ..history._calls import LockPoint
from . import _context
from ._scheduler import Blocked, Scheduler, Task, Waitable

_labels = itertools.count(1)


def _label(kind: str) -> str:
    """``Lock#3``: numbered per run, so the same run prints the same names."""
    scheduler = _scheduler()
    return f"{kind}#{scheduler.next_label() if scheduler else next(_labels)}"


def _scheduler() -> Scheduler | None:
    task = _context.current_task()
    return task.scheduler if task is not None else None


def _me() -> Task | None:
    return _context.current_task()


def _deadline(timeout: float | None) -> float | None:
    if timeout is None or timeout < 0:
        return None
    scheduler = _scheduler()
    now = scheduler.clock.now if scheduler else 0.0
    return now + float(timeout)


def _point(what: str, label: str, action: Callable[[], Any]) -> Any:
    """``action`` as the point ``what label`` (``acquire Lock-1``), recorded as a :class:`LockPoint`."""
    scheduler = _scheduler()
    if scheduler is None:
        outcome = action()
        if isinstance(outcome, Blocked):
            raise RuntimeError(f"{outcome.waitable.label} is contended outside a simulated client")
        return outcome
    return scheduler.point("lock", LockPoint(what, label), action)


class Lock(Waitable):
    """A cooperative ``threading.Lock``."""

    kind = "Lock"

    def __init__(self) -> None:
        super().__init__()
        self.label = _label(self.kind)
        self.owner: Task | None = None
        self.locked_ = False

    def holders(self) -> list[Task]:
        return [self.owner] if self.owner is not None else []

    def _try(self, me: Task | None) -> bool:
        if not self.locked_:
            self.locked_, self.owner = True, me
            return True
        return False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = _me()
        deadline = _deadline(timeout) if blocking else None

        def attempt() -> Any:
            if self._try(me):
                return True
            if not blocking or (me is not None and me.timed_out):
                return False
            return Blocked(self, deadline, f"held by {self.owner.name if self.owner else 'another thread'}")

        return _point("acquire", self.label, attempt)

    def release(self) -> None:
        if not self.locked_:
            raise RuntimeError("release unlocked lock")
        self.locked_, self.owner = False, None
        self.wake_all()

    def locked(self) -> bool:
        return self.locked_

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


class RLock(Lock):
    """A cooperative ``threading.RLock``: re-entrant for its owner, released only by it."""

    kind = "RLock"

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def _try(self, me: Task | None) -> bool:
        if self.locked_ and self.owner is me:
            self.count += 1
            return True
        if super()._try(me):
            self.count = 1
            return True
        return False

    def release(self) -> None:
        if not self.locked_ or self.owner is not _me():
            raise RuntimeError("cannot release un-acquired lock")
        self.count -= 1
        if self.count == 0:
            super().release()

    def _release_save(self) -> int:
        count, self.count = self.count, 1
        self.release()
        return count

    def _acquire_restore(self, count: int) -> None:
        self.acquire()
        self.count = count

    def _is_owned(self) -> bool:
        return self.locked_ and self.owner is _me()


class Event(Waitable):
    """A cooperative ``threading.Event``."""

    def __init__(self) -> None:
        super().__init__()
        self.label = _label("Event")
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    isSet = is_set

    def set(self) -> None:
        self._flag = True
        self.wake_all()

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        me = _me()
        deadline = _deadline(timeout)

        def attempt() -> Any:
            if self._flag:
                return True
            if me is not None and me.timed_out:
                return False
            return Blocked(self, deadline, "not set")

        return _point("wait", self.label, attempt)


class Condition(Waitable):
    """A cooperative ``threading.Condition`` over a cooperative lock."""

    def __init__(self, lock: Lock | None = None) -> None:
        super().__init__()
        self.label = _label("Condition")
        self._lock = lock if lock is not None else RLock()
        self._notified: list[Task | None] = []
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def _release_all(self) -> Any:
        if isinstance(self._lock, RLock):
            return self._lock._release_save()
        self._lock.release()
        return None

    def _reacquire(self, saved: Any) -> None:
        if isinstance(self._lock, RLock):
            self._lock._acquire_restore(saved)
        else:
            self._lock.acquire()

    def wait(self, timeout: float | None = None) -> bool:
        me = _me()
        if isinstance(self._lock, RLock) and not self._lock._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        deadline = _deadline(timeout)
        saved = self._release_all()
        try:

            def attempt() -> Any:
                if me in self._notified:
                    self._notified.remove(me)
                    return True
                if me is not None and me.timed_out:
                    return False
                return Blocked(self, deadline, "not notified")

            return _point("wait", self.label, attempt)
        finally:
            self._reacquire(saved)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        result = predicate()
        scheduler = _scheduler()
        end = _deadline(timeout)
        while not result:
            remaining = None
            if end is not None:
                remaining = end - (scheduler.clock.now if scheduler else 0.0)
                if remaining <= 0:
                    break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        for task in [t for t in self.waiters if t not in self._notified][:n]:
            self._notified.append(task)
            task.state = "ready" if task.state == "waiting" else task.state

    def notify_all(self) -> None:
        self.notify(len(self.waiters))

    notifyAll = notify_all


class Semaphore(Waitable):
    """A cooperative ``threading.Semaphore``."""

    def __init__(self, value: int = 1) -> None:
        super().__init__()
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self.label = _label(type(self).__name__)
        self._value = value

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        me = _me()
        deadline = _deadline(timeout) if blocking else None

        def attempt() -> Any:
            if self._value > 0:
                self._value -= 1
                return True
            if not blocking or (me is not None and me.timed_out):
                return False
            return Blocked(self, deadline, "no permits left")

        return _point("acquire", self.label, attempt)

    __enter__ = acquire

    def release(self, n: int = 1) -> None:
        self._value += n
        self.wake_all()

    def __exit__(self, *exc: object) -> None:
        self.release()


class BoundedSemaphore(Semaphore):
    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._initial = value

    def release(self, n: int = 1) -> None:
        if self._value + n > self._initial:
            raise ValueError("Semaphore released too many times")
        super().release(n)


class _Finished(Waitable):
    """Waited on by ``Thread.join``: held by the thread until it ends."""

    def __init__(self, thread: "Thread") -> None:
        super().__init__()
        self.thread = thread
        self.label = f"end of {thread.name}"

    def holders(self) -> list[Task]:
        task = self.thread._task
        return [task] if task is not None and task.state != "done" else []


class Thread:
    """A thread the layer starts becomes a scheduled actor of its client.

    It does not run by itself: the machine steps it like any task (a write-behind flusher's
    ``sleep`` loop then runs in virtual time).  ``daemon`` and ``name`` are kept for the layer's
    sake; a thread started outside a simulated client runs the target immediately.
    """

    def __init__(
        self,
        group: None = None,
        target: Callable[..., Any] | None = None,
        name: str | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
        *,
        daemon: bool | None = None,
    ) -> None:
        self._target = target
        self._args = args
        self._kwargs = kwargs or {}
        self.name = name or _label("Thread").replace("#", "-")
        self.daemon = bool(daemon)
        self._task: Task | None = None
        self._finished = _Finished(self)
        self._started = False

    def run(self) -> None:
        if self._target is not None:
            self._target(*self._args, **self._kwargs)

    def start(self) -> None:
        if self._started:
            raise RuntimeError("threads can only be started once")
        self._started = True
        parent = _me()
        if parent is None:
            self.run()
            return
        scheduler = parent.scheduler
        self._task = scheduler.spawn_actor(parent, self.name, self._body)

    def _body(self) -> None:
        try:
            self.run()
        finally:
            self._finished.wake_all()

    def is_alive(self) -> bool:
        return self._task is not None and self._task.state != "done" and self._task.state != "idle"

    def join(self, timeout: float | None = None) -> None:
        if self._task is None:
            return
        me = _me()
        deadline = _deadline(timeout)

        def attempt() -> Any:
            if not self.is_alive():
                return None
            if me is not None and me.timed_out:
                return None
            return Blocked(self._finished, deadline, "still running")

        _point("join", self.name, attempt)

    @property
    def ident(self) -> int | None:
        return id(self) if self._started else None

"""One baton, passed between real threads: a run is a pure function of the decisions taken.

Each simulated task (a client's operations, a thread the layer starts, the quiescence probe) is
a real thread, but only the holder of the baton runs.  The controller (the Hypothesis machine,
in the main thread) hands the baton to a task with a *budget* of scheduling points; the task
executes that many points, runs on to the next one and hands the baton back, parked *before*
that point with its text in ``pending``.  Scheduling points are the only places a task can
stop: Redis commands, SQL statements and commits, sleeps, and acquires of cooperative locks.

Invariants:

* At most one task is ``running``, and while it runs the controller is parked waiting for it:
  nothing else touches the run's state, so no extra locking is needed.
* Every grant of the baton (``go``) is answered by exactly one return (``back``).
* A task in state ``waiting`` is blocked on a :class:`Waitable` (a lock, an event, the source's
  write lock); it is stepped only once that waitable wakes it or its deadline is reached (then
  the clock jumps to the deadline), so a blocked task never holds the baton.
* Time moves only by decisions: the machine's ``tick``, or a task's sleep or timed wait.

What the scheduler cannot see (a thread blocked in C code, a loop that never reaches a point)
is caught by a wall-clock watchdog on the baton's return and reported as ``UncontrolledBlocking``.
"""

from __future__ import annotations

import _thread
import ctypes
import random
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from ..history import Call, Event
from ..history._calls import Raised, Sleep, to_data
from ..history._calls import render_result as render_result  # re-exported: its home before ``_calls``
from . import _context
from ._clock import VirtualClock
from ._quiet import TASK_THREAD_PREFIX

_UNLIMITED = sys.maxsize
_RealThread = threading.Thread  # captured before any patch, like the baton's raw locks


class Cancelled(BaseException):
    """Raised inside a task to unwind it when its run ends; never reaches user code's handlers
    for ``Exception``."""


class Stall(Exception):
    """The run cannot go on: a task hangs, spins, or tasks deadlock.  ``kind`` names which."""

    def __init__(self, kind: str, message: str, task: "Task | None" = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.task = task


class UncontrolledBlocking(Stall):
    """A task kept the baton past the wall-clock watchdog: blocked or spinning outside our control."""


class HarnessError(RuntimeError):
    """A bug in pytest-cachecheck itself, surfaced from a task thread."""


@dataclass
class Blocked:
    """Returned by a point's action when it cannot proceed yet.

    The task waits on ``waitable`` (and until ``deadline``, virtual seconds, if given); the
    action is retried when it is stepped again.
    """

    waitable: "Waitable"
    deadline: float | None = None
    reason: str = ""
    retry_is_free: bool = False
    """The retry is the same point finishing (a sleep reaching its wake time), not a new one."""


class Waitable:
    """Something a task can block on.  Subclasses say who could unblock it (for deadlocks)."""

    label = "waitable"

    def __init__(self) -> None:
        # Invariant: a list, not a set, so that wake-up order is deterministic.
        self.waiters: list[Task] = []

    def holders(self) -> list["Task"]:
        """Tasks that must act before a waiter can proceed, when that is known."""
        return []

    def wake_all(self) -> None:
        for task in self.waiters:
            if task.state == "waiting":
                task.state = "ready"


class _Baton:
    """A binary semaphore on a real lock (never a cooperative one)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def give(self) -> None:
        self._lock.release()

    def take(self, timeout: float = -1) -> bool:
        return self._lock.acquire(timeout=timeout)


class Task:
    """A simulated thread of control: runs jobs handed to it, one point at a time."""

    def __init__(self, scheduler: "Scheduler", name: str, client: int, *, seed: int) -> None:
        self.scheduler = scheduler
        self.name = name
        self.client = client
        self.random = random.Random(seed)
        # Invariant: state is one of new, idle, running, ready, waiting, stopped, hung, done.
        self.state = "new"
        self.pending: str | None = None
        self.budget = 0
        self.op: int | None = None
        self.op_points = 0
        self.op_waited = 0.0
        self.waiting_on: Waitable | None = None
        self.deadline: float | None = None
        self.waiting_free_retry = False
        """Whether the wait is a fair sleep: the clock reaching its deadline finishes the point."""
        self.timed_out = False
        self.in_point = False
        self.cancelled = False
        self.stall: Stall | None = None
        self.failure: BaseException | None = None
        self.parent: Task | None = None
        """The task that started this one, for a thread the layer started (an actor)."""
        self._job: Callable[[], None] | None = None
        self._go = _Baton()
        self._thread = _RealThread(target=self._main, name=f"{TASK_THREAD_PREFIX}{name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<Task {self.name} {self.state}>"

    @property
    def runnable(self) -> bool:
        """Whether stepping this task would make progress now (or after a clock jump)."""
        if self.state == "ready":
            return True
        return self.state == "waiting" and self.deadline is not None

    def _main(self) -> None:
        _context.enter_task(self)
        scheduler = self.scheduler
        while True:
            self._go.take()
            if self.cancelled or self._job is None:
                break
            job, self._job = self._job, None
            try:
                job()
            except Cancelled:
                break
            except BaseException as exc:  # a harness bug: job wrappers catch the layer's errors
                self.failure = exc
            self.state = "idle"
            self.pending = None
            scheduler._back.give()
        self.state = "done"
        scheduler._back.give()


class Scheduler:
    """Owns the tasks, the clock and the event log of one run."""

    def __init__(
        self,
        clock: VirtualClock,
        *,
        watchdog: float,
        timeout: float,
        max_points_per_op: int,
    ) -> None:
        self.clock = clock
        self.watchdog = watchdog
        self.timeout = timeout
        self.max_points_per_op = max_points_per_op
        self.tasks: list[Task] = []
        self.events: list[Event] = []
        self.points = 0
        self._back = _Baton()
        self._clock_moving = Waitable()
        self._clock_moving.label = "the clock"
        self._running: Task | None = None
        self._dead = False
        self._labels = 0
        self.hazards: Any = None
        """The run's process hazards (a ``_hazards.Hazards``), made on first use."""
        self.redis_clients: dict[bool, Any] = {}
        """The first Redis client handed out in this run, per ``decode_responses`` (``_redis``)."""

    def next_label(self) -> int:
        """A number for a primitive created in this run (deterministic per run)."""
        self._labels += 1
        return self._labels

    # -- the event log ---------------------------------------------------------------------

    def log(self, cls: type, **fields: Any) -> Event:
        """Append an event, stamped with the next step and the current virtual time."""
        event = cls(step=len(self.events) + 1, time=self.clock.now, **fields)
        self.events.append(event)
        return event

    # -- controller side -------------------------------------------------------------------

    def spawn(self, name: str, client: int) -> Task:
        task = Task(self, name, client, seed=_stable_seed(name))
        self.tasks.append(task)
        return task

    def spawn_actor(self, parent: Task, name: str, body: Callable[[], None]) -> Task:
        """A thread the layer started: a task of ``parent``'s client, ready but not yet run."""
        task = self.spawn(f"{parent.name}/{name}", parent.client)
        task.parent = parent
        task._job = body
        task.state = "ready"
        task.pending = "start"
        return task

    def submit(self, task: Task, job: Callable[[], None], *, budget: int = 1) -> None:
        """Give an idle task a job and run it up to its budget of points."""
        if task.state not in ("new", "idle"):
            raise HarnessError(f"{task.name} is {task.state}, cannot take a new job")
        task._job = job
        self._run_for(task, budget)

    def step(self, task: Task, budget: int = 1) -> None:
        """Let ``task`` execute ``budget`` points and park before the next one.

        A task in a timed wait (a sleep, a wait with a timeout) needs the clock to reach its
        deadline.  For an operation of a client, time is fair: the other clients' operations that
        could run (paused by a decision, or waking earlier) run first, until each blocks, sleeps
        or finishes, and the clock only then moves (:meth:`_reach`).  A preempted client is
        paused in points, not in virtual time.
        """
        if not task.runnable:
            raise HarnessError(f"{task.name} is {task.state}, not runnable")
        self._run_for(task, budget)

    def _run_for(self, task: Task, budget: int) -> None:
        while True:
            if task.state == "waiting":
                assert task.deadline is not None
                free = task.waiting_free_retry
                if task.parent is None and task.op is not None:
                    self._reach(task)
                else:  # a background thread, a build: autojump to its deadline
                    task.op_waited += self.clock.advance_to(task.deadline)
                    task.timed_out = True
                    task.state = "ready"
                budget += 1 if free else 0
            self._resume(task, budget)
            if task.state != "waiting" or not task.waiting_free_retry or task.budget <= 0:
                return
            budget = task.budget  # a fair sleep parked it: others ran, its budget goes on

    def _reach(self, task: Task) -> None:
        """Move the clock to ``task``'s deadline, fairly: every other operation that could run
        first runs until it blocks; then the clock moves to the earliest deadline, and a waiter
        whose deadline that is runs before the clock moves on."""
        while task.state == "waiting":
            self._catch_up(task)
            if task.state != "waiting":
                return  # woken by what ran
            first = min(self._timed_waiters(), key=lambda t: (t.deadline, self.tasks.index(t)))
            moved = self.clock.advance_to(first.deadline)  # type: ignore[arg-type]
            task.op_waited += moved
            if first is not task:
                first.op_waited += moved
            first.timed_out = True
            first.state = "ready"
            if first is task:
                return

    def _catch_up(self, task: Task) -> None:
        while True:
            contenders = self._contenders(task)
            if not contenders:
                return
            self._resume(contenders[0], _UNLIMITED)

    def _contenders(self, task: Task) -> list[Task]:
        """Other clients' operations that could run now: paused by a decision, or just woken."""
        return [t for t in self.tasks if t is not task and t.parent is None and t.op is not None and t.state == "ready"]

    def _timed_waiters(self) -> list[Task]:
        return [
            t for t in self.tasks
            if t.parent is None and t.op is not None and t.state == "waiting" and t.deadline is not None
        ]

    def _must_let_others_run(self, task: Task, wake: float) -> bool:
        """Whether ``task`` sleeping until ``wake`` would move the clock past another client's
        operation that could run before then."""
        if task.parent is not None or task.op is None:
            return False
        return bool(self._contenders(task)) or any(
            t is not task and t.deadline is not None and t.deadline < wake for t in self._timed_waiters()
        )

    def run_to_completion(self, task: Task) -> None:
        """Step ``task`` until its job ends or it blocks (points are bounded per operation)."""
        self.step(task, _UNLIMITED)

    def _resume(self, task: Task, budget: int) -> None:
        if self._dead:
            raise HarnessError("this run was abandoned after uncontrolled blocking")
        task.budget = budget
        task.state = "running"
        self._running = task
        task._go.give()
        if not self._back.take(timeout=self.watchdog):
            self._dead = True
            raise UncontrolledBlocking(
                "hang",
                f"{task.name} kept running for {self.watchdog:g} s of wall time without reaching a "
                f"scheduling point: it is blocked or spinning outside the harness's control"
                f"{_where(task)}",
                task,
            )
        self._running = None
        if task.failure is not None:
            failure, task.failure = task.failure, None
            raise HarnessError(f"internal error in {task.name}: {failure!r}") from failure
        if task.state == "hung":
            assert task.stall is not None
            raise task.stall
        if task.state == "waiting":
            cycle = self.deadlock_cycle(task)
            if cycle:
                raise Stall("deadlock", _describe_cycle(cycle), task)

    def deadlock_cycle(self, start: Task) -> list[Task]:
        """The wait-for cycle through ``start``, if its wait can never end."""
        path: list[Task] = []
        task: Task | None = start
        while task is not None and task.state == "waiting" and task.deadline is None:
            if task in path:
                return path[path.index(task):]
            path.append(task)
            holders = task.waiting_on.holders() if task.waiting_on else []
            task = holders[0] if len(holders) == 1 else None
        return []

    def close(self) -> None:
        """Unwind every task still parked; abandon any that cannot be reached."""
        for task in self.tasks:
            self.cancel(task)

    def cancel(self, task: Task) -> None:
        """Unwind one parked task (a crash kills its client's tasks this way)."""
        if task.state == "done":
            return
        task.cancelled = True
        if self._dead or task.state == "running":
            _interrupt(task)
            return
        task._go.give()
        if not self._back.take(timeout=self.watchdog):
            self._dead = True
            _interrupt(task)

    # -- task side: scheduling points -------------------------------------------------------

    def point(
        self, system: str, request: Any, action: Callable[[], Any], *, reply: Callable[[Any], Any] = to_data
    ) -> Any:
        """Run ``action`` as one scheduling point of the calling task, and log it as a :class:`Call`.

        ``request`` is the call as data (a ``_calls`` request: its ``text()`` is what a trace
        shows), or plain text; ``reply`` turns what ``action`` returned into the data recorded
        (plain data by default).  ``action`` may return :class:`Blocked`: the task then waits,
        and the action is retried when the task is stepped again.  Outside a task of this
        scheduler, ``action`` just runs.
        """
        task = _context.current_task()
        if task is None or task.scheduler is not self:
            return _unblocked(action())
        if task.cancelled:  # unwinding: a layer's finally-block must not park again
            raise Cancelled()
        if task.in_point:  # a point inside a point (a pipeline loading its scripts): one step
            return _unblocked(action())
        if isinstance(request, str):
            text, request = request, None
        else:
            text = request.text()
        while True:
            if task.budget <= 0:
                task.pending = text
                task.state = "ready"
                self._park(task)
            task.budget -= 1
            task.pending = None
            self._count_point(task, text)
            task.in_point = True
            try:
                outcome = action()
            except Exception as exc:
                self._log_call(task, system, text, request, error=Raised(type(exc).__name__, str(exc)))
                raise
            finally:
                task.in_point = False
            if isinstance(outcome, Blocked):
                if not outcome.retry_is_free:
                    self._log_call(task, system, text, request, blocked=outcome.reason)
                self._wait(task, outcome)
                continue
            task.timed_out = False
            self._log_call(task, system, text, request, reply=reply(outcome))
            return outcome

    def sleep(self, seconds: float) -> None:
        """A cooperative ``time.sleep``: a point whose execution jumps the clock to the wake time."""
        task = _context.current_task()
        if task is None or task.scheduler is not self:
            return
        seconds = max(0.0, float(seconds))
        wake = self.clock.now + seconds

        def wake_up() -> None:
            # A background thread (a flusher) sleeps in a loop by design: only operations,
            # builds and probes are held to the timeout.
            background = task.parent is not None
            if not background and task.op_waited + max(0.0, wake - self.clock.now) > self.timeout:
                self.hang(
                    task,
                    "hang",
                    f"{task.name} would sleep until t={wake:g} s, past the contract's "
                    f"{self.timeout:g} s timeout for one operation",
                )
            if self.clock.now < wake and self._must_let_others_run(task, wake):
                return self.later(wake, "sleeping")
            task.op_waited += self.clock.advance_to(wake)
            return None

        self.point("sleep", Sleep(seconds), wake_up)

    def later(self, deadline: float, reason: str) -> Blocked:
        """What a point's action returns to finish once the clock reaches ``deadline`` (a sleep, a
        slow call): the task waits for the clock, fairly (:meth:`step`), and the retry is free."""
        return Blocked(self._clock_moving, deadline, reason, retry_is_free=True)

    def hang(self, task: Task, kind: str, message: str) -> None:
        """Report from inside ``task`` that it can never finish; parks it until cancelled."""
        task.stall = Stall(kind, message, task)
        task.state = "hung"
        self._back.give()
        task._go.take()
        raise Cancelled()

    def begin_op(self, task: Task, op: int | None) -> None:
        task.op = op
        task.op_points = 0
        task.op_waited = 0.0

    def _count_point(self, task: Task, text: str) -> None:
        self.points += 1
        task.op_points += 1
        if task.op is not None and task.op_points > self.max_points_per_op:
            self.hang(
                task,
                "livelock",
                f"{task.name} executed {self.max_points_per_op} scheduling points in one operation "
                f"without finishing (last: {text}): it is spinning",
            )

    def _park(self, task: Task) -> None:
        self._back.give()
        task._go.take()
        if task.cancelled:
            raise Cancelled()

    def _wait(self, task: Task, blocked: Blocked) -> None:
        task.state = "waiting"
        task.waiting_on = blocked.waitable
        task.deadline = blocked.deadline
        task.waiting_free_retry = blocked.retry_is_free
        task.timed_out = False
        blocked.waitable.waiters.append(task)
        try:
            self._park(task)
        finally:
            blocked.waitable.waiters.remove(task)
            task.waiting_on = None
            task.deadline = None
            task.waiting_free_retry = False

    def _log_call(self, task: Task, system: str, text: str, request: Any, **outcome: Any) -> None:
        """Log a call: its data, and ``text`` (``request.text()``, rendered once per point)."""
        self.log(
            Call, client=task.client, actor=task.name, op=task.op, system=system, command=text, request=request,
            **outcome,
        )

    def actors(self) -> list[Task]:
        """Threads the layer started, in the order they were started."""
        return [task for task in self.tasks if task.parent is not None]


def _unblocked(outcome: Any) -> Any:
    if isinstance(outcome, Blocked):
        raise RuntimeError(
            f"{outcome.waitable.label} is held by a simulated client; the harness's own thread "
            "cannot wait for it"
        )
    return outcome


def _stable_seed(name: str) -> int:
    """A seed that depends on the task's name only (``hash()`` of a str is salted per process)."""
    return int.from_bytes(name.encode(), "big") % (2**61 - 1)


def _describe_cycle(cycle: list[Task]) -> str:
    if len(cycle) == 1:
        task = cycle[0]
        label = task.waiting_on.label if task.waiting_on else "something"
        return f"{task.name} waits for {label}, which it holds itself: it can never proceed"
    parts = [
        f"{task.name} waits for {task.waiting_on.label if task.waiting_on else '?'} held by "
        f"{cycle[(i + 1) % len(cycle)].name}"
        for i, task in enumerate(cycle)
    ]
    return "deadlock: " + "; ".join(parts)


def _where(task: Task) -> str:
    frame = sys._current_frames().get(task._thread.ident or -1)
    if frame is None:
        return ""
    stack = traceback.extract_stack(frame)
    here = [entry for entry in stack if not _is_harness_file(entry.filename)]
    if not here:
        return ""
    last = here[-1]
    line = f" ({last.line.strip()})" if last.line else ""
    return f"; it is in {last.name} at {last.filename}:{last.lineno}{line}"


def _is_harness_file(filename: str) -> bool:
    parts = filename.replace("\\", "/").split("/")
    return "pytest_cachecheck" in parts and "strategies" not in parts or parts[-1] == "threading.py"


def _interrupt(task: Task) -> None:
    """Best effort: raise Cancelled in a thread we lost control of (works once it runs Python)."""
    ident = task._thread.ident
    if ident is not None and task._thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(Cancelled))

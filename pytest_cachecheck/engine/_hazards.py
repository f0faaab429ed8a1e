"""Process hazards: what a layer does to the test process itself is found, contained and told.

A layer runs inside pytest.  Some things it may do there would outlive the example, take pytest
down, or copy it: this module's patches (installed with the rest of the simulated world, see
``_patches``) catch them in the threads of simulated clients, and in the real threads those
start, and record each as a :class:`~pytest_cachecheck.history.Call` whose ``system`` is
:data:`~pytest_cachecheck.history.HAZARD`, with where it happened (``file:line`` of the layer's
own code).  The ``process-hazards`` checker makes every such call a finding.

* **Threads left running.**  A real thread started from a simulated client by a means the
  harness does not make cooperative (``_thread.start_new_thread``, a ``threading.Thread``
  subclass defined at import, a library's thread) is tracked.  One still running
  :data:`GRACE` wall seconds after quiescence is recorded ("left 3 threads running (started at
  layer.py:12)").  Containment: such threads are made daemon threads at start (they never keep
  pytest alive at exit) and never waited for; when the example closes, a pending
  ``threading.Timer`` is cancelled and ``Cancelled`` is raised in each thread running the
  layer's code (best effort: it takes effect when the thread next runs Python code, so one
  blocked in C stays blocked; a library's idle worker is left alone), and one not yet started
  by then never runs the layer's code.
* **Forks.**  ``os.fork`` and ``os.forkpty`` (and so ``multiprocessing`` with the fork start
  method, ``os.spawn*`` and ``pty.fork``) are refused: the call raises ``OSError`` whose message
  begins with :data:`~pytest_cachecheck.history.REFUSED`, and "tried to fork" is recorded.  The
  child of a multi-threaded pytest under a baton scheduler would run on with the harness's
  threads and state.  Processes started by ``exec`` (``subprocess``, ``os.posix_spawn``,
  ``multiprocessing``'s spawn and forkserver methods) are allowed and tracked by pid; one the
  layer has not reaped by quiescence is recorded ("left 1 child process behind"), killed with
  its descendants and reaped, so no orphan or zombie outlives the example.
* **Signals and exits.**  ``signal.signal``, ``signal.alarm``, ``signal.setitimer``,
  ``signal.pthread_kill``, ``signal.raise_signal``, ``os.kill``/``os.killpg`` aimed at pytest's
  own process or process group, ``os._exit`` and ``os.abort`` are refused the same way (an
  ``OSError``, so the layer learns the alarm is not armed, rather than a silent no-op it would
  trust) and recorded ("set an alarm for 1 s").  Signal 0 (a liveness probe) and signals to
  other processes are left alone.

Invariants: the harness, pytest and Hypothesis always get the real functions (only calls made
from a simulated task, or from a thread a layer started there, are judged); a hazard met in a
simulated task is logged at once by the task holding the baton, so the same decisions give the
same history; one met in a layer's real thread is logged at quiescence.  Whether a thread has
ended within :data:`GRACE` is a matter of wall time: a layer's real thread is outside the
scheduler by definition.
"""

from __future__ import annotations

import _thread
import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable

from ..history import HAZARD, REFUSED, Call
from . import _context
from ._origin import module_kind
from ._scheduler import Cancelled, Scheduler, Task

try:
    import _posixsubprocess
except ImportError:  # not POSIX: nothing forks there
    _posixsubprocess = None  # type: ignore[assignment]

GRACE = 0.1
"""Wall seconds the threads a layer started may take, after quiescence, to end by themselves."""
REAP_LIMIT = 5.0
"""Wall seconds to wait for a killed child process to be reaped before giving up on it."""

# The real functions, captured before any patch: the harness's own calls.
_real_kill = os.kill
_clock = time.perf_counter
_nap = time.sleep
_RealThread: type = getattr(threading.Thread, "_real", threading.Thread)

_local = threading.local()
"""``owner``: (hazards, task) in a real thread a layer started from a simulated task."""


def _owner() -> "tuple[Hazards, Task] | None":
    """The run and task the calling thread acts for, or None for the harness's own threads."""
    task = _context.current_task()
    if task is not None:
        return Hazards.of(task.scheduler), task
    return getattr(_local, "owner", None)


# -- where the layer did it -------------------------------------------------------------------


def _kind(frame: FrameType) -> str:
    return module_kind(frame.f_globals.get("__name__", ""))


def _started_by_harness(frame: FrameType | None) -> bool:
    """Whether the innermost code above ``frame`` that is not a library's is the harness's."""
    while frame is not None:
        kind = _kind(frame)
        if kind != "library":
            return kind == "harness"
        frame = frame.f_back
    return False


def _where(frame: FrameType | None) -> str:
    """``path:line`` of the innermost frame of the layer's own code (else of a library's)."""
    fallback = None
    while frame is not None:
        kind = _kind(frame)
        if kind == "layer":
            return _place(frame)
        if kind == "library" and fallback is None:
            fallback = _place(frame)
        frame = frame.f_back
    return fallback or "an unknown place"


def _place(frame: FrameType) -> str:
    path = frame.f_code.co_filename
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive
        relative = path
    return f"{path if relative.startswith('..') else relative}:{frame.f_lineno}"


# -- the record of one run --------------------------------------------------------------------


class Hazards:
    """The hazards of one run (one scheduler): what its layers started, and what they tried."""

    _making = _thread.allocate_lock()

    @classmethod
    def of(cls, scheduler: Scheduler) -> "Hazards":
        """The scheduler's own (kept on it, so that it lives and dies with its run)."""
        with cls._making:
            if scheduler.hazards is None:
                scheduler.hazards = cls(scheduler)
            return scheduler.hazards

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._lock = _thread.allocate_lock()
        self.threads: list[_Started] = []
        self.children: list[_Child] = []
        self._notes: list[tuple[Task, str, str]] = []
        self.closed = False

    def record(self, task: Task, command: str, result: str) -> None:
        """Log a hazard: at once from the task holding the baton, else at quiescence."""
        if _context.current_task() is task and task.scheduler._running is task:
            self._log(task, command, result)
        else:
            with self._lock:
                self._notes.append((task, command, result))

    def _log(self, task: Task, command: str, result: str) -> None:
        self.scheduler.log(
            Call, client=task.client, actor=task.name, op=task.op, system=HAZARD, command=command, result=result
        )

    def track_thread(self, task: Task, where: str, thread: Any = None) -> "_Started":
        started = _Started(task, where, thread)
        with self._lock:
            started.cancelled = self.closed
            self.threads.append(started)
        return started

    def track_child(self, task: Task, pid: int, where: str) -> None:
        with self._lock:
            if all(child.pid != pid for child in self.children):
                self.children.append(_Child(pid, _stat(pid), task, where))

    def at_quiescence(self) -> None:
        """Record what the layer left behind: its threads' refusals, threads still running,
        child processes not reaped (those are killed and reaped now)."""
        with self._lock:
            notes, self._notes = self._notes, []
        for task, command, result in notes:
            self._log(task, command, result)
        deadline = _clock() + GRACE
        running = [started for started in list(self.threads) if not started.wait(deadline - _clock())]
        for (task, where), group in _grouped(running).items():
            self._log(
                task,
                f"left {_count(len(group), 'thread')} running (started at {where})",
                "still running after quiescence: made daemon, never waited for, and stopped when the "
                "example ends if it runs the layer's code",
            )
        for (task, where), group in _grouped(self._reap()).items():
            self._log(
                task,
                f"left {_count(len(group), 'child process', 'child processes')} behind (started at {where})",
                "not reaped by the layer at quiescence: killed with its descendants and reaped by the harness",
            )

    def close(self) -> None:
        """Contain what is left when the example ends: interrupt threads, kill and reap children."""
        with self._lock:
            self.closed = True
            threads = list(self.threads)
        for started in threads:
            started.interrupt()
        self._reap()

    def _reap(self) -> list["_Child"]:
        with self._lock:
            children, self.children = self.children, []
        return [child for child in children if child.collect()]


def _grouped(items: list[Any]) -> dict[tuple[Task, str], list[Any]]:
    groups: dict[tuple[Task, str], list[Any]] = {}
    for item in items:
        groups.setdefault((item.task, item.where), []).append(item)
    return groups


def _count(n: int, noun: str, plural: str = "") -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


# -- threads ----------------------------------------------------------------------------------


class _Started:
    """A real thread a layer started.  ``Cancelled`` is raised in it only while ``running``
    (inside the layer's function), under ``_lock``, at most once."""

    def __init__(self, task: Task, where: str, thread: Any = None) -> None:
        self.task = task
        self.where = where
        self.thread = thread
        """The ``threading.Thread``, if it was started as one."""
        self.ident: int | None = None
        self.running = False
        self.cancelled = False
        self._interrupted = False
        self._lock = _thread.allocate_lock()
        self._ended = _thread.allocate_lock()
        self._ended.acquire()

    def enter(self) -> bool:
        """In the new thread: False if the example already ended (the function must not run)."""
        with self._lock:
            if self.cancelled:
                return False
            self.ident = _thread.get_ident()
            self.running = True
            return True

    def leave(self) -> None:
        """In the thread, as it ends; an interrupt still pending is absorbed here."""
        while True:
            try:
                with self._lock:
                    self.running = False
                try:
                    self._ended.release()
                except RuntimeError:  # released on an earlier pass
                    pass
                return
            except Cancelled:
                continue

    def wait(self, timeout: float) -> bool:
        """Whether the thread ended within ``timeout`` wall seconds."""
        if not self._ended.acquire(timeout=max(0.0, timeout)):
            return False
        self._ended.release()
        return True

    def interrupt(self) -> None:
        """Stop the layer's code in this thread, best effort.

        A pending ``threading.Timer`` is cancelled.  ``Cancelled`` is raised only in a thread
        running the layer's code (a library's idle worker is left alone: raising there would
        only make the library log it); it takes effect once the thread runs Python code.
        """
        if isinstance(self.thread, threading.Timer):
            self.thread.cancel()
        with self._lock:
            self.cancelled = True
            if not self.running or self.ident is None or self._interrupted:
                return
            frame = sys._current_frames().get(self.ident)
            if frame is not None and _runs_layer_code(frame):
                self._interrupted = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.ident), ctypes.py_object(Cancelled))


def _runs_layer_code(frame: FrameType | None) -> bool:
    while frame is not None:
        if _kind(frame) == "layer":
            return True
        frame = frame.f_back
    return False


def _contained(owner: "tuple[Hazards, Task]", started: _Started, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as the body of a tracked thread: owned, cancellable, its end signalled."""

    @functools.wraps(function)
    def body(*args: Any, **kwargs: Any) -> Any:
        _local.owner = owner
        try:
            if started.enter():
                return function(*args, **kwargs)
        except Cancelled:
            pass
        finally:
            started.leave()
        return None

    return body


def _start_new_thread(real: Callable[..., int]) -> Callable[..., int]:
    def start_new_thread(function: Any, args: Any, *rest: Any) -> int:
        owner = _owner()
        caller = sys._getframe(1)
        if owner is None or not callable(function) or _started_by_harness(caller):
            return real(function, args, *rest)
        started = owner[0].track_thread(owner[1], _where(caller))
        try:
            return real(_contained(owner, started, function), args, *rest)
        except BaseException:
            started.leave()
            raise

    start_new_thread.__name__ = real.__name__
    return start_new_thread


def _thread_start(real: Callable[[Any], None]) -> Callable[[Any], None]:
    def start(self: Any) -> None:
        owner = _owner()
        caller = sys._getframe(1)
        ready = getattr(self, "_initialized", False) and not self._started.is_set()
        if owner is None or not ready or _started_by_harness(caller):
            return real(self)
        started = owner[0].track_thread(owner[1], _where(caller), self)
        self.daemon = True  # never keeps pytest alive at exit
        self.run = _contained(owner, started, self.run)
        try:
            return real(self)
        except BaseException:
            started.leave()
            raise

    return start


# -- child processes --------------------------------------------------------------------------


class _Child:
    """A process a layer started by ``exec``; ``born`` tells it from a later process with its pid."""

    def __init__(self, pid: int, stat: "tuple[int, str, int] | None", task: Task, where: str) -> None:
        self.pid = pid
        self.born = stat[2] if stat else None
        self.task = task
        self.where = where

    def collect(self) -> bool:
        """Kill and reap the child if it is still ours and unreaped; whether it was."""
        stat = _stat(self.pid)
        if _HAVE_PROC:
            if stat is None or stat[0] != os.getpid() or stat[2] != self.born:
                return False  # reaped already (and perhaps its pid reused)
            for pid in _descendants(self.pid):
                _signal_quietly(pid)
            if stat[1] != "Z":
                _signal_quietly(self.pid)
        else:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return True
            except ChildProcessError:
                return False
            _signal_quietly(self.pid)
        deadline = _clock() + REAP_LIMIT
        while _clock() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:  # the layer's own thread reaped it meanwhile
                break
            _nap(0.005)
        return True


_HAVE_PROC = os.path.isdir("/proc/self")


def _stat(pid: int) -> "tuple[int, str, int] | None":
    """(parent pid, state, start time) of ``pid`` from ``/proc``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                parents.setdefault(stat[0], []).append(int(entry))
    found, frontier = [], [pid]
    while frontier:
        below = [child for parent in frontier for child in parents.get(parent, [])]
        found.extend(below)
        frontier = below
    return found


def _signal_quietly(pid: int) -> None:
    try:
        _real_kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _tracking_spawn(real: Callable[..., int]) -> Callable[..., int]:
    """``os.posix_spawn`` and ``_posixsubprocess.fork_exec``: the pid they return is tracked."""

    def spawn(*args: Any, **kwargs: Any) -> int:
        pid = real(*args, **kwargs)
        owner = _owner()
        if owner is not None and isinstance(pid, int) and pid > 0:
            owner[0].track_child(owner[1], pid, _where(sys._getframe(1)))
        return pid

    spawn.__name__ = real.__name__
    return spawn


def _tracking_popen(real: Callable[..., None]) -> Callable[..., None]:
    """``subprocess.Popen._execute_child``: the child's pid is tracked."""

    def execute_child(self: Any, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        owner = _owner()
        if owner is not None and getattr(self, "pid", None):
            owner[0].track_child(owner[1], self.pid, _where(sys._getframe(1)))

    return execute_child


# -- refusals ---------------------------------------------------------------------------------


def _refusing(
    name: str, real: Callable[..., Any], describe: Callable[..., "str | None"], why: str
) -> Callable[..., Any]:
    """``real``, except that a call ``describe`` names (a hazard) from a layer raises OSError.

    ``describe`` takes the call's arguments and returns what the layer tried ("set an alarm for
    1 s"), or None for a harmless call, which goes through.
    """

    def refuse(*args: Any, **kwargs: Any) -> Any:
        owner = _owner()
        if owner is None:
            return real(*args, **kwargs)
        try:
            what = describe(*args, **kwargs)
        except (TypeError, ValueError):  # bad arguments: the real function says so
            return real(*args, **kwargs)
        if what is None:
            return real(*args, **kwargs)
        hazards, task = owner
        where = _where(sys._getframe(1))
        hazards.record(task, f"{what} ({where})", f"refused: {name}() raised OSError in the layer; {why}")
        raise OSError(f"{REFUSED}: {name}() at {where} in a simulated client: {why}")

    refuse.__name__ = getattr(real, "__name__", name)
    return refuse


def _signal_name(number: Any) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {int(number)}"


def _timer_name(which: Any) -> str:
    names = {getattr(signal, n): n for n in ("ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF") if hasattr(signal, n)}
    return names.get(which, f"timer {int(which)}")


def _at_pytest(pid: int, signum: int) -> str | None:
    """What ``os.kill(pid, signum)`` would do to pytest, or None if it leaves pytest alone."""
    if int(signum) == 0:
        return None
    sent = f"sent {_signal_name(signum)} to"
    if pid == os.getpid():
        return f"{sent} the test process"
    if pid == 0 or pid == -os.getpgrp():
        return f"{sent} the test process's group"
    if pid == -1:
        return f"{sent} every process it may signal"
    return None


def _alarm(seconds: int) -> str:
    return f"set an alarm for {int(seconds)} s" if int(seconds) > 0 else "cancelled the process's alarm"


def _timer(which: int, seconds: float, interval: float = 0.0) -> str:
    if float(seconds) > 0:
        return f"set a timer ({_timer_name(which)}) for {float(seconds):g} s"
    return f"cancelled the process's timer ({_timer_name(which)})"


def _killpg(pgid: int, signum: int) -> str | None:
    if int(signum) == 0 or pgid not in (0, os.getpgrp()):
        return None
    return f"sent {_signal_name(signum)} to the test process's group"


_FORK = "the child would be a copy of pytest that runs on with the harness's threads and state"
_KILLS = "its signal would interrupt or kill pytest"
_EXIT = "it would end pytest with no report"

_REFUSALS: list[tuple[object, str, Callable[..., "str | None"], str]] = [
    (os, "fork", lambda: "tried to fork", _FORK),
    (os, "forkpty", lambda: "tried to fork", _FORK),
    (os, "kill", _at_pytest, _KILLS),
    (os, "killpg", _killpg, _KILLS),
    (os, "_exit", lambda status: f"tried to exit the test process (os._exit({int(status)}))", _EXIT),
    (os, "abort", lambda: "tried to abort the test process", _EXIT),
    (signal, "signal", lambda signum, handler: f"installed a handler for {_signal_name(signum)}",
     "it would replace pytest's own handler"),
    (signal, "alarm", _alarm, "the alarm's SIGALRM would kill pytest"),
    (signal, "setitimer", _timer, "the timer's signal would kill pytest"),
    (signal, "pthread_kill", lambda ident, signum: None if int(signum) == 0 else
     f"sent {_signal_name(signum)} to a thread of the test process", _KILLS),
    (signal, "raise_signal", lambda signum: f"raised {_signal_name(signum)} in the test process", _KILLS),
]


def replacements() -> list[tuple[object, str, Any]]:
    """(module or class, name, replacement) for ``_patches.simulated_world`` to install."""
    plan: list[tuple[object, str, Any]] = []
    for module, name, describe, why in _REFUSALS:
        if hasattr(module, name):
            qualified = f"{module.__name__}.{name}"  # type: ignore[attr-defined]
            plan.append((module, name, _refusing(qualified, getattr(module, name), describe, why)))
    for name in ("start_new_thread", "start_new"):
        if hasattr(_thread, name):
            plan.append((_thread, name, _start_new_thread(getattr(_thread, name))))
    plan.append((_RealThread, "start", _thread_start(_RealThread.start)))
    plan.append((subprocess.Popen, "_execute_child", _tracking_popen(subprocess.Popen._execute_child)))
    for name in ("posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            plan.append((os, name, _tracking_spawn(getattr(os, name))))
    if _posixsubprocess is not None:
        plan.append((_posixsubprocess, "fork_exec", _tracking_spawn(_posixsubprocess.fork_exec)))
    return plan

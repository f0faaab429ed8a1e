"""A layer that leaves threads running, forks, or sets a signal handler or alarm is a finding.

Each is reported with where the layer did it, contained (threads made daemon and interrupted,
forks refused, children killed and reaped, alarms refused), and the run survives.  Each
exploration runs in a helper thread joined with a time limit, so a regression cannot freeze the
suite; the signal tests run in a pytest subprocess, so a regression cannot kill this one.
"""

from __future__ import annotations

import _thread
import gc
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref

import pytest
from layers import HandsOff, target

from pytest_cachecheck import Budget, CachecheckFailure, Target, explore
from pytest_cachecheck.engine import _patches
from pytest_cachecheck.history import REFUSED

LIMIT = 30.0
HERE = os.path.basename(__file__)
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="counts child processes through /proc (Linux)")


def line_of(marker: str) -> int:
    """The line of this file that carries ``# <marker>``."""
    with open(__file__) as handle:
        lines = [number for number, text in enumerate(handle, 1) if text.rstrip().endswith(f"# {marker}")]
    assert len(lines) == 1, marker
    return lines[0]


def explored(layer: type, examples: int = 10):
    """Explore ``layer`` on the embedded default; the failure, the report, or a failed test."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = explore(
                Target(name=layer.__name__.lower(), build=layer, read="read", write="write"),
                Budget(examples=examples, seed=1),
            )
        except CachecheckFailure as failure:
            outcome["failure"] = failure

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(LIMIT)
    if worker.is_alive():
        pytest.fail(f"{layer.__name__}: the exploration did not end within {LIMIT:g} s of wall time")
    return outcome.get("failure") or outcome["report"]


def children() -> dict[int, str]:
    """The child processes of this pytest process: pid -> state (``Z`` for a zombie)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    text = handle.read()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            if int(fields[1]) == os.getpid():
                found[int(entry)] = fields[0]
    return found


class _Base:
    def __init__(self, redis_client, connection) -> None:
        self.r = redis_client
        self.conn = connection

    def _load(self, key: str):
        row = self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()
        return row and row[0]

    def write(self, key: str, value: str) -> None:
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
        self.conn.commit()
        self.r.delete(f"user:{key}")


# -- threads ----------------------------------------------------------------------------------

_spinning: set[int] = set()
_spinning_lock = _thread.allocate_lock()


def _spin() -> None:
    threading.current_thread()  # a foreign thread's _DummyThread is built while the world is patched
    with _spinning_lock:
        _spinning.add(_thread.get_ident())
    try:
        while True:
            time.sleep(0.005)
    finally:
        with _spinning_lock:
            _spinning.discard(_thread.get_ident())


class LeaksRawThreads(_Base):
    """Starts three never-ending threads with ``_thread`` on every read."""

    def read(self, key: str):
        for _ in range(3):
            _thread.start_new_thread(_spin, ())  # leak
        return self._load(key)


class Pinger(threading.Thread):
    """A real thread class, defined at import: the harness cannot make it cooperative."""

    started: list["Pinger"] = []

    def run(self) -> None:
        while True:
            time.sleep(0.005)


class StartsAPinger(_Base):
    def read(self, key: str):
        pinger = Pinger()
        Pinger.started.append(pinger)
        pinger.start()  # pinger
        return self._load(key)


class SchedulesATimer(_Base):
    """A library's real thread: a ``threading.Timer`` due in an hour."""

    timers: list[threading.Timer] = []

    def read(self, key: str):
        timer = threading.Timer(3600, print, ("too late",))
        SchedulesATimer.timers.append(timer)
        timer.start()  # timer
        return self._load(key)


class FireAndForget(_Base):
    """Starts a real thread that ends at once: nothing is left running."""

    def read(self, key: str):
        _thread.start_new_thread(lambda: None, ())
        return self._load(key)


def until(condition, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_threads_a_layer_leaves_running_are_a_finding_told_with_where_they_started():
    failure = explored(LeaksRawThreads)
    assert isinstance(failure, CachecheckFailure), failure
    assert failure.report.properties["process-hazards"] == "violated"
    story = str(failure)
    assert re.search(rf"left \d+ threads running \(started at \S*{HERE}:{line_of('leak')}\)", story), story
    # Contained: interrupted when their example closed, so none is left spinning.
    assert until(lambda: not _spinning), f"{len(_spinning)} leaked threads still running after the run"


def test_a_real_thread_class_left_running_is_made_daemon_and_interrupted():
    Pinger.started.clear()
    failure = explored(StartsAPinger)
    assert isinstance(failure, CachecheckFailure), failure
    assert re.search(rf"left \d+ threads? running \(started at \S*{HERE}:{line_of('pinger')}\)", str(failure))
    assert Pinger.started and all(pinger.daemon for pinger in Pinger.started)  # never keeps pytest alive
    assert until(lambda: not any(pinger.is_alive() for pinger in Pinger.started))


def test_a_timer_left_pending_is_a_thread_left_running_and_is_cancelled():
    SchedulesATimer.timers.clear()
    failure = explored(SchedulesATimer)
    assert isinstance(failure, CachecheckFailure), failure
    assert re.search(rf"left \d+ threads? running \(started at \S*{HERE}:{line_of('timer')}\)", str(failure))
    assert SchedulesATimer.timers and until(lambda: not any(t.is_alive() for t in SchedulesATimer.timers))


def test_a_thread_that_ends_by_itself_is_not_a_hazard():
    report = explored(FireAndForget)
    assert not isinstance(report, CachecheckFailure), str(report)
    assert report.properties["process-hazards"] == "ok"


def test_the_harness_s_own_threads_are_not_hazards():
    """A cooperative thread becomes a task (a real thread the harness starts): no finding."""
    report = explore(target(HandsOff), Budget(examples=10, seed=1))
    assert report.passed
    assert report.properties["process-hazards"] == "ok"


# -- processes --------------------------------------------------------------------------------


class ForksAndFallsBack(_Base):
    """Tries to load in a forked child; loads in-process when the fork fails."""

    def read(self, key: str):
        try:
            pid = os.fork()  # fork
        except OSError:
            return self._load(key)
        if pid == 0:
            os._exit(0)
        return self._load(key)


class ForksWithMultiprocessing(_Base):
    def read(self, key: str):
        process = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
        process.start()  # multiprocessing
        return self._load(key)


class StartsAChild(_Base):
    """Starts a process by exec (allowed) and never waits for it."""

    def read(self, key: str):
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # popen
        return self._load(key)


@needs_proc
def test_a_fork_is_refused_and_is_a_finding_the_same_every_run():
    before = children()
    first = explored(ForksAndFallsBack)
    assert isinstance(first, CachecheckFailure), first
    assert first.report.properties["process-hazards"] == "violated"
    assert re.search(rf"tried to fork \(\S*{HERE}:{line_of('fork')}\) at step \d+: refused", str(first))
    assert set(children()) - set(before) == set()
    again = explored(ForksAndFallsBack)
    assert str(again) == str(first)


@needs_proc
def test_multiprocessing_with_the_fork_method_is_refused_and_leaves_no_process():
    before = children()
    failure = explored(ForksWithMultiprocessing)
    assert isinstance(failure, CachecheckFailure), failure
    story = str(failure)
    assert f"{REFUSED}: os.fork() at " in story
    assert f"{HERE}:{line_of('multiprocessing')}" in story
    assert set(children()) - set(before) == set()


@needs_proc
def test_a_child_process_the_layer_leaves_is_killed_and_reaped():
    before = children()
    failure = explored(StartsAChild)
    assert isinstance(failure, CachecheckFailure), failure
    assert re.search(rf"left \d+ child process(es)? behind \(started at \S*{HERE}:{line_of('popen')}\)", str(failure))
    left = {pid: state for pid, state in children().items() if pid not in before}
    assert left == {}, f"children left behind (pid: state): {left}"


def test_what_a_run_tracks_does_not_keep_the_run_alive():
    from pytest_cachecheck.engine._scheduler import Scheduler

    def schedulers():
        gc.collect()
        return [o for o in gc.get_objects() if isinstance(o, Scheduler)]

    before = weakref.WeakSet(schedulers())  # other tests' runs, kept by their blocked threads
    explored(FireAndForget, examples=5)
    assert [s for s in schedulers() if s not in before] == []


def test_pytest_itself_keeps_the_real_functions_while_the_world_is_patched():
    previous = signal.getsignal(signal.SIGUSR1)
    with _patches.simulated_world():
        assert signal.signal(signal.SIGUSR1, signal.SIG_IGN) == previous  # the main thread may
        signal.signal(signal.SIGUSR1, previous)
        os.kill(os.getpid(), 0)
        patched_fork = os.fork
    assert os.fork is not patched_fork  # and the original is back afterwards


# -- signals, in a pytest of their own: a regression would kill it, not this run ---------------

SIGNAL_TESTS = '''
import _thread, os, signal, time
import pytest
from pytest_cachecheck import Budget, CachecheckFailure, Target, explore


class Base:
    def __init__(self, redis_client, connection):
        self.conn = connection

    def _load(self, key):
        return self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()[0]

    def write(self, key, value):
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
        self.conn.commit()


class Alarm(Base):
    def read(self, key):
        signal.alarm(1)
        return self._load(key)


class Terminates(Base):
    def read(self, key):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except OSError:
            pass
        return self._load(key)


class Handler(Base):
    def read(self, key):
        try:
            signal.signal(signal.SIGUSR1, lambda *a: None)
        except (OSError, ValueError):
            pass
        return self._load(key)


def arm():
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
    except OSError:
        pass


class AlarmFromItsThread(Base):
    def read(self, key):
        _thread.start_new_thread(arm, ())
        time.sleep(0.05)
        return self._load(key)


def failure_of(layer, wait=0.0):
    with pytest.raises(CachecheckFailure) as info:
        layer_target = Target(name=layer.__name__.lower(), build=layer, read="read", write="write")
        explore(layer_target, Budget(examples=5, seed=1))
    time.sleep(wait)  # an alarm or timer that slipped through would have fired by now
    return str(info.value)


def test_alarm():
    story = failure_of(Alarm, wait=1.5)
    assert "cachecheck: refused: signal.alarm() at " in story and "the alarm's SIGALRM would kill pytest" in story


def test_kill_self():
    story = failure_of(Terminates)
    assert "[process-hazards]" in story and "sent SIGTERM to the test process (" in story


def test_handler():
    story = failure_of(Handler)
    assert "[process-hazards]" in story and "installed a handler for SIGUSR1 (" in story


def test_timer_from_a_thread_the_layer_started():
    story = failure_of(AlarmFromItsThread, wait=1.0)
    assert "[process-hazards]" in story and "set a timer (ITIMER_REAL) for 0.5 s" in story
'''


def test_signals_and_alarms_are_findings_and_pytest_survives(pytester):
    pytester.makepyfile(test_signals=SIGNAL_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    assert result.ret == 0, "\n".join(result.outlines[-40:])  # 142 if SIGALRM had killed it
    result.assert_outcomes(passed=4)

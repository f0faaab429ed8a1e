"""The scheduler and the cooperative primitives, driven task by task."""

import threading
import time

import pytest

from pytest_cachecheck.engine._clock import VirtualClock
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.engine._scheduler import Scheduler, Stall
from pytest_cachecheck.history import Call


@pytest.fixture
def scheduler():
    with simulated_world():
        scheduler = Scheduler(VirtualClock(), watchdog=5.0, timeout=30.0, max_points_per_op=100)
        yield scheduler
        scheduler.close()


def work(scheduler, text="work"):
    """A scheduling point standing for some I/O."""
    scheduler.point("io", text, lambda: None)


def results(scheduler, actor):
    return [(e.command, e.result) for e in scheduler.events if isinstance(e, Call) and e.actor == actor]


def test_a_contended_lock_makes_the_waiter_wait_until_released(scheduler):
    a, b = scheduler.spawn("a", 1), scheduler.spawn("b", 2)
    shared = {}

    def holder():
        shared["lock"] = threading.Lock()
        with shared["lock"]:
            work(scheduler)
        work(scheduler, "after")

    def contender():
        with shared["lock"]:
            work(scheduler, "inside")

    scheduler.submit(a, holder, budget=1)  # acquires, parks before "work"
    scheduler.submit(b, contender, budget=1)
    assert b.state == "waiting" and not b.runnable
    assert results(scheduler, "b") == [("acquire Lock#1", "blocked: held by a")]
    scheduler.step(a)  # "work", then releases, parks before "after"
    assert b.state == "ready"
    scheduler.run_to_completion(b)
    assert results(scheduler, "b")[-2:] == [("acquire Lock#1", "True"), ("inside", "nil")]


def test_a_timed_acquire_gives_up_at_its_virtual_deadline(scheduler):
    a, b = scheduler.spawn("a", 1), scheduler.spawn("b", 2)
    shared, got = {}, []

    def holder():
        shared["lock"] = threading.Lock()
        shared["lock"].acquire()
        work(scheduler)

    def contender():
        got.append(shared["lock"].acquire(timeout=5))

    scheduler.submit(a, holder, budget=1)
    scheduler.submit(b, contender, budget=1)
    assert b.state == "waiting" and b.runnable  # runnable by its deadline
    scheduler.step(b)
    assert got == [False]
    assert scheduler.clock.now == 5.0


def test_taking_ones_own_lock_twice_is_a_deadlock(scheduler):
    a = scheduler.spawn("a", 1)

    def twice():
        lock = threading.Lock()
        lock.acquire()
        lock.acquire()

    with pytest.raises(Stall) as stall:
        scheduler.submit(a, twice, budget=5)
    assert stall.value.kind == "deadlock"
    assert stall.value.message == "a waits for Lock#1, which it holds itself: it can never proceed"


def test_two_tasks_each_waiting_for_the_others_lock_deadlock(scheduler):
    a, b = scheduler.spawn("a", 1), scheduler.spawn("b", 2)
    locks = {}

    def first():
        locks["x"], locks["y"] = threading.Lock(), threading.Lock()
        with locks["x"]:
            work(scheduler)
            with locks["y"]:
                pass

    def second():
        with locks["y"]:
            work(scheduler)
            with locks["x"]:
                pass

    scheduler.submit(a, first, budget=1)
    scheduler.submit(b, second, budget=1)
    scheduler.step(a, 2)  # work; then waits for y
    assert a.state == "waiting"
    with pytest.raises(Stall) as stall:
        scheduler.step(b, 2)  # work; then waits for x: a cycle
    assert stall.value.message == "deadlock: b waits for Lock#1 held by a; a waits for Lock#2 held by b"


def test_an_rlock_is_reentrant_and_only_its_owner_releases_it(scheduler):
    a, b = scheduler.spawn("a", 1), scheduler.spawn("b", 2)
    shared, errors = {}, []

    def owner():
        shared["lock"] = lock = threading.RLock()
        lock.acquire()
        lock.acquire()
        work(scheduler)

    def stranger():
        try:
            shared["lock"].release()
        except RuntimeError as error:
            errors.append(str(error))

    scheduler.submit(a, owner, budget=2)
    scheduler.submit(b, stranger, budget=1)
    assert errors == ["cannot release un-acquired lock"]


def test_an_event_wakes_its_waiter(scheduler):
    a, b = scheduler.spawn("a", 1), scheduler.spawn("b", 2)
    shared, seen = {"event": None}, []

    def setter():
        shared["event"] = threading.Event()
        work(scheduler)
        shared["event"].set()

    def waiter():
        seen.append(shared["event"].wait())

    scheduler.submit(a, setter, budget=0)
    scheduler.submit(b, waiter, budget=1)
    assert b.state == "waiting"
    scheduler.run_to_completion(a)
    assert b.state == "ready"
    scheduler.run_to_completion(b)
    assert seen == [True]


def test_a_condition_releases_its_lock_while_waiting(scheduler):
    a, b = scheduler.spawn("a", 1), scheduler.spawn("b", 2)
    shared, log = {}, []

    def consumer():
        shared["cond"] = cond = threading.Condition()
        with cond:
            log.append(("waiting",))
            cond.wait()
            log.append(("woken",))

    def producer():
        with shared["cond"]:
            shared["cond"].notify()
            log.append(("notified",))

    scheduler.submit(a, consumer, budget=2)  # acquire, wait (releases the lock)
    assert a.state == "waiting"
    scheduler.submit(b, producer, budget=10)
    assert log == [("waiting",), ("notified",)]
    assert a.state == "ready"
    scheduler.run_to_completion(a)
    assert log[-1] == ("woken",)


def test_a_semaphore_admits_its_value_then_waits(scheduler):
    tasks = [scheduler.spawn(name, i) for i, name in enumerate("abc", 1)]
    shared = {}

    def enter():
        shared.setdefault("sem", threading.Semaphore(2))
        shared["sem"].acquire()
        work(scheduler)

    for task in tasks:
        scheduler.submit(task, enter, budget=1)
    assert [t.state for t in tasks] == ["ready", "ready", "waiting"]


def test_a_thread_the_layer_starts_is_an_actor_that_joins_cooperatively(scheduler):
    a = scheduler.spawn("a", 1)
    done = []

    def parent():
        thread = threading.Thread(target=lambda: (work(scheduler, "child work"), done.append(True)), name="flusher")
        thread.start()
        thread.join()

    scheduler.submit(a, parent, budget=5)
    [child] = [t for t in scheduler.tasks if t.name == "a/flusher"]
    assert a.state == "waiting" and child.state == "ready" and not done
    scheduler.run_to_completion(child)
    assert done == [True] and a.state == "ready"
    scheduler.run_to_completion(a)
    assert a.state == "idle"


def test_a_sleep_is_a_point_that_jumps_the_clock_when_executed(scheduler):
    a = scheduler.spawn("a", 1)
    readings = []

    def napper():
        readings.append(time.time())
        time.sleep(10)
        readings.append(time.time())

    scheduler.submit(a, napper, budget=0)
    assert a.pending == "sleep(10)" and scheduler.clock.now == 0.0
    scheduler.step(a)
    assert readings[1] - readings[0] == 10.0 and scheduler.clock.now == 10.0

"""Primitives a layer (or a library) imported by name before exploration are simulated too.

``from threading import Condition`` at import used to keep the real class: two clients of one
app instance sharing such a lock blocked the scheduler and the watchdog reported a hang; a
``from time import sleep`` slept in wall time.
"""

import threading
import time

import bound_by_name_layer
from layers import target

from pytest_cachecheck import Budget, RunConfig, explore
from pytest_cachecheck.engine._patches import simulated_world


def test_names_bound_before_exploration_are_replaced_and_restored():
    real = (bound_by_name_layer.Condition, bound_by_name_layer.Lock, bound_by_name_layer.sleep)
    assert real == (threading.Condition, threading.Lock, time.sleep)
    with simulated_world():
        assert bound_by_name_layer.Condition is threading.Condition is not real[0]
        assert bound_by_name_layer.sleep is time.sleep is not real[2]
    assert (bound_by_name_layer.Condition, bound_by_name_layer.Lock, bound_by_name_layer.sleep) == real


def test_a_layer_using_primitives_imported_by_name_runs_with_no_watchdog_report():
    started = time.perf_counter()
    report = explore(target(bound_by_name_layer.ByName), Budget(examples=60, seed=7), config=RunConfig(watchdog=2.0))
    assert report.passed, report.failure
    # 60 examples each sleeping 0.5 s per read: in wall time that alone would take minutes.
    assert report.operations > 60 and time.perf_counter() - started < report.operations * 0.5


def test_the_harness_and_the_standard_library_keep_their_own_bindings():
    import queue

    with simulated_world():
        assert queue.time is not time.time  # queue's `from time import monotonic as time`: untouched

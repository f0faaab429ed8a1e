"""Thread-aware patches: the simulated world for simulated clients, the real one for the rest.

While an exploration runs, ``time``, ``random``, ``os.urandom``, ``uuid`` and the ``threading``
factories are replaced by dispatchers.  In a thread that belongs to a simulated task they answer
from the run: the virtual clock, the task's own seeded ``random.Random``, cooperative locks; in
any other thread (pytest, Hypothesis) they call the original.  So a layer needs no change, and
the same decisions give the same run byte for byte.

Only primitives created by the layer's own code become cooperative: a lock built inside the
standard library, redis-py, fakeredis, psycopg or the harness stays real, because those guard
the harness's own I/O and must never become scheduling points.

What a layer does to the test process itself (a real thread left running, a fork, a signal
handler or alarm) is patched here too, and found, refused or contained by ``_hazards``.

A name the layer's modules bound before the patch (``from time import sleep``,
``from threading import Condition`` at import time, in the user's code or a library such as
cachetools) is replaced too, in those modules only.  Limits: a lock *created* before the
exploration stays real; a class defined as ``class Flusher(threading.Thread)`` at import time
stays a real thread (it blocks outside our control and the watchdog reports it; left running,
it is a process hazard).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from . import _context, _cooperative, _hazards
from ._origin import module_kind


def _created_by_layer(depth: int) -> bool:
    """Whether the frame ``depth`` levels up is the layer's code, in a simulated task."""
    if _context.current_task() is None:
        return False
    return module_kind(sys._getframe(depth + 1).f_globals.get("__name__", "")) == "layer"


class _DispatchingType(type):
    """``isinstance(x, threading.Event)`` keeps working for both kinds while patched."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, (cls._real, cls._cooperative))  # type: ignore[attr-defined]

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, (cls._real, cls._cooperative))  # type: ignore[attr-defined]


def _dispatching_class(name: str, real: type, cooperative: type) -> type:
    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if _created_by_layer(1):
            return cooperative(*args, **kwargs)
        return real(*args, **kwargs)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        # Only ever called by name, as ``Thread.__init__(self, ...)`` from a subclass the standard
        # library defined before the patch (``threading.Timer``, ``_DummyThread``,
        # ``BoundedSemaphore``): the base class ``self`` really has initialises it.
        (cooperative if isinstance(self, cooperative) else real).__init__(self, *args, **kwargs)

    namespace = {"__new__": __new__, "__init__": __init__, "_real": real, "_cooperative": cooperative}
    return _DispatchingType(name, (), namespace)


def _dispatching_factory(real: Callable[..., Any], cooperative: Callable[..., Any]) -> Callable[..., Any]:
    def factory(*args: Any, **kwargs: Any) -> Any:
        if _created_by_layer(1):
            return cooperative(*args, **kwargs)
        return real(*args, **kwargs)

    factory.__name__ = getattr(real, "__name__", "factory")
    return factory


def _clock_reader(real: Callable[[], Any], read: Callable[[Any], Any]) -> Callable[[], Any]:
    def reader() -> Any:
        clock = _context.current_clock()
        return real() if clock is None else read(clock)

    reader.__name__ = real.__name__
    return reader


def _sleep(real: Callable[[float], None]) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        task = _context.current_task()
        if task is None:
            return real(seconds)
        task.scheduler.sleep(seconds)

    return sleep


def _per_task_random(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        task = _context.current_task()
        if task is None:
            return real(*args, **kwargs)
        return getattr(task.random, name)(*args, **kwargs)

    call.__name__ = name
    return call


def _urandom(real: Callable[[int], bytes]) -> Callable[[int], bytes]:
    def urandom(n: int) -> bytes:
        task = _context.current_task()
        return real(n) if task is None else task.random.randbytes(n)

    return urandom


def _uuid(real: Callable[..., uuid.UUID], version: int) -> Callable[..., uuid.UUID]:
    def make(*args: Any, **kwargs: Any) -> uuid.UUID:
        task = _context.current_task()
        if task is None:
            return real(*args, **kwargs)
        return uuid.UUID(int=task.random.getrandbits(128), version=version)

    make.__name__ = real.__name__
    return make


def _replacements() -> list[tuple[object, str, Any]]:
    plan: list[tuple[object, str, Any]] = [
        (time, "time", _clock_reader(time.time, lambda c: c.wall())),
        (time, "time_ns", _clock_reader(time.time_ns, lambda c: int(c.wall() * 1e9))),
        (time, "monotonic", _clock_reader(time.monotonic, lambda c: c.monotonic())),
        (time, "monotonic_ns", _clock_reader(time.monotonic_ns, lambda c: int(c.monotonic() * 1e9))),
        (time, "perf_counter", _clock_reader(time.perf_counter, lambda c: c.monotonic())),
        (time, "perf_counter_ns", _clock_reader(time.perf_counter_ns, lambda c: int(c.monotonic() * 1e9))),
        (time, "sleep", _sleep(time.sleep)),
        (os, "urandom", _urandom(os.urandom)),
        (uuid, "uuid1", _uuid(uuid.uuid1, 1)),
        (uuid, "uuid4", _uuid(uuid.uuid4, 4)),
        (threading, "Lock", _dispatching_factory(threading.Lock, _cooperative.Lock)),
        (threading, "RLock", _dispatching_factory(threading.RLock, _cooperative.RLock)),
    ]
    for name, cooperative in [
        ("Event", _cooperative.Event),
        ("Condition", _cooperative.Condition),
        ("Semaphore", _cooperative.Semaphore),
        ("BoundedSemaphore", _cooperative.BoundedSemaphore),
        ("Thread", _cooperative.Thread),
    ]:
        plan.append((threading, name, _dispatching_class(name, getattr(threading, name), cooperative)))
    plan.extend(_hazards.replacements())
    shared = random._inst  # type: ignore[attr-defined]
    for name in dir(random):
        function = getattr(random, name)
        if getattr(function, "__self__", None) is shared:
            plan.append((random, name, _per_task_random(name, function)))
    return plan


def _bound_by_name(plan: list[tuple[object, str, Any]]) -> list[tuple[object, str, Any]]:
    """The same replacements where the layer's code (a user's module, a library such as
    cachetools) bound a patched function or class by name before exploration:
    ``from threading import Condition``, ``from time import sleep``.

    Only modules of the layer's kind are touched (never the standard library's, the drivers' or
    the harness's own); the replacements dispatch on the caller, so code outside a simulated
    client still gets the real thing.
    """
    originals = {id(getattr(module, name)): (getattr(module, name), replacement) for module, name, replacement in plan}
    found = []
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict) or module_kind(getattr(module, "__name__", "") or "") != "layer":
            continue
        for name, value in list(namespace.items()):
            hit = originals.get(id(value))
            if hit is not None and hit[0] is value:
                found.append((module, name, hit[1]))
    return found


_depth = 0
_saved: list[tuple[object, str, Any]] = []


@contextmanager
def simulated_world() -> Iterator[None]:
    """Install the dispatchers for the duration (re-entrant; restored on the way out)."""
    global _depth
    if _depth == 0:
        plan = _replacements()
        for module, name, replacement in plan + _bound_by_name(plan):
            _saved.append((module, name, getattr(module, name)))
            setattr(module, name, replacement)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            while _saved:
                module, name, original = _saved.pop()
                setattr(module, name, original)

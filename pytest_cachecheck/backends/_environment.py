"""Server faults: a Redis or PostgreSQL that goes away, refuses or stops answering mid-run.

Such a fault says nothing about the layer under test, so it is never one of its findings: it
stops the exploration at once and is told in one line, naming the server, the example and what
to check::

    cachecheck: environment error in test_x.py::test_y (example 12): Redis at 127.0.0.1:6379
    went away (Error 111 connecting to 127.0.0.1:6379. Connection refused.); check that the
    server is running

(on one line).  Faults are recognised from the driver's error, by type and message, whether it
reached the layer (a failed call in the history reads ``raised <Type>: <message>``) or the
harness's own admin connections (the exception itself).

Invariants:

* An error the harness injected (its message holds :data:`~pytest_cachecheck.history.INJECTED`)
  or a call refused for reaching beyond the run (:data:`~pytest_cachecheck.history.REFUSED`) is
  never an environment fault: those are part of the exploration.
* Only the drivers of real servers fault this way; the embedded fakeredis and SQLite never do
  (a SQLite ``OperationalError`` is the layer's SQL, and a fakeredis that spins is the layer's
  script).
* The line is one line: a driver's message is cut to its first line and its control characters
  are escaped.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..history import INJECTED, REFUSED, Call
from ..history._printable import printable
from ._teardown import TeardownError

CLOSE_SECONDS = 2.0
"""Wall seconds the cleanup after a server fault may take before it is abandoned."""

REDIS, SQL = "redis", "sql"

_GONE = "check that the server is running"
_PG_ENDED = (
    "check what ends the run's connections (pg_terminate_backend, a restart or crash of the server, "
    "idle timeouts)"
)
# Messages of psycopg's OperationalError/InterfaceError that mean the connection is gone.
_PG_LOST = (
    "server closed the connection",
    "the connection is closed",
    "the connection is lost",
    "connection is bad",
    "consuming input failed",
    "sending query failed",
    "could not receive data",
    "could not send data",
    "no connection to the server",
    "connection refused",
    "could not connect",
    "ssl syscall error",
)
_REDIS_AUTH = {"AuthenticationError", "AuthorizationError", "NoPermissionError"}
"""A layer may AUTH or be refused a command by its ACL user: those are its own doing."""


@dataclass(frozen=True)
class Fault:
    """What went wrong with one server, in the words of the one-line error."""

    system: str
    """``redis`` or ``sql``: which side of the backend failed."""
    what: str
    """Follows the server's name: "went away (Connection refused)"."""
    hint: str
    """What to check, after a semicolon."""


class EnvironmentFailure(Exception):
    """A server failed under the run; ``str()`` is the one-line error.

    Not an ``AssertionError``: nothing is known about the layer.  ``explore`` raises it, and the
    plugin fails the test with its line (``line(where)`` names the test instead of the target).
    """

    def __init__(self, fault: Fault, server: str, where: str, example: int | None, *, cleanup: bool = False) -> None:
        self.fault = fault
        self.server = server
        self.where = where
        self.example = example
        self.cleanup = cleanup
        super().__init__(self.line(where))

    def line(self, where: str) -> str:
        if self.example is None:
            when = "before the first example"
        elif self.cleanup:
            when = f"cleaning up after example {self.example}"
        else:
            when = f"example {self.example}"
        return printable(
            f"cachecheck: environment error in {where} ({when}): {self.server} {self.fault.what}; {self.fault.hint}"
        )


# -- recognising a fault -----------------------------------------------------------------------


def classify(system: str, kinds: Iterable[str], message: str) -> Fault | None:
    """The fault a driver error means, or None when it is not one.

    ``kinds`` are the names of the error's class and its bases (a call in the history gives its
    class's name only); ``message`` is its text.
    """
    kinds = set(kinds)
    if INJECTED in message or REFUSED in message:
        return None
    first = _first_line(message)
    lowered = message.lower()
    if system == REDIS:
        if kinds & _REDIS_AUTH:
            return None
        if "max number of clients" in lowered:
            return Fault(REDIS, f"refused a connection ({first})", "check the server's maxclients and what holds its connections")
        if "OutOfMemoryError" in kinds or "used memory > 'maxmemory'" in message or "OOM command not allowed" in message:
            return Fault(
                REDIS,
                f"is out of memory ({first})",
                "check its maxmemory and maxmemory-policy: a full server with noeviction refuses writes",
            )
        if "MISCONF" in message:
            return Fault(REDIS, f"cannot persist ({first})", "check the server's disk and its log")
        if "BusyLoadingError" in kinds:
            return Fault(REDIS, f"is still loading its data ({first})", "wait for the server to finish loading")
        if "ReadOnlyError" in kinds:
            return Fault(REDIS, f"is a read-only replica ({first})", "point the harness at the primary")
        if "TimeoutError" in kinds:
            return Fault(REDIS, f"stopped answering ({first})", "check the server's load and the network")
        if "ConnectionError" in kinds:
            return Fault(REDIS, f"went away ({first})", _GONE)
        return None
    if system == SQL:
        if kinds & {"AdminShutdown", "CrashShutdown", "IdleInTransactionSessionTimeout", "IdleSessionTimeout"} or (
            "terminating connection" in lowered
        ):
            return Fault(SQL, f"ended the run's connection ({first})", _PG_ENDED)
        if "TooManyConnections" in kinds or "too many clients" in lowered or "too many connections" in lowered or (
            "remaining connection slots" in lowered
        ):
            return Fault(SQL, f"refused a connection ({first})", "check max_connections and what holds the server's connections")
        if "CannotConnectNow" in kinds or "the database system is" in lowered:
            return Fault(SQL, f"is not accepting connections ({first})", _GONE)
        if "ConnectionTimeout" in kinds or "timeout expired" in lowered:
            return Fault(SQL, f"stopped answering ({first})", "check the server's load and the network")
        if kinds & {"OperationalError", "InterfaceError"} and any(text in lowered for text in _PG_LOST):
            return Fault(SQL, f"went away ({first})", _GONE)
    return None


def classify_exception(exc: BaseException | None, systems: Iterable[str] = (REDIS, SQL)) -> Fault | None:
    """The fault behind ``exc`` or the errors it was raised from (``BuildError`` from a
    ``ConnectionError``) on one of ``systems``, or None."""
    systems = set(systems)
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TeardownError):
            system = REDIS if exc.server.startswith("Redis") else SQL
            return Fault(
                system,
                f"could not be cleaned up ({exc.step}: {exc.reason})",
                "check the server's load and what holds locks there; the next run sweeps what is left",
            )
        system = _system_of(exc)
        if system in systems:
            fault = classify(system, (cls.__name__ for cls in type(exc).__mro__), str(exc))
            if fault is not None:
                return fault
        exc = exc.__cause__ or exc.__context__
    return None


def classify_call(call: Call) -> Fault | None:
    """The fault a failed call in the history shows (its result reads ``raised <Type>: ...``)."""
    if call.system not in (REDIS, SQL) or not call.result.startswith("raised "):
        return None
    kind, _, message = call.result[len("raised "):].partition(": ")
    return classify(call.system, (kind,), message)


def first_fault(events: Iterable[Any], systems: Iterable[str] = (REDIS, SQL)) -> Fault | None:
    """The fault shown by the first failed call to one of ``systems`` among ``events``."""
    systems = set(systems)
    for event in events:
        if isinstance(event, Call) and event.system in systems:
            fault = classify_call(event)
            if fault is not None:
                return fault
    return None


def real_systems(backend: Any) -> frozenset[str]:
    """The sides of ``backend`` that are real servers (the only ones that fault this way)."""
    systems = set()
    if getattr(backend.cache, "url", None):
        systems.add(REDIS)
    if getattr(backend.source, "dsn", None):
        systems.add(SQL)
    return frozenset(systems)


def stalled_in_server(task: Any, backend: Any) -> Fault | None:
    """A task the watchdog caught inside a real server's driver, waiting for an answer.

    The layer's code never runs inside a scheduling point's action: only the driver does.  A task
    stuck there, in redis-py or psycopg, waits for a server that does not answer.
    """
    if not getattr(task, "in_point", False):
        return None
    frame = sys._current_frames().get(getattr(task._thread, "ident", None) or -1)
    modules = set()
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        # The harness's PostgreSQL driver waits on the task's behalf for a statement in flight.
        modules.add("psycopg" if name == "pytest_cachecheck.backends._postgres" else name.partition(".")[0])
        frame = frame.f_back
    if "fakeredis" in modules or "lupa" in modules:
        return None
    real = real_systems(backend)
    if "redis" in modules and REDIS in real:
        return Fault(REDIS, "stopped answering (no reply within the watchdog's time)", "check the server's load and the network")
    if "psycopg" in modules and SQL in real:
        return Fault(SQL, "stopped answering (no reply within the watchdog's time)", "check the server's load, its locks and the network")
    return None


# -- naming the server -------------------------------------------------------------------------


def server_name(backend: Any, system: str) -> str:
    """``Redis at 127.0.0.1:6379`` or ``PostgreSQL at 127.0.0.1:5432 (database test)``.

    Parsed from the URL or DSN alone: the server may be gone.
    """
    if system == REDIS:
        cache = backend.cache
        url = getattr(cache, "url", None)
        if url:
            try:
                from redis.connection import parse_url

                parsed = parse_url(url)
            except Exception:
                return str(getattr(cache, "name", "Redis"))
            if parsed.get("path"):
                return f"Redis at {parsed['path']}"
            return f"Redis at {parsed.get('host', 'localhost')}:{parsed.get('port', 6379)}"
        return str(getattr(cache, "name", "the cache"))
    source = backend.source
    dsn = getattr(source, "dsn", None)
    if dsn:
        try:
            from psycopg.conninfo import conninfo_to_dict

            params = conninfo_to_dict(dsn)
        except Exception:
            return str(getattr(source, "name", "PostgreSQL"))
        host = params.get("host") or "localhost"
        where = host if str(host).startswith("/") else f"{host}:{params.get('port') or 5432}"
        database = params.get("dbname")
        return f"PostgreSQL at {where}" + (f" (database {database})" if database else "")
    return str(getattr(source, "name", "the source"))


# -- cleaning up after a fault -----------------------------------------------------------------


def close_quietly(close: Callable[[], None], seconds: float = CLOSE_SECONDS) -> bool:
    """Run ``close`` with a wall-time limit, swallowing what a dead server makes it raise.

    The one-line error already says what happened: a secondary error from the same dead server
    would only bury it.  Returns whether ``close`` finished in time (if not, its thread is left
    to finish or fail on its own: it is a daemon, and holds nothing of the next run).
    """
    done = threading.Event()

    def run() -> None:
        try:
            close()
        except BaseException:  # the server is gone: nothing more to say about it
            pass
        finally:
            done.set()

    threading.Thread(target=run, name="cachecheck-close", daemon=True).start()
    return done.wait(seconds)


def close_backend(backend: Any, *, quietly: bool, where: str, example: int | None) -> EnvironmentFailure | None:
    """Close ``backend`` at the end of an exploration.

    After a fault (``quietly``), within :data:`CLOSE_SECONDS` and silently.  Otherwise a server
    that fails while its data is being removed is returned as an :class:`EnvironmentFailure`
    (naming the cleanup); any other error propagates.
    """
    if quietly:
        close_quietly(backend.close)
        return None
    try:
        backend.close()
    except Exception as exc:
        fault = classify_exception(exc, real_systems(backend))
        if fault is None:
            raise
        return EnvironmentFailure(fault, server_name(backend, fault.system), where, example, cleanup=True)
    return None


def _system_of(exc: BaseException) -> str | None:
    module = type(exc).__module__.partition(".")[0]
    if module == "redis":
        return REDIS
    if module == "psycopg":
        return SQL
    return None


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    text = lines[0] if lines else "no message"
    return text if len(text) <= 160 else text[:159] + "…"

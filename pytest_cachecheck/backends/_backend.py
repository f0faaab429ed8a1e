"""Where a run's cache and source live: one cache side and one source side per exploration.

The embedded default is fakeredis plus SQLite, in-process; ``--cachecheck-redis`` and
``--cachecheck-db`` swap either side for a real server (``_real_redis``, ``_postgres``).  A
side is built once per exploration, because clients and connections cost more than an example's
work, and reset before every example, so examples never see each other's data.

A side touches only what it created: the embedded ones own their whole server and file; the
real ones confine themselves to a key prefix and a private schema, and remove exactly those.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..engine._clock import VirtualClock
from ..engine._scheduler import Scheduler
from ..interposers._sql import ScheduledConnection
from ..target import Source


class CacheSide(Protocol):
    name: str

    def reset(self) -> None: ...
    def client(self, slot: int, scheduler: Scheduler, decode_responses: bool) -> Any: ...
    def next_expiry(self, clock: VirtualClock) -> float | None: ...
    def lose_everything(self) -> None: ...
    def close(self) -> None: ...


class SourceSide(Protocol):
    name: str

    def reset(self, scheduler: Scheduler) -> None: ...
    def connection(self, slot: int, scheduler: Scheduler) -> ScheduledConnection: ...
    def setup(self, source: Source, rows: list[tuple[str, str]]) -> None: ...
    def read(self, source: Source, key: str) -> str | None: ...
    def end_example(self) -> None: ...
    def close(self) -> None: ...


class Backend:
    """A cache side and a source side, handed out one example at a time."""

    def __init__(self, cache: CacheSide, source: SourceSide) -> None:
        self.cache = cache
        self.source = source
        self.name = f"{cache.name} + {source.name}"

    def world(self, scheduler: Scheduler, *, decode_responses: bool) -> "World":
        self.cache.reset()
        self.source.reset(scheduler)
        return World(self, scheduler, decode_responses)

    def close(self) -> None:
        try:
            self.cache.close()
        finally:
            self.source.close()


class World:
    """One example's view of the backend: what app instances get, and what the harness reads."""

    def __init__(self, backend: Backend, scheduler: Scheduler, decode_responses: bool) -> None:
        self.backend = backend
        self.scheduler = scheduler
        self.decode_responses = decode_responses

    def redis_client(self, slot: int) -> Any:
        return self.backend.cache.client(slot, self.scheduler, self.decode_responses)

    def connection(self, slot: int) -> ScheduledConnection:
        return self.backend.source.connection(slot, self.scheduler)

    def setup_source(self, source: Source, rows: list[tuple[str, str]]) -> None:
        self.backend.source.setup(source, rows)

    def read_source(self, source: Source, key: str) -> str | None:
        return self.backend.source.read(source, key)

    def next_expiry(self, clock: VirtualClock) -> float | None:
        return self.backend.cache.next_expiry(clock)

    def lose_cache(self) -> None:
        self.backend.cache.lose_everything()

    def close(self) -> None:
        self.backend.source.end_example()


def embedded() -> Backend:
    from ._fake_cache import FakeCache
    from ._sqlite_source import SQLiteSource

    backend = Backend(FakeCache(), SQLiteSource())
    backend.name = "embedded (fakeredis + SQLite)"
    return backend

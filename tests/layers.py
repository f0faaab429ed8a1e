"""Small layers with known misbehaviour, for the harness's own tests.

Each is built like a user's layer, from the Redis client and connection the harness provides,
and misbehaves in exactly one way.
"""

from __future__ import annotations

import _thread
import threading
import time
from typing import Any

from pytest_cachecheck import Target


class _Base:
    def __init__(self, redis_client: Any, connection: Any) -> None:
        self.r = redis_client
        self.conn = connection

    def _load(self, key: str) -> str | None:
        row = self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()
        return row and row[0]

    def write(self, key: str, value: str) -> None:
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
        self.conn.commit()
        self.r.delete(f"user:{key}")


class SelfDeadlock(_Base):
    """Takes its own non-reentrant lock twice on a cache miss."""

    def __init__(self, redis_client: Any, connection: Any) -> None:
        super().__init__(redis_client, connection)
        self.lock = threading.Lock()

    def read(self, key: str) -> str | None:
        with self.lock:
            cached = self.r.get(f"user:{key}")
            if cached is not None:
                return cached
            with self.lock:  # the bug: re-entering a plain Lock
                return self._load(key)


class SleepsForever(_Base):
    """Waits for a cache fill that never comes, with no timeout."""

    def read(self, key: str) -> str | None:
        while self.r.get(f"user:{key}") is None:
            time.sleep(0.1)
        return self.r.get(f"user:{key}")


class SleepsOnce(_Base):
    """A single enormous sleep on a miss."""

    def read(self, key: str) -> str | None:
        time.sleep(10**9)
        return self._load(key)


class BlocksOutsideControl(_Base):
    """Blocks on a lock the harness cannot see (made with _thread, never cooperative)."""

    def __init__(self, redis_client: Any, connection: Any) -> None:
        super().__init__(redis_client, connection)
        self.gate = _thread.allocate_lock()

    def read(self, key: str) -> str | None:
        self.r.get(f"user:{key}")
        self.gate.acquire()
        self.gate.acquire()  # never returns
        return None


class Spins(_Base):
    """Burns CPU without ever reaching a scheduling point."""

    def read(self, key: str) -> str | None:
        self.r.get(f"user:{key}")
        while True:
            pass


class Raises(_Base):
    """Fails every read of u2."""

    def read(self, key: str) -> str | None:
        if key == "u2":
            raise KeyError(key)
        return self._load(key)


class SourceOnly(_Base):
    """Reads and writes its row in one statement each, no cache: it waits only for what locks
    that row (the row-lock and teardown tests' writer)."""

    def read(self, key: str) -> str | None:
        return self._load(key)

    def write(self, key: str, value: str) -> None:
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
        self.conn.commit()


class Direct(_Base):
    """No cache at all: always correct."""

    def read(self, key: str) -> str | None:
        return self._load(key)


def target(layer: type, name: str | None = None, **overrides: Any) -> Target:
    fields = dict(name=name or layer.__name__.lower(), build=layer, read="read", write="write")
    fields.update(overrides)
    return Target(**fields)


class HandsOff(_Base):
    """Loads through a helper thread and waits for it: the thread is an actor of the client."""

    def read(self, key: str) -> str | None:
        box = []
        helper = threading.Thread(target=lambda: box.append(self._load(key)), name="loader")
        helper.start()
        helper.join()
        return box[0]

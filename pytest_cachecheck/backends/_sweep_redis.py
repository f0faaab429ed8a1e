"""A run's heartbeat on a shared Redis, and the sweep of what dead runs left there.

**Heartbeat.**  A run is alive exactly while a connection named ``cachecheck-<run>`` is open
on the server.  The harness's admin connections carry that name (redis-py sets it on every
connect), and one of them stays subscribed to a channel for the run's whole life: Redis never
closes a subscribed connection for idleness (the ``timeout`` setting), and the kernel closes it
when the process dies, however it dies (``kill -9`` included).  So a killed run's heartbeat is
gone at once, and a hung but alive process keeps its own.  No thread, no key, no clock.

**Sweep.**  What a run can leave behind is named after it: keys ``cachecheck:<run>:*`` and the
ACL user ``cachecheck-<run>`` (``<run>`` is hex).  :func:`sweep` removes those of every run
with no heartbeat, other than the caller's own, and says so in one line.  It lists keys and
users *before* the live connections: a run names its heartbeat before it writes anything, so
whatever the listing saw of a run that is still alive is protected by the later look at the
connections.  Keys are found with one ``SCAN`` of the URL's database; keys of a killed run
expire anyway by the safety TTL (see ``_real_redis``), the sweep only makes it sooner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis

HEARTBEAT_NAME = "cachecheck-{run}"
HEARTBEAT_CHANNEL = "cachecheck-heartbeat:{run}"
_RUN_KEY = re.compile(rb"^cachecheck:([0-9a-f]+):")
_RUN_NAME = re.compile(r"^cachecheck-([0-9a-f]+)$")
_BATCH = 500


class Heartbeat:
    """Keeps one connection of ``admin`` (built with ``client_name=cachecheck-<run>``) subscribed."""

    def __init__(self, admin: redis.Redis, run: str) -> None:
        self.admin = admin
        self.run = run
        self._pubsub = None
        self.start()

    def start(self) -> None:
        """(Re)open the subscribed connection, e.g. after a private server's restart."""
        self.stop()
        self._pubsub = self.admin.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(HEARTBEAT_CHANNEL.format(run=self.run))

    def stop(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            try:
                pubsub.close()
            except redis.RedisError:
                pass


@dataclass(frozen=True)
class Swept:
    runs: int
    keys: int
    users: int

    def line(self, where: str) -> str:
        runs = "1 dead run's" if self.runs == 1 else f"{self.runs} dead runs'"
        keys = "1 key" if self.keys == 1 else f"{self.keys} keys"
        users = "1 ACL user" if self.users == 1 else f"{self.users} ACL users"
        return f"cachecheck: swept {runs} leftovers from Redis at {where} ({keys}, {users})"


_lines: list[str] = []


def take_lines() -> list[str]:
    """The lines sweeps in this process produced since the last call, oldest first (for the
    plugin to print each once: explorations build their backends where it cannot see them)."""
    taken = _lines[:]
    del _lines[: len(taken)]
    return taken


def live_runs(admin: redis.Redis) -> set[str] | None:
    """Runs with a heartbeat now; None when the login may not list connections."""
    try:
        clients = admin.client_list()
    except redis.ResponseError:
        return None
    return {match.group(1) for entry in clients if (match := _RUN_NAME.match(entry.get("name") or ""))}


def sweep(admin: redis.Redis, own: str, where: str) -> str | None:
    """Remove what dead runs left; the line to show, or None when there was nothing to remove.

    Nothing is removed when the login may not list connections (liveness unknown).
    """
    keys: dict[str, list[bytes]] = {}
    for key in admin.scan_iter(match="cachecheck:*", count=1000):
        raw = key if isinstance(key, bytes) else str(key).encode()
        match = _RUN_KEY.match(raw)
        if match:
            keys.setdefault(match.group(1).decode(), []).append(raw)
    try:
        users = [name for name in map(_text, admin.execute_command("ACL", "USERS")) if _RUN_NAME.match(name)]
    except redis.ResponseError:
        users = []
    alive = live_runs(admin)
    if alive is None:
        return None
    alive.add(own)
    dead_keys = {run: found for run, found in keys.items() if run not in alive}
    dead_users = [name for name in users if _RUN_NAME.match(name).group(1) not in alive]  # type: ignore[union-attr]
    removed = 0
    for found in dead_keys.values():
        for start in range(0, len(found), _BATCH):
            removed += admin.unlink(*found[start : start + _BATCH])
    for name in dead_users:
        admin.execute_command("ACL", "DELUSER", name)
    runs = set(dead_keys) | {_RUN_NAME.match(name).group(1) for name in dead_users}  # type: ignore[union-attr]
    if not runs:
        return None
    line = Swept(len(runs), removed, len(dead_users)).line(where)
    _lines.append(line)
    return line


def _text(value: object) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)

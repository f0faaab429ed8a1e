"""The embedded cache: a private, in-process fakeredis server.

The server is ours alone, so a reset is FLUSHALL plus SCRIPT FLUSH: a layer that sends
``SCRIPT LOAD`` and ``EVALSHA`` itself meets the same empty script cache in every example.  (A
registered script's ``NOSCRIPT`` round trip is inside its one point, so it never shows.)  fakeredis reads
``time.time()`` when it executes a command, so under the patched clock its TTLs run in virtual
time; the harness's own expiry peeks run inside ``virtual_time``.
"""

from __future__ import annotations

from typing import Any

import fakeredis

from ..engine import _context
from ..engine._clock import VirtualClock
from ..engine._scheduler import Scheduler
from ..interposers._redis import scheduled_client


class FakeCache:
    name = "fakeredis"

    def __init__(self) -> None:
        self.server = fakeredis.FakeServer()
        self.admin = fakeredis.FakeRedis(server=self.server)
        self._clients: dict[tuple[int, bool], Any] = {}

    def reset(self) -> None:
        self.admin.flushall()
        self.admin.script_flush()

    def client(self, slot: int, scheduler: Scheduler, decode_responses: bool) -> Any:
        client = self._clients.get((slot, decode_responses))
        if client is None:
            client = fakeredis.FakeRedis(server=self.server, decode_responses=decode_responses)
            self._clients[slot, decode_responses] = client
        return scheduled_client(client, scheduler)

    def next_expiry(self, clock: VirtualClock) -> float | None:
        """Virtual seconds until the soonest key with a TTL expires, or None if none will."""
        with _context.virtual_time(clock):
            ttls = [self.admin.pttl(key) for key in self.admin.scan_iter(count=1000)]
        pending = [ttl for ttl in ttls if ttl is not None and ttl >= 0]
        return min(pending) / 1000.0 if pending else None

    def lose_everything(self) -> None:
        self.admin.flushall()

    def close(self) -> None:
        self._clients.clear()

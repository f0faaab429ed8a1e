"""Write-behind: the seed's ``WriteBehindCache`` with both its bugs, and a durable variant.

The seed's layer acknowledges a write once it is in Redis and in an in-memory ``dirty`` dict; a
daemon thread flushes the dict to the source every ``flush_interval`` seconds.  Its two bugs:

* the dirty buffer dies with the process: a crash loses every acknowledged, unflushed write;
* a failed flush puts the value back with ``self.dirty[key] = value``, over any newer value
  written meanwhile: the older value is flushed last and the newer acknowledged write is lost.

``QueuedWriteBehind`` keeps the latency (a write touches only Redis) and loses nothing when an
app process dies: each write is queued in Redis with a sequence number, atomically with the
cache update, and acknowledged only then.  Any process's flusher moves an item to a processing
list, applies it to the source guarded by the sequence number (so a late or repeated apply never
goes back in time), then removes it; on start it first finishes what a dead flusher left in
processing.  Its source table carries that ``seq`` column (see ``QUEUED_SOURCE``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from ..target import Source
from ._seed_db import SeedDatabase

logger = logging.getLogger(__name__)


class SeedWriteBehindCache:
    """The seed's class, with ``r`` and ``db`` made instance attributes; the rest as written."""

    def __init__(self, redis_client: Any, connection: Any, flush_interval: float = 5) -> None:
        self.r = redis_client
        self.db = SeedDatabase(connection)
        self.dirty = {}
        self.lock = threading.Lock()
        self.flush_interval = flush_interval
        self._start_flusher()

    def write(self, key: str, value: dict) -> None:
        with self.lock:
            self.r.set(f"user:{key}", json.dumps(value))
            self.dirty[key] = value

    def read(self, key: str) -> dict | None:
        cached = self.r.get(f"user:{key}")
        if cached:
            return json.loads(cached)
        return None

    def _flush(self) -> None:
        while True:
            time.sleep(self.flush_interval)
            with self.lock:
                batch = dict(self.dirty)
                self.dirty.clear()

            for key, value in batch.items():
                try:
                    self.db.execute(
                        "INSERT INTO users (id, name) VALUES (%s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET name = %s",
                        key, value["name"], value["name"]
                    )
                except Exception as e:
                    # Re-add to dirty set for retry
                    with self.lock:
                        self.dirty[key] = value
                    logger.error(f"Flush failed for {key}: {e}")

    def _start_flusher(self) -> None:
        t = threading.Thread(target=self._flush, daemon=True)
        t.start()


QUEUED_SOURCE = Source(
    schema="CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0)",
    insert="INSERT INTO users (id, name) VALUES (%s, %s)",
    select="SELECT name FROM users WHERE id = %s",
)


class QueuedWriteBehind:
    """Write-behind through a queue in Redis: durable across app crashes (correct)."""

    QUEUE, PROCESSING, SEQ = "wb:queue", "wb:processing", "wb:seq"

    def __init__(self, redis_client: Any, connection: Any, flush_interval: float = 5) -> None:
        self.r = redis_client
        self.conn = connection
        self.flush_interval = flush_interval
        threading.Thread(target=self._flush, daemon=True).start()

    def write(self, key: str, value: dict) -> None:
        seq = self.r.incr(self.SEQ)
        item = json.dumps({"key": key, "name": value["name"], "seq": seq})
        pipe = self.r.pipeline()  # the cache and the queue change together, or not at all
        pipe.set(f"user:{key}", json.dumps(value))
        pipe.rpush(self.QUEUE, item)
        pipe.execute()

    def read(self, key: str) -> dict | None:
        cached = self.r.get(f"user:{key}")
        return json.loads(cached) if cached else None

    def _flush(self) -> None:
        while True:
            time.sleep(self.flush_interval)
            try:
                # First what a dead flusher left half done, then the queue, in order.
                while (item := self.r.lindex(self.PROCESSING, 0)) or (
                    item := self.r.lmove(self.QUEUE, self.PROCESSING, "LEFT", "RIGHT")
                ):
                    self._apply(json.loads(item))
                    self.r.lrem(self.PROCESSING, 1, item)
            except Exception as error:  # retried on the next round: the item is still queued
                logger.error(f"flush failed: {error}")
                self.conn.rollback()

    def _apply(self, item: dict) -> None:
        self.conn.execute(
            "UPDATE users SET name = %s, seq = %s WHERE id = %s AND seq < %s",
            (item["name"], item["seq"], item["key"], item["seq"]),
        )
        self.conn.commit()

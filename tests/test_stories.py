"""Stories name what each key is for: a lock is no cache write, a queue's commands are no fill,
one client never races itself; and a printed trace never elides a step a story cites."""

import re

from _histories import HistoryBuilder
from _structured import pipeline, redis

from pytest_cachecheck.checkers.divergence import divergence
from pytest_cachecheck.contract import Contract
from pytest_cachecheck.exploration._run import Step
from pytest_cachecheck.history import Call, Command
from pytest_cachecheck.report._trace import annotations

FILL = '{"name": "u1.v0"}'


def test_a_lock_is_told_as_a_lock_never_as_a_cache_write():
    """Client 1 misses and reads the source; client 2 updates it, retries SETNX on the lock
    until it has it, invalidates and releases; client 1 then fills the cache late."""
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    read = h.invoke(1, "read", "u1")
    redis(h, 1, read, "GET", "user:u1")
    read_source = h.call(1, read, "sql", "SELECT name FROM users WHERE id = 'u1'", "[('u1.v0',)]")
    write = h.invoke(2, "write", "u1", "u1.v1")
    h.call(2, write, "sql", "UPDATE users SET name = 'u1.v1' WHERE id = 'u1'", "1 row")
    h.call(2, write, "sql", "COMMIT", "None")
    first_try = redis(h, 2, write, "SETNX", "lock:u1", "1", reply=0)
    for _ in range(4):
        redis(h, 2, write, "SETNX", "lock:u1", "1", reply=0)
    redis(h, 2, write, "SETNX", "lock:u1", "1", reply=1)
    invalidation = redis(h, 2, write, "DEL", "user:u1", reply=1)
    release = redis(h, 2, write, "DEL", "lock:u1", reply=1)
    fill = redis(h, 1, read, "SETEX", "user:u1", 3600, FILL, reply=True)
    h.complete(read, value="u1.v0")
    h.complete(write)
    h.at(20).probe("u1", "u1.v0", "u1.v1")
    [finding] = divergence(h.build(), Contract.strict()).findings
    message = finding.message
    assert f"invalidated the cache (DEL user:u1, step {invalidation})" in message
    assert f"used the lock lock:u1 (7 commands, steps {first_try} to {release})" in message
    assert "SETNX" not in message  # the retries are counted, not listed as cache writes
    assert f"client 1 read the source (u1.v0) at step {read_source}" in message
    assert f"filled the cache with u1.v0 at step {fill}" in message
    cited = {int(n) for n in re.findall(r"\bsteps? (\d+)", message)} | {int(n) for n in re.findall(r" to (\d+)", message)}
    assert cited <= set(finding.steps)
    assert set(finding.steps) - cited <= {finding.steps[-1], 6}  # the probe, the UPDATE's statement
    assert len(finding.steps) < 10  # not one step per retry


def test_a_queue_command_is_never_the_last_cache_write():
    """A write-behind's write sets the entry and queues the item in one pipeline; its flusher
    moves the item and LREMs it: the LREM carries the value, yet it is the queue's."""
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    write = h.invoke(1, "write", "u1", "u1.v2")
    item = '{"key": "u1", "name": "u1.v2", "seq": 2}'
    cache_write = pipeline(
        h, 1, write,
        Command("SET", ("user:u1", '{"name": "u1.v2"}'), (0,)), Command("RPUSH", ("wb:queue", item), (0,)),
        reply=[True, 1],
    )
    h.complete(write)
    redis(h, 1, None, "LMOVE", "wb:queue", "wb:processing", "LEFT", "RIGHT", keys=(0, 1), reply=item, actor="c1-flusher")
    h.call(1, None, "sql", "UPDATE users SET name = 'u1.v2' WHERE id = 'u1' AND seq < 2", "0 rows", )
    lrem = redis(h, 1, None, "LREM", "wb:processing", 1, item, reply=1, actor="c1-flusher")
    h.at(20).probe("u1", "u1.v2", "u1.v1")
    [finding] = divergence(h.build(), Contract.strict()).findings
    message = finding.message
    assert "LREM" not in message and str(lrem) not in re.findall(r"step (\d+)", message)
    assert f"the last cache write carrying u1.v2 was client 1's MULTI; SET user:u1" in message
    assert f"at step {cache_write}, which also queued it on the queue wb:queue" in message


def test_one_client_never_races_itself():
    """Under bounded(5): client 1 reads (and fills), then writes the source without touching the
    cache; the entry keeps the old value for its TTL.  Sequential steps of one client: no race."""
    h = HistoryBuilder()
    h.setup("u1", "u1.v0")
    read = h.at(1).invoke(1, "read", "u1")
    redis(h, 1, read, "GET", "user:u1")
    h.call(1, read, "sql", "SELECT name FROM users WHERE id = 'u1'", "[('u1.v0',)]")
    fill = redis(h, 1, read, "SETEX", "user:u1", 60, FILL, reply=True)
    h.complete(read, value="u1.v0")
    write = h.at(2).invoke(1, "write", "u1", "u1.v1")
    h.call(1, write, "sql", "UPDATE users SET name = 'u1.v1' WHERE id = 'u1'", "1 row")
    h.complete(write)
    h.at(3).probe("u1", "u1.v0", "u1.v1")
    h.at(61).probe("u1", "u1.v1", "u1.v1")
    verdict = divergence(h.build(), Contract.bounded(5))
    [finding] = verdict.findings
    assert verdict.status == "violated" and finding.figures["persists"] > 5
    message = finding.message
    assert "before client 1's write" not in message and "read the source" not in message
    assert f"the last cache write carrying u1.v0 was client 1's SETEX user:u1 60" in message and str(fill) in message


def _annotations(calls: int, keep=()):
    events = [Call(step, 0.0, 1, "c1-flusher", None, "redis", request=Command("LLEN", ("q",), (0,)), reply=0)
              for step in range(1, calls + 1)]
    return annotations(Step("background(client=1)", 0, len(events)), events, keep)


def test_the_trace_elides_around_the_cited_steps_never_over_them():
    plain = _annotations(40)
    assert [line for line in plain if line.startswith("...")] == ["... 28 more points ..."]
    assert len(plain) == 13  # 8 first points, the cut, 4 last points
    kept = _annotations(40, keep={20, 21, 30})
    shown = [int(m.group(1)) for line in kept if (m := re.match(r"\[(\d+)\]", line))]
    assert {20, 21, 30} <= set(shown)
    cuts = [int(re.search(r"\d+", line).group()) for line in kept if line.startswith("...")]
    assert cuts == [11, 8, 6] and len(shown) + sum(cuts) == 40
    assert kept.index("... 11 more points ...") < kept.index("[20] c1-flusher: LLEN q -> 0")

"""Structured calls for hand-built histories (tests/_histories.HistoryBuilder records text only)."""

from pytest_cachecheck.history import Batch, Call, Command


def redis(h, client, op, name, *argv, keys=(0,), reply=None, actor=None):
    """Append one Redis command ``name argv`` (``keys``: positions in ``argv``); returns its step."""
    step, time = h._stamp()
    request = Command(name, tuple(argv), tuple(keys))
    h.events.append(Call(step, time, client, actor or f"client-{client}", op, "redis", request=request, reply=reply))
    return step


def pipeline(h, client, op, *commands, reply=None):
    """Append a MULTI/EXEC of ``Command``s; returns its step."""
    step, time = h._stamp()
    h.events.append(Call(step, time, client, f"client-{client}", op, "redis", request=Batch(tuple(commands)), reply=reply))
    return step

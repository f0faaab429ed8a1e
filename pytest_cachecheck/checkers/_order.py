"""Which write a read saw, and which writes came after it.

Every value a write stores is unique per key, so the value a read observed names the write that
produced it.  The one exception is ``None``: every delete of a key stores it, and so may the setup
client's initial write ("absent at start").  That is why :func:`producers` returns a list, and
:func:`seen_by` keeps those a read could have seen (not those invoked after it returned).  A
checker calls a read wrong only when it is wrong whichever of those writes it saw.

*w2 supersedes w1* when both write the same key and w1 completed before w2 was invoked
(``w1.precedes(w2)``).  This is deliberately conservative: two concurrent writes are unordered,
since either may have reached the source last, so a read of either one is never called stale.
The setup client's initial writes are ordinary writes here (invoked and acknowledged before the
run), which is what lets "got the initial value after a newer write was acknowledged" be stale.
"""

from __future__ import annotations

import re
from typing import Iterable

from ..history import Operation

__all__ = ["mentions", "producers", "seen_by", "supersedes", "writes_of"]


def writes_of(operations: Iterable[Operation], key: str) -> list[Operation]:
    """The writes and deletes of ``key``, whatever their status, in invocation order.

    A write that failed or never completed may still have reached the source, so it can still
    be the one a read observed; only acknowledged writes can make a read stale.
    """
    return [op for op in operations if op.is_write and op.key == key]


def producers(writes: Iterable[Operation], value: str | None) -> list[Operation]:
    """The writes among ``writes`` that stored ``value``: one, several (``None``) or none."""
    return [write for write in writes if write.written == value]


def seen_by(read: Operation, writes: Iterable[Operation]) -> list[Operation]:
    """The writes that stored what ``read`` observed and could have been seen by it.

    A write invoked after the read returned cannot be its source.  When that leaves nothing,
    the read is not attributable and the checkers make no claim about it.
    """
    return [write for write in producers(writes, read.observed) if not read.precedes(write)]


def supersedes(newer: Operation, older: Operation) -> bool:
    """Whether ``newer`` is a write of the same key that began after ``older`` completed."""
    return (
        newer.is_write
        and older.is_write
        and newer.key == older.key
        and older.precedes(newer)
    )


def mentions(text: str, token: str) -> bool:
    """Whether ``token`` occurs in ``text`` as a whole token.

    Values look like ``u1.v3``, so a token must not be preceded or followed by a word character
    or a dot: ``u1.v1`` is not mentioned in ``SET k u1.v10``.

    >>> mentions('''SETEX user:u1 3600 '{"name": "u1.v1"}' ''', "u1.v1")
    True
    >>> mentions("SET user:u1 u1.v10", "u1.v1")
    False
    """
    return re.search(rf"(?<![\w.]){re.escape(token)}(?![\w.])", text) is not None

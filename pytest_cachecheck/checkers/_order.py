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
from bisect import bisect_right
from itertools import accumulate
from operator import add
from typing import Callable, Iterable, Iterator

from ..history import Call, Operation

__all__ = ["mentioning", "mentions", "producers", "seen_by", "supersedes", "writes_of"]


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


_RUN = re.compile(r"[\w.]+")
_WORD = re.compile(r"[\w.]")
_LONGEST_ANCHOR = 64
"""Longer runs are not put in the trie, which nests a group per character where words branch."""


def mentioning(
    calls: Iterable[Call], tokens: Iterable[str], text: Callable[[Call], str]
) -> dict[str, list[Call]]:
    """For each of ``tokens``, the calls whose ``text(call)`` :func:`mentions` it, in order.

    Where a token is mentioned, each of its runs of word characters and dots is a whole run of
    the text (inside the token a run is bounded by the token's other characters, at its ends by
    the lookarounds of :func:`mentions`).  So one regular expression, a trie of every token's
    longest run, scans all the texts at once (joined by newlines, which bound runs as a text's
    ends do), whatever the number of tokens; only the texts holding a token's run are matched
    against the token in full.  A token without such a run, or whose longest run is longer
    than ``_LONGEST_ANCHOR``, is matched against every text.

    >>> calls = [Call(1, 0.0, 1, "c1", 1, "redis", "SET k u1.v10", ""),
    ...          Call(2, 0.0, 1, "c1", 1, "redis", "SET k u1.v1", "")]
    >>> [call.step for call in mentioning(calls, ["u1.v1"], lambda call: call.command)["u1.v1"]]
    [2]
    """
    found: dict[str, list[Call]] = {token: [] for token in tokens}
    anchored: dict[str, list[str]] = {}
    loose: list[str] = []
    for token in found:
        run = max(_RUN.findall(token), key=len, default="")
        if 0 < len(run) <= _LONGEST_ANCHOR:
            anchored.setdefault(run, []).append(token)
        else:
            loose.append(token)
    calls = list(calls) if found else []
    bodies = list(map(text, calls))
    if anchored:
        pattern = re.compile(f"(?:{_trie(anchored)})(?![\\w.])")
        for i, run in _whole_runs(bodies, pattern):
            for token in anchored[run]:
                mentioned = found[token]
                if (not mentioned or mentioned[-1] is not calls[i]) and (
                    token == run or mentions(bodies[i], token)
                ):
                    mentioned.append(calls[i])
    for token in loose:
        found[token] = [call for call, body in zip(calls, bodies) if token in body and mentions(body, token)]
    return found


def _whole_runs(bodies: list[str], pattern: re.Pattern) -> Iterator[tuple[int, str]]:
    """``(i, run)`` for every whole run of word characters and dots in ``bodies[i]`` that
    ``pattern`` matches entirely, in order; ``pattern`` must not match across a newline."""
    joined = "\n".join(bodies)
    # Which body a match lies in: count the newlines before it, unless a body holds its own.
    counted = joined.count("\n") == len(bodies) - 1
    if not counted:
        starts = list(map(add, accumulate(map(len, bodies), initial=0), range(len(bodies))))
    line = counted_to = 0
    for match in pattern.finditer(joined):
        begin = match.start()
        if begin and _WORD.match(joined, begin - 1):
            continue  # the end of a longer run, not a run
        if counted:
            line += joined.count("\n", counted_to, begin)
            counted_to = begin
            yield line, match.group()
        else:
            yield bisect_right(starts, begin) - 1, match.group()


def _trie(words: Iterable[str]) -> str:
    """A regular expression matching exactly ``words``, factored as a trie so that matching
    costs the length of a word, not the number of words."""
    root: dict = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def alternatives(node: dict) -> str:
        branches = [re.escape(char) + alternatives(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return alternatives(root)

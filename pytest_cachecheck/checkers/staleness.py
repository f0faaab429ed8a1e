"""Stale reads and phantom reads.

**stale-read.**  An acknowledged read ``r`` of key ``k`` observed value ``x``, stored by write
``w``.  ``r`` is *stale* when some acknowledged write ``w'`` of ``k`` supersedes ``w`` (``w``
completed before ``w'`` was invoked) and ``w'`` was acknowledged before ``r`` was invoked.  A
newer value had then been promised to its writer before the read began, yet the read returned an
older one.  A read concurrent with a write is never stale: the write may take effect at any point
of its interval, so the read may legitimately come either side of it.

* The read's **age** is ``r``'s invoke time minus the earliest acknowledgement time among those
  ``w'``: how long the layer had known better.  Its **lag** is how many such ``w'`` there are:
  how many acknowledged writes it is behind.
* The run's **stale window** is the largest age (``0.0`` when no read is stale).
* A stale read violates the contract when the contract is strict, or when its age exceeds
  ``contract.max_staleness`` (an age of exactly ``n`` passes ``Contract.bounded(n)``); otherwise
  it is kept as a figure.  Ages are rounded to the microsecond, below Redis's millisecond
  resolution, so that the float noise of summed virtual times never decides the bound.

Several writes store ``None`` (every delete).  A read of ``None`` is stale only when it is stale
whichever of them it saw, and its age and lag are taken from the most favourable one: a checker
accuses only what the history proves.

**phantom-read.**  An acknowledged read observed a value that no write of that key ever stored.
Values are unique per write, so such a value was invented (a cache key collision, a
serialisation bug, another key's entry).  ``None`` is legitimate only when some write of the key
stored it (a delete, or the setup write of a key absent at start), or when the history records
no setup write for the key at all (nothing says it existed before the run).  A phantom read
always violates the contract.
"""

from __future__ import annotations

from bisect import bisect_right

from ..contract import Contract
from ..history import History
from ..hooks import hookimpl
from ..verdict import Finding, Verdict
from ._index import Op, Seen, in_bulk, index
from ._words import got_value, who, write_of

__all__ = ["cachecheck_check", "phantom_reads", "stale_reads"]


@hookimpl
def cachecheck_check(history: History, contract: Contract) -> list[Verdict]:
    return [stale_reads(history, contract), phantom_reads(history)]


@in_bulk
def stale_reads(history: History, contract: Contract) -> Verdict:
    """The ``stale-read`` verdict: every stale read, judged against ``contract``.

    How it is computed: the newer writes of a candidate ``w`` are the acknowledged writes invoked
    after ``w`` completed, so the later ``w`` completed, the fewer they are (a subset).  The
    candidate completed last thus gives both the smallest age and the smallest lag, and the read
    is stale exactly when even it has a newer write.  A binary search per read, and one batch of
    counts per key for the lags (see :class:`._index.KeyWrites`): O(n log n) in all.
    """
    idx = index(history)
    reads, seen_of = idx.reads, idx.seen
    stale: list[tuple[int, Op, int]] = []  # (position in idx.reads, first newer write, lag)
    for key, positions in idx.reads_of.items():
        writes = idx.writes(key)
        invokes, first_from = writes.newer()
        found: list[tuple[int, Op]] = []
        queries: list[tuple[float, int]] = []
        for position in positions:
            seen = seen_of[position]
            if seen is None:
                continue  # Not attributable (a phantom read is judged by phantom-read).
            read = reads[position]
            first = first_from[bisect_right(invokes, seen.latest_completion)]
            if first is not None and first.complete_step < read.invoke_step:
                found.append((position, first))
                queries.append((seen.latest_completion, read.invoke_step))
        if found:
            lags = writes.count_newer(queries)
            stale.extend((position, first, lag) for (position, first), lag in zip(found, lags))
    stale.sort(key=lambda item: item[0])
    findings = [
        _stale_finding(idx.reads[position], idx.seen[position], first, lag, contract)
        for position, first, lag in stale
    ]
    figures = {
        "reads": len(idx.reads),
        "stale_reads": len(findings),
        "stale_window": max((f.figures["age"] for f in findings), default=0.0),
    }
    return Verdict.of("stale-read", findings, figures)


@in_bulk
def phantom_reads(history: History) -> Verdict:
    """The ``phantom-read`` verdict: reads of values that no write of their key stored."""
    idx = index(history)
    phantoms = []
    for key, positions in idx.reads_of.items():
        writes = idx.writes(key)
        for position in positions:
            observed = idx.reads[position].observed
            if observed in writes.by_value:
                continue
            if observed is None and not writes.has_setup:
                continue  # Nothing records the key's state before the run: absent is plausible.
            phantoms.append(position)
    findings = []
    for position in sorted(phantoms):
        read = idx.reads[position]
        findings.append(
            Finding(
                property="phantom-read",
                message=(
                    f"{who(read.client)} read {read.key} and got {read.observed!r}, "
                    f"which no write of {read.key} produced."
                ),
                key=read.key,
                steps=(read.invoke_step, read.complete_step),
            )
        )
    return Verdict.of("phantom-read", findings, {"reads": len(idx.reads), "phantom_reads": len(findings)})


def _stale_finding(read: Op, seen: Seen, first: Op, lag: int, contract: Contract) -> Finding:
    """The finding for a stale ``read``: ``first`` is the newer write acknowledged first, ``lag``
    how many newer writes were acknowledged before the read began."""
    age = round(read.invoke_time - first.complete_time, 6)  # float noise never decides the bound
    message = (
        f"{who(read.client)} read {read.key} at step {read.invoke_step} "
        f"(t={read.invoke_time:g} s) and got {got_value(read.observed, initial=seen.initial)}, "
        f"but {write_of(first)} was acknowledged at step {first.complete_step} "
        f"(t={first.complete_time:g} s): {age:g} s stale, "
        f"{lag} write{'' if lag == 1 else 's'} behind."
    )
    return Finding(
        property="stale-read",
        message=message,
        key=read.key,
        steps=(first.complete_step, read.invoke_step, read.complete_step),
        figures={"age": age, "lag": lag},
        violates=contract.is_strict or age > contract.max_staleness,
    )

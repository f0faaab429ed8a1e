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
  ``contract.max_staleness``; otherwise it is kept as a figure.

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

from ..contract import Contract
from ..history import SETUP_CLIENT, History, Operation
from ..hooks import hookimpl
from ..verdict import Finding, Verdict
from ._order import producers, seen_by, supersedes, writes_of
from ._words import got, who, write_of

__all__ = ["cachecheck_check", "phantom_reads", "stale_reads"]


@hookimpl
def cachecheck_check(history: History, contract: Contract) -> list[Verdict]:
    return [stale_reads(history, contract), phantom_reads(history)]


def stale_reads(history: History, contract: Contract) -> Verdict:
    """The ``stale-read`` verdict: every stale read, judged against ``contract``."""
    operations = history.operations()
    reads = _ok_reads(operations)
    findings = []
    for read in reads:
        finding = _stale_finding(read, writes_of(operations, read.key), contract)
        if finding is not None:
            findings.append(finding)
    figures = {
        "reads": len(reads),
        "stale_reads": len(findings),
        "stale_window": max((f.figures["age"] for f in findings), default=0.0),
    }
    return Verdict.of("stale-read", findings, figures)


def phantom_reads(history: History) -> Verdict:
    """The ``phantom-read`` verdict: reads of values that no write of their key stored."""
    operations = history.operations()
    reads = _ok_reads(operations)
    findings = []
    for read in reads:
        writes = writes_of(operations, read.key)
        if producers(writes, read.observed):
            continue
        if read.observed is None and not any(w.client == SETUP_CLIENT for w in writes):
            continue  # Nothing records the key's state before the run: absent is plausible.
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
    return Verdict.of("phantom-read", findings, {"reads": len(reads), "phantom_reads": len(findings)})


def _ok_reads(operations: list[Operation]) -> list[Operation]:
    return [op for op in operations if op.kind == "read" and op.status == "ok"]


def _newer_acknowledged(read: Operation, write: Operation, writes: list[Operation]) -> list[Operation]:
    """The acknowledged writes that supersede ``write`` and completed before ``read`` began."""
    return [
        newer
        for newer in writes
        if newer.acknowledged and supersedes(newer, write) and newer.precedes(read)
    ]


def _stale_finding(read: Operation, writes: list[Operation], contract: Contract) -> Finding | None:
    candidates = seen_by(read, writes)
    if not candidates:
        return None  # Not attributable (a phantom read is judged by phantom-read).
    options = []
    for write in candidates:
        newer = _newer_acknowledged(read, write, writes)
        if not newer:
            return None  # It may have seen this write, which nothing had superseded yet.
        first = min(newer, key=lambda w: w.complete_step)
        age = read.invoke_time - first.complete_time
        options.append((age, len(newer), first))
    age, lag, first = min(options, key=lambda option: option[:2])
    message = (
        f"{who(read.client)} read {read.key} at step {read.invoke_step} "
        f"(t={read.invoke_time:g} s) and got {got(read.observed, candidates)}, "
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

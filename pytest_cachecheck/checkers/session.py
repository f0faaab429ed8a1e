"""Session guarantees, per client: read-your-writes and monotonic reads.

A client here is one simulated app process: its operations run one after another, so "its
earlier write" and "its earlier read" are well defined.

**read-your-writes.**  Client ``c``'s acknowledged read ``r`` of key ``k`` observed the value of
write ``w_x``, while an acknowledged write ``w`` of ``k`` by ``c`` itself completed before ``r``
was invoked and supersedes ``w_x``.  The client was told its write succeeded, then read something
older than it.  (A user edits a profile, reloads, and sees the old one.)

**monotonic-reads.**  Client ``c``'s acknowledged reads ``r1`` then ``r2`` of the same key (``r1``
completed before ``r2`` was invoked) observed writes ``w1`` and ``w2``, and ``w1`` supersedes
``w2``.  The client saw time go backwards: a newer value, then an older one.

"Supersedes" is the conservative order of :mod:`._order` (completed before invoked), so
concurrent writes never make either anomaly.  A read of ``None`` may have seen any of several
writes; it is an anomaly only when it is one whichever of them it saw.

Findings violate the contract when ``contract.session_guarantees`` is set; otherwise they are
reported with ``violates=False`` and the verdict stays ok.
"""

from __future__ import annotations

from ..contract import Contract
from ..history import History, Operation
from ..hooks import hookimpl
from ..verdict import Finding, Verdict
from ._order import seen_by, supersedes, writes_of
from ._words import got, what, who

__all__ = ["cachecheck_check", "monotonic_reads", "read_your_writes"]


@hookimpl
def cachecheck_check(history: History, contract: Contract) -> list[Verdict]:
    return [read_your_writes(history, contract), monotonic_reads(history, contract)]


def read_your_writes(history: History, contract: Contract) -> Verdict:
    """The ``read-your-writes`` verdict."""
    operations = history.operations()
    reads = _ok_reads(operations)
    findings = []
    for read in reads:
        writes = writes_of(operations, read.key)
        candidates = seen_by(read, writes)
        own = [w for w in writes if w.client == read.client and w.acknowledged and w.precedes(read)]
        if not candidates or not all(any(supersedes(w, seen) for w in own) for seen in candidates):
            continue
        # Name the client's most recent write that the read missed.
        missed = [w for w in own if any(supersedes(w, seen) for seen in candidates)]
        mine = max(missed, key=lambda w: w.complete_step)
        findings.append(
            Finding(
                property="read-your-writes",
                message=(
                    f"{who(read.client)} read {read.key} at step {read.invoke_step} and got "
                    f"{got(read.observed, candidates)}, although its own {what(mine)} had been "
                    f"acknowledged at step {mine.complete_step}."
                ),
                key=read.key,
                steps=(mine.complete_step, read.invoke_step, read.complete_step),
                violates=contract.session_guarantees,
            )
        )
    return Verdict.of("read-your-writes", findings, {"reads": len(reads), "own_writes_missed": len(findings)})


def monotonic_reads(history: History, contract: Contract) -> Verdict:
    """The ``monotonic-reads`` verdict: one finding per read that went back in time."""
    operations = history.operations()
    reads = _ok_reads(operations)
    findings = []
    for later in reads:
        writes = writes_of(operations, later.key)
        seen_later = seen_by(later, writes)
        earlier_reads = [
            r for r in reads if r.client == later.client and r.key == later.key and r.precedes(later)
        ]
        # The most recent earlier read that proves the client went back in time, if any.
        for earlier in reversed(earlier_reads):
            seen_earlier = seen_by(earlier, writes)
            if seen_later and seen_earlier and all(
                supersedes(newer, older) for newer in seen_earlier for older in seen_later
            ):
                findings.append(_backwards(earlier, later, seen_earlier, seen_later, contract))
                break
    return Verdict.of("monotonic-reads", findings, {"reads": len(reads), "backward_reads": len(findings)})


def _ok_reads(operations: list[Operation]) -> list[Operation]:
    return [op for op in operations if op.kind == "read" and op.status == "ok"]


def _backwards(
    earlier: Operation,
    later: Operation,
    seen_earlier: list[Operation],
    seen_later: list[Operation],
    contract: Contract,
) -> Finding:
    return Finding(
        property="monotonic-reads",
        message=(
            f"{who(later.client)} read {later.key} at step {earlier.invoke_step} and got "
            f"{got(earlier.observed, seen_earlier)}, then read it again at step "
            f"{later.invoke_step} and went back to {got(later.observed, seen_later)}."
        ),
        key=later.key,
        steps=(earlier.invoke_step, earlier.complete_step, later.invoke_step, later.complete_step),
        violates=contract.session_guarantees,
    )

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

from bisect import bisect_left

from ..contract import Contract
from ..history import History
from ..hooks import hookimpl
from ..verdict import Finding, Verdict
from ._index import INF, Op, Seen, in_bulk, index
from ._words import got_value, what, who

__all__ = ["cachecheck_check", "monotonic_reads", "read_your_writes"]


@hookimpl
def cachecheck_check(history: History, contract: Contract) -> list[Verdict]:
    return [read_your_writes(history, contract), monotonic_reads(history, contract)]


@in_bulk
def read_your_writes(history: History, contract: Contract) -> Verdict:
    """The ``read-your-writes`` verdict.

    How it is computed: every candidate the read may have seen is superseded by one of the
    client's own earlier writes exactly when the latest-invoked of those own writes was invoked
    after the last candidate completed; the write named is the own write acknowledged last among
    those invoked after the first candidate completed.  A binary search per read on the
    client's writes of the key (see :meth:`._index.KeyWrites.own`).
    """
    idx = index(history)
    reads, seen_of = idx.reads, idx.seen
    missed: list[tuple[int, Op]] = []  # (position in idx.reads, the own write missed)
    for key, positions in idx.reads_of.items():
        writes = idx.writes(key)
        for position in positions:
            seen = seen_of[position]
            if seen is None or seen.latest_completion == INF:
                continue
            read = reads[position]
            completions, max_invoke, own = writes.own(read.client)
            before = bisect_left(completions, read.invoke_step)  # own[:before] precede the read
            if before == 0 or max_invoke[before - 1] <= seen.latest_completion:
                continue
            # Name the client's most recent write that the read missed.  The own writes passed
            # over overlap the one named, so there are as few as the client's concurrency.
            last = before - 1
            while own[last].invoke_step <= seen.earliest_completion:
                last -= 1
            missed.append((position, own[last]))
    missed.sort(key=lambda item: item[0])
    findings = []
    for position, mine in missed:
        read, seen = idx.reads[position], idx.seen[position]
        findings.append(
            Finding(
                property="read-your-writes",
                message=(
                    f"{who(read.client)} read {read.key} at step {read.invoke_step} and got "
                    f"{got_value(read.observed, initial=seen.initial)}, although its own "
                    f"{what(mine)} had been acknowledged at step {mine.complete_step}."
                ),
                key=read.key,
                steps=(mine.complete_step, read.invoke_step, read.complete_step),
                violates=contract.session_guarantees,
            )
        )
    return Verdict.of("read-your-writes", findings, {"reads": len(idx.reads), "own_writes_missed": len(findings)})


@in_bulk
def monotonic_reads(history: History, contract: Contract) -> Verdict:
    """The ``monotonic-reads`` verdict: one finding per read that went back in time.

    How it is computed: every write an earlier read may have seen supersedes every write a later
    one may have seen exactly when the earlier read's first candidate was invoked after the
    later read's last candidate completed.  Per client and key, :func:`_went_back` finds for
    each read the latest-invoked earlier read for which that holds.
    """
    idx = index(history)
    back: list[tuple[int, int]] = []  # (later, earlier), positions in idx.reads
    for positions in idx.reads_of.values():
        by_client: dict[int, list[int]] = {}
        for position, read in zip(positions, map(idx.reads.__getitem__, positions)):
            group = by_client.get(read.client)
            if group is None:
                by_client[read.client] = [position]
            else:
                group.append(position)
        for group in by_client.values():
            if len(group) > 1:
                back.extend(_went_back(idx.reads, idx.seen, group))
    back.sort()
    findings = [
        _backwards(idx.reads[earlier], idx.reads[later], idx.seen[earlier], idx.seen[later], contract)
        for later, earlier in back
    ]
    return Verdict.of("monotonic-reads", findings, {"reads": len(idx.reads), "backward_reads": len(findings)})


def _went_back(reads: list[Op], seen: list[Seen | None], group: list[int]) -> list[tuple[int, int]]:
    """For one client's reads of one key (``group``, their positions in ``reads``, in
    invocation order): ``(later, earlier)`` for every read that went back in time, with the
    latest-invoked earlier read that proves it.

    The earlier read must have completed before the later one began, and its first candidate
    been invoked after the later read's last candidate completed.  When the reads ran one after
    another (the usual case), every earlier read qualifies by time, and a stack of the earlier
    reads not outdone by a later one (first candidates invoked ever earlier towards the top) is
    searched by bisection; otherwise :func:`_went_back_overlapping` sweeps.  O(g log g).
    """
    outdone: list[float] = []  # minus the first candidate's invoke step, ascending
    stacked: list[int] = []
    found = []
    completed = -INF
    for later in group:
        read, candidates = reads[later], seen[later]
        if read.invoke_step < completed:
            return _went_back_overlapping([reads[p] for p in group], [seen[p] for p in group], group)
        completed = read.complete_step
        if candidates is None:
            continue
        # The stacked reads whose first candidate was invoked after this read's last candidate
        # completed are the bottom ones; the topmost of them is the latest invoked.
        above = bisect_left(outdone, -candidates.latest_completion)
        if above:
            found.append((later, stacked[above - 1]))
        while outdone and -outdone[-1] <= candidates.first_invoke:
            outdone.pop()
            stacked.pop()
        outdone.append(-candidates.first_invoke)
        stacked.append(later)
    return found


def _went_back_overlapping(reads: list[Op], seen: list[Seen | None], group: list[int]) -> list[tuple[int, int]]:
    """:func:`_went_back` when some of the reads overlap (one client running two at once);
    ``reads`` and ``seen`` are the group's own.

    A sweep in invocation order.  An earlier read becomes eligible once it completed before the
    current one began; a max segment tree over invocation positions holds each eligible read's
    first candidate's invoke step, so the rightmost position above a threshold is one descent.
    """
    size = 1
    while size < len(reads):
        size *= 2
    tree = [-INF] * (2 * size)
    by_completion = sorted(range(len(reads)), key=lambda i: reads[i].complete_step)
    eligible = 0
    found = []
    for later, read in enumerate(reads):
        while eligible < len(reads) and reads[by_completion[eligible]].complete_step < read.invoke_step:
            earlier = by_completion[eligible]
            eligible += 1
            if seen[earlier] is None:
                continue
            node = earlier + size
            tree[node] = seen[earlier].first_invoke
            while node > 1:
                node //= 2
                tree[node] = max(tree[2 * node], tree[2 * node + 1])
        if seen[later] is None or tree[1] <= seen[later].latest_completion:
            continue
        node, threshold = 1, seen[later].latest_completion
        while node < size:
            node = 2 * node + 1 if tree[2 * node + 1] > threshold else 2 * node
        found.append((group[later], group[node - size]))
    return found


def _backwards(
    earlier: Op,
    later: Op,
    seen_earlier: Seen,
    seen_later: Seen,
    contract: Contract,
) -> Finding:
    return Finding(
        property="monotonic-reads",
        message=(
            f"{who(later.client)} read {later.key} at step {earlier.invoke_step} and got "
            f"{got_value(earlier.observed, initial=seen_earlier.initial)}, then read it again at "
            f"step {later.invoke_step} and went back to "
            f"{got_value(later.observed, initial=seen_later.initial)}."
        ),
        key=later.key,
        steps=(earlier.invoke_step, earlier.complete_step, later.invoke_step, later.complete_step),
        violates=contract.session_guarantees,
    )

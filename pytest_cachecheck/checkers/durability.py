"""Lost writes and reordering: what the source holds once everything has been drained.

Definitions, judged on the source's value at quiescence (the first probe of each key, taken
after operations and background work were drained, so an unflushed write is not lost until the
layer had its chance):

* A *lost write* is an acknowledged write whose value never reached the source (no SQL statement
  the run executed carries it) and that the final value does not supersede: the source ends on
  a write that completed before this one began.
* *Reordering* is the same ending when the value did reach the source at some point: it was
  overwritten by an older acknowledged value.

Indeterminate writes (their client crashed mid-flight) and failed ones are never required: they
may or may not have happened.  But they may be what the source ends on, and then they order like
any write.  Concurrent writes are unordered, so a source ending on either of two concurrent
writes is fine.  Under a best-effort contract the findings are reported, not failed, with the
figures: acknowledged writes lost, and the loss window (virtual seconds from the first lost
acknowledgement to the end of the run).
"""

from __future__ import annotations

from bisect import bisect_right
from operator import attrgetter

from ..contract import Contract
from ..history import Call, History
from ..hooks import hookimpl
from ..verdict import Finding, Verdict
from ._index import Op, calls_of, in_bulk, index
from ._order import mentioning
from ._words import show, who, write_of

__all__ = ["cachecheck_check", "lost_writes"]


@hookimpl
def cachecheck_check(history: History, contract: Contract) -> list[Verdict] | None:
    if not history.probes:
        return [Verdict("lost-write", "unknown"), Verdict("reordering", "unknown")]
    return lost_writes(history, contract)


@in_bulk
def lost_writes(history: History, contract: Contract) -> list[Verdict]:
    """The ``lost-write`` and ``reordering`` verdicts.

    How it is computed: a write ``w`` is superseded by every write the source may end on exactly
    when it was invoked after the last of them completed, so one pass over each probed key's
    writes finds the suspects; one pass over the SQL statements then tells which reached the
    source.
    """
    idx = index(history)
    final: dict[str, str | None] = {}
    for probe in history.probes:
        final.setdefault(probe.key, probe.source)
    suspects: list[tuple[str, str | None, Op, Op]] = []
    for key, value in final.items():
        writes = idx.writes(key)
        ending = writes.producers(value)
        if not ending:
            continue
        last_end = writes.latest_completion(value)
        for write in writes.writes:
            if write.status != "ok" or write.written is None or write.written == value:
                continue  # not required, or the source ends on it
            if write.invoke_step > last_end:  # every write the source may end on is older
                suspects.append((key, value, write, ending[0]))
    # What can lose a write: a crash, the cache's loss; not a slow call (it only delays it).
    faults = [c for c in calls_of(history, "fault") if not c.command.startswith("slow:")] if suspects else []
    statements = calls_of(history, "sql") if suspects else []
    written = {write.written for _, _, write, _ in suspects}
    in_source = {value for value, found in mentioning(statements, written, attrgetter("command")).items() if found}
    lost: list[Finding] = []
    reordered: list[Finding] = []
    for key, value, write, older in suspects:
        reached = write.written in in_source
        finding = Finding(
            property="reordering" if reached else "lost-write",
            message=_story(write, older, value, reached, faults),
            key=key,
            steps=(write.complete_step or write.invoke_step,),
            figures={"acknowledged_at": write.complete_time or 0.0},
            violates=contract.durable,
        )
        (reordered if reached else lost).append(finding)
    end = history.events[-1].time if history.events else 0.0
    window = max((end - f.figures["acknowledged_at"] for f in lost), default=0.0)
    return [
        Verdict.of("lost-write", lost, {"lost_writes": len(lost), "loss_window": window}),
        Verdict.of("reordering", reordered, {"reordered_writes": len(reordered)}),
    ]


def _story(write: Op, older: Op, value: str | None, reached: bool, faults: list[Call]) -> str:
    what = f"{write_of(write)} was acknowledged at step {write.complete_step}"
    holds = f"the source ends on {show(value)} ({write_of(older)}, acknowledged at step {older.complete_step})"
    if reached:
        return f"{what} and reached the source, but was overwritten by an older value: {holds}."
    after = bisect_right(faults, write.complete_step or 0, key=lambda call: call.step)
    cause = f" ({_fault(faults[after])} at step {faults[after].step}, before a flush)" if after < len(faults) else ""
    return f"{what} but never reached the source{cause}: {holds}."


def _fault(call: Call) -> str:
    """``client 1 crashed``, ``the cache lost everything``: a fault event in words."""
    if call.command.startswith("crash "):
        return f"{who(call.client)} crashed"
    return call.command

"""Errors: an operation the layer failed with an exception.

**Definition.**  Every operation whose status is ``error`` (the layer raised instead of
returning) is a finding that violates the contract, whatever the contract: a caching layer exists
to be transparent, so an exception the source alone would not have raised is a bug (a lock it
could not take, a cache entry it could not decode, a retry budget it ran out of).

An ``indeterminate`` operation is not an error: its client crashed or hung under the harness,
which is a fault the harness injected, not something the layer did.  Nor is an operation that
raised after the harness made one of its calls fail (the ``error`` fault): a layer may pass such
a failure on; what it must not do is lose or reorder a write because of it, which the
durability checkers judge.
"""

from __future__ import annotations

from ..contract import Contract
from ..history import INJECTED, History
from ..hooks import hookimpl
from ..verdict import Finding, Verdict
from ._index import in_bulk, index
from ._words import who

__all__ = ["cachecheck_check", "errors"]


@hookimpl
def cachecheck_check(history: History, contract: Contract) -> Verdict:
    return errors(history)


@in_bulk
def errors(history: History) -> Verdict:
    """The ``errors`` verdict: one violating finding per operation that raised."""
    operations = index(history).operations
    injected = {call.op for call in history.calls if INJECTED in call.result}
    findings = [
        Finding(
            property="errors",
            message=(
                f"{who(op.client)}'s {op.kind} of {op.key} raised {op.error} "
                f"(step {op.complete_step})."
            ),
            key=op.key,
            steps=(op.invoke_step, op.complete_step),
        )
        for op in operations
        if op.status == "error" and op.op not in injected
    ]
    return Verdict.of("errors", findings, {"operations": len(operations), "errors": len(findings)})

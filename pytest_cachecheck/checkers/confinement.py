"""Confinement and process hazards: what a layer tried to do beyond its own data and process.

**confinement.**  Every call the server (or the harness) refused because it reached beyond the
run's own keys, schema or commands (its result carries :data:`~pytest_cachecheck.history.REFUSED`)
is a finding, whatever the contract and whether or not the layer caught the error: a caching
layer that tries to ``FLUSHALL``, ``SELECT`` another database or write ``public.users`` would do
it in production, where nothing refuses.

**process-hazards.**  Every :data:`~pytest_cachecheck.history.HAZARD` call is a finding: the
layer left a thread running after its operations ended, forked the test process, or installed a
signal handler or alarm.  The harness contains each (joins or abandons the thread, reaps the
child, restores the handler), and the story says where it happened.
"""

from __future__ import annotations

from ..contract import Contract
from ..history import HAZARD, REFUSED, History
from ..hooks import hookimpl
from ..verdict import Finding, Verdict
from ._words import who

__all__ = ["cachecheck_check", "confinement", "process_hazards"]


@hookimpl
def cachecheck_check(history: History, contract: Contract) -> list[Verdict]:
    return [confinement(history), process_hazards(history)]


def confinement(history: History) -> Verdict:
    """One finding per refused call, told as what the layer tried."""
    findings = []
    for call in history.calls:
        if REFUSED not in call.result:
            continue
        reason = call.result.split(REFUSED, 1)[1].lstrip(": ")
        findings.append(
            Finding(
                property="confinement",
                message=f"{who(call.client)} tried to {call.command} at step {call.step} ({call.actor}): {reason}",
                steps=(call.step,),
            )
        )
    return Verdict.of("confinement", findings, {"refused": len(findings)})


def process_hazards(history: History) -> Verdict:
    """One finding per hazard the harness recorded."""
    findings = [
        Finding(
            property="process-hazards",
            message=f"{who(call.client)} {call.command} at step {call.step}: {call.result}",
            steps=(call.step,),
        )
        for call in history.calls
        if call.system == HAZARD
    ]
    return Verdict.of("process-hazards", findings, {"hazards": len(findings)})

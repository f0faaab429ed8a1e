"""A run rendered as the replayable program, each decision annotated with the calls it made.

The run executes and records (its steps and the history's events); this module only renders.
Invariants: every value passes through :func:`printable` (no control character reaches the
terminal); a point whose step is in ``keep`` (the steps a failure's story cites) is never elided,
so a story never cites a step the printed trace hides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Collection, Sequence

from ..history import SETUP_CLIENT, Call, Complete, Event, Probe
from ..history._printable import printable

if TYPE_CHECKING:
    from ..exploration._run import Run, Step

MAX_TRACE_CALLS = 16
"""Points shown under one decision of a printed trace; the middle of a longer run is elided."""


def short(text: str, limit: int = 120) -> str:
    """``text`` made printable and cut to ``limit`` characters, an ellipsis marking the cut."""
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def annotations(step: Step, events: Sequence[Event], keep: Collection[int] = ()) -> list[str]:
    """The comment lines under one decision: each point it executed, with its result.

    ``events`` is the whole run's; the step's slice of it is shown.  A decision of more than
    ``MAX_TRACE_CALLS`` points (a background loop) shows its first and last points; each run of
    points elided in between is one ``... N more points ...`` line.
    """
    lines = list(step.notes)
    events = events[step.first_event : step.last_event or len(events)]
    calls = [e for e in events if isinstance(e, Call)]
    cuts: dict[int, int] = {}  # id of the first call of each elided run: how many it elides
    if len(calls) > MAX_TRACE_CALLS:  # a background loop: its first and last points tell enough
        head, tail = MAX_TRACE_CALLS // 2, len(calls) - MAX_TRACE_CALLS // 4
        run_start = None
        for position, call in enumerate(calls):
            elided = head <= position < tail and call.step not in keep
            if elided and run_start is None:
                run_start = position
                cuts[id(call)] = 0
            if elided:
                cuts[id(calls[run_start])] += 1
            else:
                run_start = None
        hidden = {id(c) for position, c in enumerate(calls) if head <= position < tail and c.step not in keep}
        events = [e for e in events if not isinstance(e, Call) or id(e) not in hidden or id(e) in cuts]
    for event in events:
        if isinstance(event, Call) and id(event) in cuts:
            lines.append(f"... {cuts[id(event)]} more points ...")
            continue
        if isinstance(event, Call):
            lines.append(f"[{event.step}] {event.actor}: {short(event.command)} -> {short(event.result, 80)}")
        elif isinstance(event, Complete) and event.client != SETUP_CLIENT:
            outcome = event.status if event.value is None else f"returns {event.value}"
            if event.status == "error":
                outcome = f"raises {event.error}"
            lines.append(f"[{event.step}] c{event.client}: operation {event.op} {outcome}")
        elif isinstance(event, Probe):
            verdict = "agrees" if event.observed == event.source else "DISAGREES"
            lines.append(
                f"probe at t={event.time:g}: layer returns {event.observed}, source holds {event.source} ({verdict})"
            )
    return [printable(line) for line in lines + step.after]  # values are never shown raw


def trace(run: Run, keep: Collection[int] = ()) -> str:
    """The run as a replayable program, each decision annotated with what it ran.

    ``keep``: steps never elided from a long decision (those a failure's findings cite).

    Moves of a client that had nothing to run are left out: they change nothing, so the program
    without them replays the same run.  (Hypothesis cannot always delete them: the first steps of
    a program also hold its swarm-testing choices.)
    """
    events = run.scheduler.events
    lines = [f"state = {run.machine_name}()"]
    omitted = 0
    for step in run.steps:
        if step.noop:
            omitted += 1
            continue
        lines.append(step.text if step.text.startswith("#") else f"state.do(step={step.text})")
        lines.extend(f"    # {line}" for line in annotations(step, events, keep))
    if omitted:
        lines.insert(1, f"# ({omitted} move{'s' if omitted > 1 else ''} of idle clients left out: they do nothing)")
    return "\n".join(lines)

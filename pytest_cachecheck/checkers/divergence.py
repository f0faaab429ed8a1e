"""Divergence: the cache disagrees with the source once everything has settled.

The harness does not look inside Redis (black box first).  At quiescence (no operation in
flight, background work drained) a fresh client reads each key through the layer: a
:class:`~pytest_cachecheck.history.Probe` records what the layer returned (``observed``) and what
the source of truth holds (``source``).  It probes again after each jump of the virtual clock to
the cache's next expiry, until the two agree or nothing is left to expire.

**Definition.**  A key *diverged* when its first probe has ``observed != source``.  Nothing is in
flight, so no later write can repair it: every future reader gets the wrong value until the entry
goes away.  The divergence **persists** from the first probe until the first later probe of that
key that agrees with the source (its time minus the first probe's time), or forever
(``math.inf``) when no later probe agrees: the entry has no expiry.

It violates the contract when the contract is strict, or when it persists longer than
``contract.max_staleness`` (a TTL-only cache promising bounded staleness is judged fairly).

A history without any probe never reached quiescence, so nothing can be said: the verdict is
``unknown`` ("explore longer or drain"), never ``ok``.

**The story.**  The finding tells how the wrong value got there, using the Redis commands and SQL
statements the interposers recorded.  With ``x`` the value the cache serves and ``y`` the
source's, written by ``w_new``:

* the *fill* is the last Redis command before the first probe whose text carries ``x``;
* the *source read* is the last SQL statement of the fill's client before the fill whose result
  carries ``x``;
* the *invalidation* is ``w_new``'s Redis commands, and its *update* the last of its SQL
  statements.

When the fill and the source read exist, and the source read came before ``w_new`` was
acknowledged, the classic cache-aside race reads as it happened.  Otherwise the finding falls
back to what the probe shows, plus the last cache write carrying ``x`` if there is one: a story
the calls do not support would mislead more than a plain one.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from operator import attrgetter
from typing import NamedTuple

from ..contract import Contract
from ..history import SETUP_CLIENT, Call, History, Probe
from ..hooks import hookimpl
from ..verdict import Finding, Verdict
from ._index import Op, in_bulk, index
from ._order import mentioning
from ._words import clip, show, who, write_of

__all__ = ["cachecheck_check", "divergence"]


@hookimpl
def cachecheck_check(history: History, contract: Contract) -> Verdict:
    return divergence(history, contract)


@in_bulk
def divergence(history: History, contract: Contract) -> Verdict:
    """The ``divergence`` verdict, ``unknown`` when the run never reached quiescence."""
    probes = history.probes
    if not probes:
        return Verdict("divergence", "unknown")
    by_key: dict[str, list[Probe]] = {}
    for probe in probes:
        by_key.setdefault(probe.key, []).append(probe)
    diverged = []
    for key, key_probes in by_key.items():
        first, later = key_probes[0], key_probes[1:]
        if first.observed == first.source:
            continue
        healed = next((p for p in later if p.observed == p.source), None)
        persists = math.inf if healed is None else healed.time - first.time
        diverged.append((first, persists))
    clues = _clues(history, [probe for probe, _ in diverged])
    findings = [
        _finding(probe, persists, contract, clue) for (probe, persists), clue in zip(diverged, clues)
    ]
    figures = {
        "probed_keys": len(by_key),
        "diverged_keys": len(findings),
        "longest_divergence": max((f.figures["persists"] for f in findings), default=0.0),
    }
    return Verdict.of("divergence", findings, figures)


class _Clue(NamedTuple):
    """What the history says about one diverged key (see the module's docstring)."""

    newest: Op | None
    """The newest write of the source's value."""
    fill: Call | None
    source_read: Call | None
    race: list[Call] | None
    """When the calls tell the race, the newest write's calls; otherwise ``None``."""


def _finding(probe: Probe, persists: float, contract: Contract, clue: _Clue) -> Finding:
    stale, fresh = probe.observed, probe.source
    newest, fill, source_read = clue.newest, clue.fill, clue.source_read
    if clue.race is not None:
        message, steps = _story(clue.race, newest, fill, source_read, stale)
    else:
        message, steps = _plain(probe, newest, fill)
    if math.isinf(persists):
        ending = "and never heals on its own (no expiry)."
    else:
        ending = f"until the entry expires in {persists:g} s."
    message += f" The cache disagrees with the source ({show(fresh)}) {ending}"
    return Finding(
        property="divergence",
        message=message,
        key=probe.key,
        steps=tuple(sorted(set(steps) | {probe.step})),
        figures={"persists": persists},
        violates=contract.is_strict or persists > contract.max_staleness,
    )


def _clues(history: History, probes: list[Probe]) -> list[_Clue]:
    """The clues of every diverged probe, found in a few passes over the calls in all:

    * the *fill*, the last Redis command before the probe that carries the value it observed;
    * the *source read*, the last SQL statement of the fill's client, before the fill, that
      returned that value;
    * the calls of the newest write, when those two tell the race.
    """
    values = {probe.observed for probe in probes if probe.observed is not None}
    calls = history.calls if values else []
    carrying = mentioning([call for call in calls if call.system == "redis"], values, attrgetter("command"))
    returning = mentioning([call for call in calls if call.system == "sql"], values, attrgetter("result"))
    step = attrgetter("step")
    idx = index(history)
    found = []
    for probe in probes:
        sources = idx.writes(probe.key).producers(probe.source)
        newest = max(sources, key=lambda w: w.invoke_step) if sources else None
        fill = source_read = None
        if probe.observed is not None:  # An absent value leaves no token to look for.
            fills = carrying[probe.observed]
            before = bisect_left(fills, probe.step, key=step)
            fill = fills[before - 1] if before else None
        if fill is not None:
            reads = returning[probe.observed]
            earlier = reads[: bisect_left(reads, fill.step, key=step)]
            source_read = next((call for call in reversed(earlier) if call.client == fill.client), None)
        found.append([newest, fill, source_read, _is_the_race(newest, fill, source_read)])
    racing = {newest.op for newest, _, _, race in found if race}
    calls_of: dict[int, list[Call]] = {op: [] for op in racing}
    for call in history.calls if racing else []:
        if call.op in racing:
            calls_of[call.op].append(call)
    return [
        _Clue(newest, fill, source_read, calls_of[newest.op] if race else None)
        for newest, fill, source_read, race in found
    ]


def _is_the_race(newest: Op | None, fill: Call | None, source_read: Call | None) -> bool:
    """Whether the calls found tell the race: the fill's value was read from the source before
    a client's write of the source's value was acknowledged."""
    return (
        newest is not None
        and fill is not None
        and source_read is not None
        and newest.client != SETUP_CLIENT
        and (newest.complete_step is None or source_read.step < newest.complete_step)
    )


def _story(calls: list[Call], newest: Op, fill: Call, source_read: Call, stale: str) -> tuple[str, list[int]]:
    """The race as it happened: read the source, lose to a write, fill the cache late.

    ``calls`` are the newest write's calls."""
    updates = [call for call in calls if call.system == "sql"]
    cache = [call for call in calls if call.system == "redis"]
    writer = who(newest.client)
    if updates:
        wrote = f"{writer} updated the source (step {updates[-1].step})"
    elif newest.written is None:
        wrote = f"{writer} deleted {newest.key}"
    else:
        wrote = f"{writer} wrote {newest.written}"
    if cache:
        shown = [clip(call.command) for call in cache[:_MAX_COMMANDS]]
        if len(cache) > _MAX_COMMANDS:
            shown.append("...")
        label = "step" if len(cache) == 1 else "steps"
        numbers = ", ".join(str(call.step) for call in cache)
        verb = "invalidated" if all(_invalidates(call.command) for call in cache) else "updated"
        wrote += f" and {verb} the cache ({'; '.join(shown)}, {label} {numbers})"
    else:
        wrote += " without touching the cache"
    filler = who(fill.client)
    message = (
        f"{filler} read the source ({stale}) at step {source_read.step}, before {write_of(newest)}; "
        f"{wrote}; {filler} then filled the cache with {stale} at step {fill.step} "
        f"({clip(fill.command)})."
    )
    steps = [source_read.step, fill.step, *(call.step for call in updates + cache)]
    return message, steps


_MAX_COMMANDS = 3
"""How many of the new write's Redis commands the story lists."""


def _plain(probe: Probe, newest: Op | None, fill: Call | None) -> tuple[str, list[int]]:
    """What the probe shows, when the history lacks the calls to tell how it came about."""
    message = (
        f"a fresh read of {probe.key} at quiescence returns {show(probe.observed)} "
        f"but the source holds {show(probe.source)}{_origin(newest)}"
    )
    steps = []
    if newest is not None and newest.complete_step is not None:
        steps.append(newest.complete_step)
    if fill is not None:
        message += (
            f"; the last cache write carrying {probe.observed} was {who(fill.client)}'s "
            f"{clip(fill.command)} at step {fill.step}"
        )
        steps.append(fill.step)
    return message + ".", steps


def _origin(newest: Op | None) -> str:
    """`` (client 2's write, acknowledged at step 9)``, or nothing when unattributable."""
    if newest is None:
        return ""
    if newest.client == SETUP_CLIENT:
        return " (the initial value)"
    kind = "delete" if newest.written is None else "write"
    if newest.acknowledged:
        return f" ({who(newest.client)}'s {kind}, acknowledged at step {newest.complete_step})"
    return f" ({who(newest.client)}'s {kind}, never acknowledged)"


def _invalidates(command: str) -> bool:
    """Whether a cache command only removes (DEL, UNLINK), rather than writes a value."""
    return command.split(" ", 1)[0].upper() in ("DEL", "UNLINK")

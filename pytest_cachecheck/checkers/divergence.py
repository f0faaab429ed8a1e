"""Divergence: the cache disagrees with the source once everything has settled.

The harness does not look inside Redis (black box first).  At quiescence (no operation in
flight, background work drained) a fresh client reads each key through the layer: a
:class:`~pytest_cachecheck.history.Probe` records what the layer returned (``observed``) and what
the source of truth holds (``source``).  It probes again after each jump of the virtual clock to
the cache's next expiry, until the two agree or nothing is left to expire.

**Definition.**  A key *diverged* when its first probe has ``observed != source``.  Nothing is in
flight, so no later write can repair it: every future reader gets the wrong value until the entry
goes away.  It **persists** (``persists = ended - began``, virtual seconds) from when the layer
had known better to the last instant it can have served the wrong value, both read off the events
themselves, never off the probes' own work:

* it **began** when the first acknowledged write newer than every write of the served value was
  acknowledged (the stale-read checker's age, for a read at the last wrong instant): a fill
  delayed after that write counts from the write, not from the fill.  When no acknowledged write
  superseded the served value (the source lags the cache, or the value is a phantom), it began
  when the first probe's read began (quiescence);
* it **ended** at the expiry deadline the clock jumped past just before the first later probe
  that agrees with the source (the entry exists through its deadline and is gone strictly after
  it, as in Redis: a 5 s TTL serves for exactly 5 s), or when that probe's read began if no jump
  preceded it; never before the last disagreeing probe's read began.  No later probe agrees: it
  persists forever (``math.inf``), the entry has no expiry.

A lock wait or sleep inside a probe's read therefore never lengthens the window, nor does the
millisecond the clock lands past a deadline.  ``persists`` is rounded to the microsecond (below
Redis's millisecond resolution), so that the float noise of summed virtual times never decides a
verdict at the boundary.

It violates the contract when the contract is strict, or when it persists longer than
``contract.max_staleness``: a divergence of exactly ``n`` seconds passes ``Contract.bounded(n)``.

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
from bisect import bisect_left, bisect_right
from operator import attrgetter
from typing import NamedTuple

from ..contract import Contract
from ..history import SETUP_CLIENT, Call, History, Probe
from ..history.roles import ENTRY, LOCK, QUEUE, KeyRoles, key_name, key_roles
from ..hooks import hookimpl
from ..verdict import Finding, Verdict
from ._index import KeyWrites, Op, calls_of, in_bulk, index
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
        first = key_probes[0]
        if first.observed == first.source:
            continue
        diverged.append((first, _persists(key_probes, index(history).writes(key))))
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


def _persists(probes: list[Probe], writes: KeyWrites) -> float:
    """How long the divergence of one key lasted (see the module's docstring): ``probes`` are the
    key's probes in order, the first one disagreeing; ``writes`` the key's writes."""
    healed = next((i for i, probe in enumerate(probes) if probe.observed == probe.source), None)
    if healed is None:
        return math.inf
    heal, last_wrong = probes[healed], probes[healed - 1]
    ended = heal.start if heal.expired is None else min(heal.start, heal.expired)
    ended = max(ended, last_wrong.start)
    began = _known_better(probes[0].observed, writes)
    if began is None:
        began = probes[0].start
    return max(0.0, round(ended - began, 6))


def _known_better(served: str | None, writes: KeyWrites) -> float | None:
    """When the first acknowledged write newer than every write of ``served`` was acknowledged,
    or ``None`` when none is (or no write stored ``served``)."""
    if served not in writes.by_value:
        return None
    invokes, first_from = writes.newer()
    newer = first_from[bisect_right(invokes, writes.latest_completion(served))]
    return None if newer is None else newer.complete_time


class _Clue(NamedTuple):
    """What the history says about one diverged key (see the module's docstring)."""

    newest: Op | None
    """The newest write of the source's value."""
    fill: Call | None
    source_read: Call | None
    race: list[Call] | None
    """When the calls tell the race, the newest write's calls; otherwise ``None``."""
    roles: KeyRoles | None = None
    """What each key is for, when the history was searched for the fill."""


def _finding(probe: Probe, persists: float, contract: Contract, clue: _Clue) -> Finding:
    stale, fresh = probe.observed, probe.source
    newest, fill, source_read = clue.newest, clue.fill, clue.source_read
    if clue.race is not None:
        message, steps = _story(clue.race, newest, fill, source_read, stale, clue.roles)
    else:
        message, steps = _plain(probe, newest, fill, clue.roles)
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
    # Only a command that writes an entry can be a fill: the few commands carrying a value are
    # filtered after the search (and the keys' roles learnt only if there is one), not before.
    candidates = mentioning(calls_of(history, "redis") if values else [], values, attrgetter("command"))
    roles = key_roles(history) if any(candidates.values()) else None
    carrying = {value: [call for call in found if _writes_an_entry(call, roles)] for value, found in candidates.items()}
    returning = mentioning(calls_of(history, "sql") if values else [], values, attrgetter("result"))
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
    calls_by_op: dict[int, list[Call]] = {op: [] for op in racing}
    if racing:
        for call in [call for call in history.calls if call.op in racing]:
            calls_by_op[call.op].append(call)
    return [
        _Clue(newest, fill, source_read, calls_by_op[newest.op] if race else None, roles)
        for newest, fill, source_read, race in found
    ]


def _is_the_race(newest: Op | None, fill: Call | None, source_read: Call | None) -> bool:
    """Whether the calls found tell the race: the fill's value was read from the source before
    another client's write of the source's value was acknowledged, and filled after that write
    began.  One client's own steps are sequential: they never race each other."""
    return (
        newest is not None
        and fill is not None
        and source_read is not None
        and newest.client != SETUP_CLIENT
        and source_read.client != newest.client
        and fill.step > newest.invoke_step
        and (newest.complete_step is None or source_read.step < newest.complete_step)
    )


def _writes_an_entry(call: Call, roles: KeyRoles | None) -> bool:
    """Whether ``call`` names a cache entry (or names no key the history knows: a text-only
    call), so that it can be a fill: a lock's or a queue's command never is."""
    touched = roles.of_call(call) if roles is not None else frozenset()
    return not touched or ENTRY in touched


def _story(
    calls: list[Call], newest: Op, fill: Call, source_read: Call, stale: str, roles: KeyRoles | None = None
) -> tuple[str, list[int]]:
    """The race as it happened: read the source, lose to a write, fill the cache late.

    ``calls`` are the newest write's calls.  Only those naming a cache entry are told as cache
    writes; those of a lock or a queue are told as such, with their first and last steps."""
    updates = [call for call in calls if call.system == "sql"]
    redis = [call for call in calls if call.system == "redis"]
    cache = [call for call in redis if _writes_an_entry(call, roles)]
    locks = [call for call in redis if call not in cache and roles is not None and LOCK in roles.of_call(call)]
    queued = [call for call in redis if call not in cache and call not in locks and roles is not None and QUEUE in roles.of_call(call)]
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
        verb = "invalidated" if all(_invalidates(call) for call in cache) else "updated"
        wrote += f" and {verb} the cache ({'; '.join(shown)}, {label} {numbers})"
    else:
        wrote += " without touching the cache"
    aside = [_aside("queued it on", queued, roles), _aside("used the lock", locks, roles)]
    wrote += "".join(f" and {text}" for text, _ in filter(None, aside))
    filler = who(fill.client)
    message = (
        f"{filler} read the source ({stale}) at step {source_read.step}, before {write_of(newest)}; "
        f"{wrote}; {filler} then filled the cache with {stale} at step {fill.step} "
        f"({clip(fill.command)})."
    )
    steps = [source_read.step, fill.step, *(call.step for call in updates + cache)]
    steps += [step for _, cited in filter(None, aside) for step in cited]
    return message, steps


def _aside(doing: str, calls: list[Call], roles: KeyRoles | None) -> tuple[str, list[int]] | None:
    """``used the lock lock:u1 (5 commands, steps 12 to 117)``: a lock's or a queue's calls,
    told with the keys they name and only their first and last steps (those the story cites)."""
    if not calls or roles is None:
        return None
    role = LOCK if doing.endswith("lock") else QUEUE
    keys = sorted({roles_key for call in calls for roles_key in map(key_name, call.keys) if roles.of(roles_key) == role})
    first, last = calls[0].step, calls[-1].step
    count = sum(len(call.commands) or 1 for call in calls)
    span = f"step {first}" if first == last else f"steps {first} to {last}"
    noun = "command" if count == 1 else "commands"
    return f"{doing} {', '.join(keys)} ({count} {noun}, {span})", sorted({first, last})


_MAX_COMMANDS = 3
"""How many of the new write's Redis commands the story lists."""


def _plain(probe: Probe, newest: Op | None, fill: Call | None, roles: KeyRoles | None = None) -> tuple[str, list[int]]:
    """What the probe shows, when the history lacks the calls to tell how it came about.

    The last cache write names an entry (a lock's or a queue's command is never one); when the
    same call also queued the value (a write-behind's pipeline), the story says on which queue."""
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
        queues = sorted({key_name(key) for key in fill.keys if roles is not None and roles.of(key) == QUEUE})
        if queues:
            message += f", which also queued it on the queue {', '.join(queues)}"
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


def _invalidates(call: Call) -> bool:
    """Whether a cache call only removes (DEL, UNLINK), rather than writes a value."""
    names = [command.name for command in call.commands] or [call.command.split(" ", 1)[0].upper()]
    return all(name in ("DEL", "UNLINK") for name in names)

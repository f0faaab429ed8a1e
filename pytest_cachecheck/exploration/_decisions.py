"""The decisions the machine takes, and the strategy Hypothesis draws them from.

A decision is a value whose repr is the line the printed program shows:
``Read(client=1, key='u1', pause_after=2)`` starts a read on client 1 and preempts it after two
scheduling points; ``Write(client=2, key='u1')`` runs a write to its end; ``Resume(client=1)``
runs a paused operation on; ``Tick(seconds=60)`` advances virtual time.

The encoding is chosen for shrinking and for search.  A preemption is an argument whose simplest
value (None: run on) removes it, so the minimal program keeps only the pauses the bug needs: the
seed's cache-aside race is two decisions, a read paused after its source query and a write.
There is no precondition anywhere: a filtered choice shifts every later choice when a step is
deleted, so resuming an idle client is a no-op, which the shrinker deletes or the trace omits.
Written values are not drawn: each write stores the next fresh token.
"""

from __future__ import annotations

from hypothesis import strategies as st

from ..target import Target
from ._run import Run

TICKS = (1.0, 10.0, 60.0, 600.0, 3600.0)
MAX_PAUSE = 12
"""A preemption after more points than this is left to ``resume``."""


class Decision:
    """One choice of the machine; its repr is the line the program prints."""

    __slots__ = ()

    def apply(self, run: Run) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class Start(Decision):
    """Start an operation on ``client`` and run it for ``pause_after`` points (None: to the end)."""

    __slots__ = ("client", "key", "pause_after")
    kind = ""

    def __init__(self, client: int, key: str, pause_after: int | None = None) -> None:
        self.client, self.key, self.pause_after = client, key, pause_after

    def apply(self, run: Run) -> None:
        run.start(self.client, self.kind, self.key, self.pause_after, text=repr(self))

    def __repr__(self) -> str:
        pause = "" if self.pause_after is None else f", pause_after={self.pause_after}"
        return f"{type(self).__name__}(client={self.client}, key={self.key!r}{pause})"


class Read(Start):
    __slots__ = ()
    kind = "read"


class Write(Start):
    __slots__ = ()
    kind = "write"


class Delete(Start):
    __slots__ = ()
    kind = "delete"


class Resume(Decision):
    """Run ``client``'s paused operation on for ``pause_after`` points (None: to the end)."""

    __slots__ = ("client", "pause_after")

    def __init__(self, client: int, pause_after: int | None = None) -> None:
        self.client, self.pause_after = client, pause_after

    def apply(self, run: Run) -> None:
        run.resume(self.client, self.pause_after, text=repr(self))

    def __repr__(self) -> str:
        pause = "" if self.pause_after is None else f", pause_after={self.pause_after}"
        return f"Resume(client={self.client}{pause})"


class Tick(Decision):
    """Advance virtual time by ``seconds``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def apply(self, run: Run) -> None:
        run.tick(self.seconds, text=repr(self))

    def __repr__(self) -> str:
        return f"Tick(seconds={self.seconds:g})"


class Background(Decision):
    """Run a thread client ``client``'s layer started (its flusher) for ``pause_after`` points."""

    __slots__ = ("client", "pause_after")

    def __init__(self, client: int, pause_after: int | None = None) -> None:
        self.client, self.pause_after = client, pause_after

    def apply(self, run: Run) -> None:
        run.background(self.client, self.pause_after, text=repr(self))

    def __repr__(self) -> str:
        pause = "" if self.pause_after is None else f", pause_after={self.pause_after}"
        return f"Background(client={self.client}{pause})"


class Crash(Decision):
    """Client ``client``'s process dies (its memory with it) and a new one starts."""

    __slots__ = ("client",)

    def __init__(self, client: int) -> None:
        self.client = client

    def apply(self, run: Run) -> None:
        run.crash(self.client, text=repr(self))

    def __repr__(self) -> str:
        return f"Crash(client={self.client})"


class LoseCache(Decision):
    """The cache loses everything (a restart without persistence)."""

    __slots__ = ()

    def apply(self, run: Run) -> None:
        run.lose_cache(text=repr(self))

    def __repr__(self) -> str:
        return "LoseCache()"


class Fail(Decision):
    """The next ``system`` call (``redis`` or ``sql``) of client ``client`` fails."""

    __slots__ = ("client", "system")

    def __init__(self, client: int, system: str) -> None:
        self.client, self.system = client, system

    def apply(self, run: Run) -> None:
        run.fail_next(self.client, self.system, text=repr(self))

    def __repr__(self) -> str:
        return f"Fail(client={self.client}, system={self.system!r})"


class Slow(Decision):
    """The next ``system`` call (``redis`` or ``sql``) of client ``client`` takes ``seconds``."""

    __slots__ = ("client", "system", "seconds")

    def __init__(self, client: int, system: str, seconds: float) -> None:
        self.client, self.system, self.seconds = client, system, seconds

    def apply(self, run: Run) -> None:
        run.slow_next(self.client, self.system, self.seconds, text=repr(self))

    def __repr__(self) -> str:
        return f"Slow(client={self.client}, system={self.system!r}, seconds={self.seconds:g})"


_STARTS = {"read": Read, "write": Write, "delete": Delete}


# How often each value is drawn: weights, by repetition in one flat list.
_PAUSE_WEIGHTS = {None: 6, 1: 4, 2: 4, 3: 4, 4: 1, 5: 1, 6: 1, 8: 1, 10: 1, 12: 1}


def decisions(target: Target) -> st.SearchStrategy[Decision]:
    """Every decision the machine can take on ``target``, simplest first.

    One strategy behind one rule, rather than a rule per kind: Hypothesis's swarm testing
    disables whole rules per example, and a run whose writes or reads are all disabled cannot
    race.  It is a single ``sampled_from`` over every decision, weighted by repetition (one
    draw per decision instead of a nest of them: generation is several times faster), and
    ordered so that shrinking towards the first element simplifies: ``Resume`` of client 1
    first (a no-op when idle), then operations that run on to the end, ticks, and only then
    preemptions.  Short pauses are drawn more often, since most operations take a few points;
    the first key is drawn more often, since races need two clients on one key.
    """
    clients = range(1, target.clients + 1)
    key_weights = {key: (len(target.keys) if i == 0 else 1) for i, key in enumerate(target.keys)}
    starts = [_STARTS[kind] for kind in target.kinds]
    per_branch: list[list[tuple[tuple, Decision]]] = []
    per_branch.append(
        [((p is not None, 0, c, 0, p or 0), Resume(c, p)) for c in clients for p in _weighted(_PAUSE_WEIGHTS)]
    )
    for order, start in enumerate(starts, 1):
        per_branch.append(
            [
                ((p is not None, order, c, list(key_weights).index(k), p or 0), start(c, k, p))
                for c in clients
                for k in _weighted(key_weights)
                for p in _weighted(_PAUSE_WEIGHTS)
            ]
        )
    per_branch.append([((False, len(starts) + 1, 0, i, 0), Tick(t)) for i, t in enumerate(TICKS)])
    order = len(starts) + 2
    if target.background:
        per_branch.append(
            [((p is not None, order, c, 0, p or 0), Background(c, p)) for c in clients for p in _weighted(_PAUSE_WEIGHTS)]
        )
    if "crash" in target.faults:
        per_branch.append([((True, order + 1, c, 0, 0), Crash(c)) for c in clients])
    if "cache-loss" in target.faults:
        per_branch.append([((True, order + 2, 0, 0, 0), LoseCache())])
    if "error" in target.faults:
        per_branch.append([((True, order + 3, c, i, 0), Fail(c, system)) for c in clients for i, system in enumerate(("sql", "redis"))])
    if "slow" in target.faults:
        per_branch.append(
            [
                ((True, order + 4, c, i, j), Slow(c, system, seconds))
                for c in clients
                for i, system in enumerate(("sql", "redis"))
                for j, seconds in enumerate(target.slow)
            ]
        )
    # Each branch (resume, each kind of operation, tick) is drawn equally often.
    size = max(len(branch) for branch in per_branch)
    pool = [entry for branch in per_branch for entry in branch * (size // len(branch))]
    pool.sort(key=lambda entry: entry[0])
    return st.sampled_from([decision for _, decision in pool])


def _weighted(weights: dict) -> list:
    return [value for value, weight in weights.items() for _ in range(weight)]

"""One example: a fresh cache and source, one app instance per simulated client, and a history.

The machine drives a :class:`Run` through three kinds of decisions (start an operation on an
idle client, step a client one scheduling point, advance the clock), then :meth:`Run.quiesce`
drains what is in flight, probes every key with a fresh client, and jumps the clock to each next
expiry until the layer agrees with the source or nothing is left to expire.

Invariant: the history is complete for everything that ran; the *setup* client (0) writes each
key's initial value (deletes each key the target lists as absent) before any client exists,
acknowledged before step 1 of the clients.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from typing import Any

from ..engine._clock import VirtualClock
from ..engine._hazards import Hazards
from ..engine._scheduler import Scheduler, Stall, Task
from ..history import SETUP_CLIENT, Call, Complete, History, Invoke, Probe
from ..report._trace import short
from ..target import Target

MAX_EXPIRY_JUMPS = 16
EXPIRY_STEP = 0.001
"""How far past an expiry deadline the clock lands: Redis's resolution, a millisecond."""
MAX_ACTOR_HELP = 2000
MAX_BACKGROUND_POINTS = 50
"""Points a background thread runs per decision (or per round of draining) when not told."""
DRAIN_BACKGROUND_ROUNDS = 3
MAX_DRAIN_POINTS = MAX_BACKGROUND_POINTS * DRAIN_BACKGROUND_ROUNDS * 12
"""Points each thread of the layer may run while draining, in as many rounds as it takes."""
"""Points background threads may run while draining, to unblock the operations waiting on them."""


@dataclass(frozen=True)
class RunConfig:
    """Knobs of the harness that are not part of a target."""

    watchdog: float = 5.0
    """Wall seconds a task may run without reaching a scheduling point."""
    max_points_per_op: int = 2000
    """Scheduling points one operation may execute before it is reported as spinning."""


@dataclass
class Client:
    """One simulated app process: its task, its connections and its layer instance."""

    number: int
    task: Task
    redis: Any
    connection: Any
    instance: Any = None

    @property
    def name(self) -> str:
        return self.task.name


@dataclass
class Step:
    """What one machine decision did, for the printed trace."""

    text: str
    first_event: int
    last_event: int = 0
    notes: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    noop: bool = False


class Run:
    def __init__(self, target: Target, config: RunConfig, backend: Any) -> None:
        self.target = target
        self.clock = VirtualClock()
        self.scheduler = Scheduler(
            self.clock,
            watchdog=config.watchdog,
            timeout=target.contract.timeout,
            max_points_per_op=config.max_points_per_op,
        )
        self.world = backend.world(self.scheduler, decode_responses=target.decode_responses)
        self.hazards = Hazards.of(self.scheduler)
        self._ops = itertools.count(1)
        self._versions = {key: itertools.count(1) for key in target.keys}
        self.steps: list[Step] = []
        self.broken = False
        self._helped = 0
        initial = [(key, None if key in target.absent else f"{key}.v0") for key in target.keys]
        self.world.setup_source(target.source, [(key, value) for key, value in initial if value is not None])
        for key, value in initial:  # an absent key starts as if deleted: reading it returns nothing
            op = next(self._ops)
            kind = "delete" if value is None else "write"
            self.scheduler.log(Invoke, client=SETUP_CLIENT, op=op, kind=kind, key=key, value=value)
            self.scheduler.log(Complete, client=SETUP_CLIENT, op=op, status="ok")
        self.clients = [self._new_client(number, f"c{number}") for number in range(1, target.clients + 1)]

    # -- building app instances -----------------------------------------------------------

    def _new_client(self, number: int, name: str) -> Client:
        client = Client(
            number, self.scheduler.spawn(name, number), self.world.redis_client(number), self.world.connection(number)
        )
        failure: list[BaseException] = []

        def build() -> None:
            try:
                client.instance = self.target.build(client.redis, client.connection)
            except Exception as exc:
                failure.append(exc)

        self._complete(client.task, build)
        if failure:
            raise BuildError(self.target, failure[0]) from failure[0]
        return client

    # -- decisions ------------------------------------------------------------------------

    def client(self, number: int) -> Client:
        return self.clients[number - 1]

    def start(self, number: int, kind: str, key: str, pause_after: int | None = None, *, text: str = "") -> None:
        """Invoke an operation on a client and run it for ``pause_after`` points (None: to the end).

        A client does one thing at a time: if it is still busy, its current operation is run to
        completion first; if that operation is blocked, the client cannot start another one and
        the decision does nothing.
        """
        client = self.client(number)
        self._begin(text or f"{kind}(client={number}, key={key!r}, pause_after={pause_after!r})")
        if client.task.op is not None and client.task.runnable:
            self.steps[-1].notes.append(f"{client.name} first finishes operation {client.task.op}")
            self.scheduler.run_to_completion(client.task)
        if client.task.op is not None:
            self.steps[-1].notes.append(f"{client.name} is blocked ({client.task.state}): nothing starts")
            self._end()
            return
        op = next(self._ops)
        value = f"{key}.v{next(self._versions[key])}" if kind == "write" else None
        self.scheduler.log(Invoke, client=number, op=op, kind=kind, key=key, value=value)
        if value is not None:
            self.steps[-1].notes.append(f"{client.name} writes {value}")
        self.scheduler.submit(client.task, self._job(client, op, kind, key, value), budget=_budget(pause_after))
        self._note_pause(client)
        self._end()

    def _job(self, client: Client, op: int, kind: str, key: str, value: str | None):
        def job() -> None:
            self.scheduler.begin_op(client.task, op)
            try:
                result = self.target.perform(client.instance, kind, key, value)
                observed = self.target.observed(result) if kind == "read" else None
            except Exception as exc:
                self.scheduler.log(Complete, client=client.number, op=op, status="error", error=_describe(exc))
            else:
                self.scheduler.log(Complete, client=client.number, op=op, status="ok", value=observed)
            finally:
                self.scheduler.begin_op(client.task, None)

        return job

    def resume(self, number: int, pause_after: int | None = None, *, text: str = "") -> None:
        """Run a client's paused operation on for ``pause_after`` points (None: to the end).

        Nothing happens if the client is idle or blocked.
        """
        client = self.client(number)
        task = client.task
        self._begin(text or f"resume(client={number}, pause_after={pause_after!r})")
        if task.op is not None and task.runnable:
            self.scheduler.step(task, _budget(pause_after))
            self._note_pause(client)
        else:
            reason = "is idle" if task.op is None else f"is {task.state}"
            self.steps[-1].notes.append(f"{task.name} {reason}: nothing to run")
            self.steps[-1].noop = True
        self._end()

    def background(self, number: int, pause_after: int | None = None, *, text: str = "") -> None:
        """Run a thread client ``number``'s layer started (its flusher, say) for some points."""
        self._begin(text or f"background(client={number}, pause_after={pause_after!r})")
        actors = [task for task in self._actors_of(number) if task.runnable]
        if actors:
            self.scheduler.step(actors[0], _budget(pause_after) if pause_after else MAX_BACKGROUND_POINTS)
            if actors[0].state == "ready" and actors[0].pending:
                self.steps[-1].after.append(f"{actors[0].name} pauses before: {short(actors[0].pending)}")
        else:
            self.steps[-1].notes.append(f"c{number} has no background work to run")
            self.steps[-1].noop = True
        self._end()

    def crash(self, number: int, *, text: str = "") -> None:
        """Kill client ``number``'s process and start a new one: its memory is lost.

        Its operation in flight, if any, is *indeterminate*: it may or may not have taken
        effect.  Its open transaction is rolled back, as the server does when a connection dies.
        """
        client = self.client(number)
        self._begin(text or f"crash(client={number})")
        self.scheduler.log(
            Call, client=number, actor=client.name, op=client.task.op, system="fault",
            command=f"crash {client.name}", result="process killed, restarted",
        )
        if client.task.op is not None:
            self.scheduler.log(Complete, client=number, op=client.task.op, status="indeterminate")
        for task in [client.task, *self._actors_of(number)]:
            self.scheduler.cancel(task)
        client.connection.driver.abort(client.connection)
        self.clients[number - 1] = self._new_client(number, client.name)
        self._end()

    def lose_cache(self, *, text: str = "") -> None:
        """The cache loses every entry, as a restart without persistence would."""
        self._begin(text or "lose_cache()")
        self.world.lose_cache()
        self.scheduler.log(Call, client=0, actor="fault", op=None, system="fault", command="cache lost", result="every entry gone")
        self._end()

    def fail_next(self, number: int, system: str, *, text: str = "") -> None:
        """Make client ``number``'s next Redis command or SQL statement fail."""
        client = self.client(number)
        self._begin(text or f"fail_next(client={number}, system={system!r})")
        self._next_call(client, system).fail = True
        self.steps[-1].notes.append(f"{client.name}'s next {system} call will fail")
        self._end()

    def slow_next(self, number: int, system: str, seconds: float, *, text: str = "") -> None:
        """Make client ``number``'s next Redis command or SQL statement take ``seconds`` of virtual time."""
        client = self.client(number)
        self._begin(text or f"slow_next(client={number}, system={system!r}, seconds={seconds:g})")
        self._next_call(client, system).slow = seconds
        self.steps[-1].notes.append(f"{client.name}'s next {system} call will take {seconds:g} s")
        self._end()

    @staticmethod
    def _next_call(client: Client, system: str) -> Any:
        return client.connection.next_call if system == "sql" else client.redis._cachecheck_next

    def _actors_of(self, number: int) -> list[Task]:
        return [task for task in self.scheduler.actors() if task.client == number and task.state != "done"]

    def _note_pause(self, client: Client) -> None:
        task = client.task
        if task.op is not None and task.state == "ready" and task.pending:
            self.steps[-1].after.append(f"{task.name} pauses before: {short(task.pending)}")
        elif task.state == "waiting":
            label = task.waiting_on.label if task.waiting_on is not None else "something"
            self.steps[-1].after.append(f"{task.name} is blocked, waiting for {label}")

    def tick(self, seconds: float, *, text: str = "") -> None:
        self._begin(text or f"tick(seconds={seconds!r})")
        self.clock.advance(seconds)
        self._end()

    # -- quiescence -----------------------------------------------------------------------

    def quiesce(self) -> None:
        """Drain every operation in flight and the layers' background work, then probe."""
        self._begin("# quiescence: drain what is in flight")
        self._drain()
        self._drain_background()
        self._end()
        self._begin("# quiescence: a fresh client reads every key")
        prober = self._new_client(self.target.clients + 1, "probe")
        diverged = [key for key in self.target.keys if not self._probe(prober, key)]
        for _ in range(MAX_EXPIRY_JUMPS):
            if not diverged:
                break
            wait = self.world.next_expiry(self.clock)
            if wait is None:
                break
            # The entry exists through its deadline and is gone strictly after it (Redis and
            # both backends): land a millisecond past it, and record the deadline itself.
            deadline = self.clock.now + wait
            self.clock.advance(wait + EXPIRY_STEP)
            diverged = [key for key in diverged if not self._probe(prober, key, expired=deadline)]
        self.hazards.at_quiescence()  # threads and processes the layer left behind
        self._end()

    def _drain(self) -> None:
        """Finish every operation in flight, the most recently invoked first.

        Newest first means a program that starts a write while a read is paused ends with the
        write, then the read: the order a race needs.  Without it the shrinker would have to
        spell that order out with one more decision.
        """
        tasks = [client.task for client in self.clients]
        while True:
            busy = sorted((task for task in tasks if task.op is not None), key=lambda t: -(t.op or 0))
            if not busy:
                return
            ready = [task for task in busy if task.state == "ready"]
            timed = sorted((task for task in busy if task.runnable), key=lambda t: t.deadline or 0.0)
            if ready or timed:
                self.scheduler.run_to_completion((ready or timed)[0])
            else:
                self._help_actors(busy)

    def _drain_background(self) -> None:
        """Let each thread the layers started run until it idles (a flusher has flushed).

        Background loops never finish by themselves.  An actor is stopped once it runs a whole
        cycle (from one sleep to the next) that does exactly what the previous cycle did, with the
        same results: it has nothing left to do.  A budget of points bounds the rest.
        """
        idle: set[str] = set()
        start, budget = self.scheduler.points, MAX_DRAIN_POINTS * len(self.scheduler.actors())
        while self.scheduler.points - start < budget:
            # Round after round: an actor that waited may have been unblocked by another one.
            # Rounds are not counted, points are: two flushers that keep blocking each other on
            # PostgreSQL's row locks get one item further per round, however many items are queued.
            movable = [task for task in self.scheduler.actors() if task.runnable and task.name not in idle]
            if not movable:
                return
            for task in movable:
                if self._run_until_idle(task):
                    idle.add(task.name)

    def _run_until_idle(self, task: Task) -> bool:
        """Step ``task`` until it repeats an idle cycle (True), blocks or runs out of points."""
        previous: list[tuple[str, str]] | None = None
        cycle: list[tuple[str, str]] = []
        for _ in range(MAX_BACKGROUND_POINTS * DRAIN_BACKGROUND_ROUNDS):
            if not task.runnable:
                return False
            seen = len(self.scheduler.events)
            self.scheduler.step(task, 1)
            for event in self.scheduler.events[seen:]:
                if isinstance(event, Call) and event.actor == task.name:
                    if event.system != "sleep":
                        cycle.append((event.command, event.result))
                    elif cycle == previous:
                        return True
                    else:
                        previous, cycle = cycle, []
        return False

    def _help_actors(self, waiting: list[Task]) -> None:
        """Every task in ``waiting`` waits: step a thread the layer started, or report the stall."""
        actors = [task for task in self.scheduler.actors() if task.runnable]
        if not actors or self._helped >= MAX_ACTOR_HELP:
            raise Stall("deadlock", _stuck(waiting), waiting[0])
        self._helped += 1
        self.scheduler.step(actors[0])

    def _complete(self, task: Task, job: Any) -> None:
        """Run a harness job (building an instance, a probe read) on ``task`` to its end."""
        self.scheduler.submit(task, job, budget=sys.maxsize)
        while task.state != "idle":
            if task.runnable:
                self.scheduler.run_to_completion(task)
            else:
                self._help_actors([task])

    def _probe(self, prober: Client, key: str, expired: float | None = None) -> bool:
        """Read ``key`` through a fresh client and log a :class:`Probe`: whether they agree.

        The probe records when its read began (before the layer's own lock waits or sleeps moved
        the clock) and ``expired``, the deadline the clock last jumped past, so that windows are
        measured from the events themselves and not from the probe's own work.
        """
        began = self.clock.now
        if self.target.read is None:  # a write-only target: only the source is read
            source = self.world.read_source(self.target.source, key)
            self.scheduler.log(Probe, key=key, observed=source, source=source, began=began, expired=expired)
            return True
        box: list[Any] = []

        def job() -> None:
            self.scheduler.begin_op(prober.task, None)
            try:
                box.append(self.target.observed(self.target.perform(prober.instance, "read", key, None)))
            except Exception as exc:
                box.append(exc)

        self._complete(prober.task, job)
        if isinstance(box[0], Exception):
            raise Stall("errors", f"a fresh client's read of {key} at quiescence raised {_describe(box[0])}", prober.task)
        source = self.world.read_source(self.target.source, key)
        self.scheduler.log(Probe, key=key, observed=box[0], source=source, began=began, expired=expired)
        return box[0] == source

    # -- the record ------------------------------------------------------------------------

    def history(self) -> History:
        return History(tuple(self.scheduler.events), tuple(self.target.locks))

    def _begin(self, text: str) -> None:
        self.steps.append(Step(text, len(self.scheduler.events)))

    def _end(self) -> None:
        self.steps[-1].last_event = len(self.scheduler.events)

    machine_name = "Machine"

    def close(self) -> None:
        self.scheduler.close()
        self.hazards.close()
        for client in self.clients:
            client.connection.close()
        self.world.close()


def _budget(pause_after: int | None) -> int:
    return sys.maxsize if pause_after is None else pause_after


class BuildError(Exception):
    def __init__(self, target: Target, exc: BaseException) -> None:
        super().__init__(f"Target({target.name}).build raised {_describe(exc)}: fix the target's build= callable")


def _describe(exc: BaseException) -> str:
    return repr(exc)


def _stuck(tasks: list[Task]) -> str:
    parts = []
    for task in tasks:
        label = task.waiting_on.label if task.waiting_on is not None else "nothing"
        holders = task.waiting_on.holders() if task.waiting_on is not None else []
        by = f" (held by {', '.join(t.name for t in holders)})" if holders else " (nothing left can release it)"
        parts.append(f"{task.name} waits for {label}{by}")
    return "no operation can finish: " + "; ".join(parts)

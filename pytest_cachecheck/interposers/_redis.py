"""The Redis interposer: a redis-py client whose every command is one scheduling point.

The client handed to a layer is a genuine ``redis.Redis`` (a subclass of whatever client class
the backend uses, fakeredis's by default), so ``get``, ``set(..., nx=True)``, ``register_script``
and ``lock`` all work unchanged.  Every command funnels through ``execute_command``; a pipeline
or MULTI/EXEC block is one point when it executes (its queued commands are not points), and so
is a Lua script (``EVAL``/``EVALSHA``), because Redis runs each of those atomically.  A command
run inside another point (a pipeline loading its scripts) belongs to that point.

The history records the command as rendered text, in full: explanations search it for values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import redis
import redis.client

from ..engine import _context
from ..engine._faults import NextCall
from ._blocking import cooperative, touched
from ..engine._scheduler import Blocked, Scheduler
from ..history import INJECTED
from ..history._calls import Batch, Command
from ._redis_guard import rejoin, split_name, text


@dataclass(frozen=True)
class KeySpec:
    """Where a command's keys are, as the server's ``COMMAND`` says: positions ``first`` to
    ``last`` (negative: from the end) every ``step``; ``movable`` when they depend on the
    arguments; and whether the command writes or blocks."""

    first: int
    last: int
    step: int
    movable: bool
    write: bool
    blocking: bool


def key_specs(commands: Mapping[Any, Any]) -> dict[str, KeySpec]:
    """``SET`` and ``XGROUP|CREATE`` -> their :class:`KeySpec`, from a server's ``COMMAND``."""

    def spec(first: Any, last: Any, step: Any, flags: Any) -> KeySpec:
        flags = {text(flag) for flag in flags}
        return KeySpec(int(first), int(last), int(step), "movablekeys" in flags, "write" in flags, "blocking" in flags)

    specs = {}
    for name, info in commands.items():
        specs[text(name).upper()] = spec(
            info.get("first_key_pos", 0), info.get("last_key_pos", 0), info.get("step_count", 0), info.get("flags", ())
        )
        for sub in info.get("subcommands") or ():
            specs[text(sub[0]).upper()] = spec(sub[3], sub[4], sub[5], sub[2])
    return specs


_embedded_specs: dict[str, KeySpec] | None = None


def embedded_specs() -> dict[str, KeySpec]:
    """The key positions fakeredis's ``COMMAND`` gives (asked once per process)."""
    global _embedded_specs
    if _embedded_specs is None:
        import fakeredis

        _embedded_specs = key_specs(fakeredis.FakeRedis(server=fakeredis.FakeServer()).command())
    return _embedded_specs


_NUMKEYS = {
    # Commands whose keys follow a ``numkeys`` argument: its position (name at 0).
    **dict.fromkeys(("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"), 2),
    **dict.fromkeys(("ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE", "BLMPOP", "BZMPOP"), 2),
    **dict.fromkeys(("ZUNION", "ZINTER", "ZDIFF", "ZINTERCARD", "SINTERCARD", "LMPOP", "ZMPOP"), 1),
}
_LEADING_KEY = {"ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"}  # the destination, before numkeys


def key_positions(specs: Mapping[str, Any], name: str, args: tuple) -> list[int]:
    """The positions in ``args`` (the name at 0, split into words) that are keys.

    From ``specs`` (a :class:`KeySpec` per command or ``NAME|SUB``), with the commands whose
    keys move with their arguments read from their ``numkeys`` or ``STREAMS``; unknown commands
    name no key.
    """
    count = _NUMKEYS.get(name)
    if count is not None and len(args) > count:
        try:
            numkeys = int(text(args[count]))
        except ValueError:
            return []
        lead = [1] if name in _LEADING_KEY else []
        return lead + [i for i in range(count + 1, count + 1 + numkeys) if i < len(args)]
    if name in ("XREAD", "XREADGROUP"):
        upper = [text(arg).upper() if isinstance(arg, (str, bytes)) else "" for arg in args]
        if "STREAMS" in upper:
            first = upper.index("STREAMS") + 1
            return list(range(first, first + (len(args) - first) // 2))
        return []
    spec = specs.get(f"{name}|{text(args[1]).upper()}") if len(args) > 1 else None
    spec = spec or specs.get(name)
    if spec is None or spec.first <= 0:
        return []
    last = len(args) + spec.last if spec.last < 0 else spec.last
    return [i for i in range(spec.first, min(last, len(args) - 1) + 1, spec.step or 1)]


def command_of(args: Iterable[Any], specs: Mapping[str, Any]) -> Command:
    """The :class:`Command` the layer sent as ``args`` (redis-py's ``execute_command`` args)."""
    words = split_name(tuple(args))
    if not words:
        return Command("")
    name = text(words[0]).upper()
    argv = tuple(bytes(arg) if isinstance(arg, (bytearray, memoryview)) else arg for arg in words[1:])
    return Command(name, argv, tuple(i - 1 for i in key_positions(specs, name, words)))


def _batch(pipe: Any) -> Batch:
    specs = pipe._cachecheck_specs
    commands = tuple(command_of(entry[0], specs) for entry in getattr(pipe, "command_stack", ()))
    return Batch(commands, bool(pipe.transaction or getattr(pipe, "explicit_transaction", False)))


_client_classes: dict[type, type] = {}
_pipeline_classes: dict[type, type] = {}


def scheduled_client(
    base_instance: redis.Redis, scheduler: Scheduler, specs: Mapping[str, Any] | None = None
) -> redis.Redis:
    """Turn a redis-py client into a scheduled one (same connection pool), or re-point one.

    ``specs`` say where each command's keys are (:func:`key_specs` of the server's
    ``COMMAND``); by default fakeredis's.
    """
    if not isinstance(base_instance, _ScheduledClient):
        base = type(base_instance)
        cls = _client_classes.get(base)
        if cls is None:
            cls = _client_classes[base] = type(f"Scheduled{base.__name__}", (_ScheduledClient, base), {})
        base_instance.__class__ = cls
    # A client is reused from example to example: nothing of the last one may remain.
    base_instance._cachecheck_scheduler = scheduler  # type: ignore[attr-defined]
    base_instance._cachecheck_next = NextCall()  # type: ignore[attr-defined]
    base_instance._cachecheck_policy = None  # type: ignore[attr-defined]
    base_instance._cachecheck_specs = specs if specs is not None else embedded_specs()  # type: ignore[attr-defined]
    # Where a script registered on a client of an earlier run is sent instead (_ScheduledScript).
    scheduler.redis_clients.setdefault(_decodes(base_instance), base_instance)
    return base_instance


def _decodes(client: Any) -> bool:
    return bool(client.connection_pool.connection_kwargs.get("decode_responses", False))


class _ScheduledClient:
    _cachecheck_scheduler: Scheduler
    _cachecheck_specs: Mapping[str, Any]
    _cachecheck_policy: Any = None
    """On a shared real server, the confinement that prefixes keys and owns expiry."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        parent = super()
        policy = self._cachecheck_policy

        def send(*sent: Any) -> Any:
            return parent.execute_command(*sent, **options)

        def sent(*words: Any) -> Any:
            return send(*words) if policy is None else policy.execute(self, words, send)

        scheduler = self._cachecheck_scheduler
        command = command_of(args, self._cachecheck_specs)
        action = cooperative(args, sent, scheduler) or (lambda: sent(*args))
        result = scheduler.point("redis", command, self._faulty(action))
        touched(scheduler, command.keys)
        return result

    _cachecheck_next: NextCall
    """Armed by the ``error`` fault (the next command raises ConnectionError instead of running)
    and the ``slow`` fault (it takes stated virtual seconds)."""

    def _faulty(self, action: Any) -> Any:
        def run() -> Any:
            fault = self._cachecheck_next.take(self._cachecheck_scheduler, "redis")
            if isinstance(fault, Blocked):
                return fault  # slow: the command runs once the clock reaches its time
            if fault:
                raise redis.ConnectionError(f"{INJECTED} connection error")
            return action()

        return run

    def register_script(self, script: Any) -> Any:
        return _ScheduledScript(super().register_script(script))  # type: ignore[misc]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[misc]
        base = type(pipe)
        cls = _pipeline_classes.get(base)
        if cls is None:
            cls = _pipeline_classes[base] = type(f"Scheduled{base.__name__}", (_ScheduledPipeline, base), {})
        pipe.__class__ = cls
        pipe._cachecheck_scheduler = self._cachecheck_scheduler
        pipe._cachecheck_policy = self._cachecheck_policy
        pipe._cachecheck_specs = self._cachecheck_specs
        return pipe


class _ScheduledPipeline:
    _cachecheck_scheduler: Scheduler
    _cachecheck_specs: Mapping[str, Any]
    _cachecheck_policy: Any = None

    def execute(self, raise_on_error: bool = True) -> Any:
        parent = super()
        batch = _batch(self)
        scheduler = self._cachecheck_scheduler
        if self._cachecheck_policy is None:
            result = scheduler.point("redis", batch, lambda: parent.execute(raise_on_error))
        else:
            result = scheduler.point("redis", batch, lambda: self._confined(parent, raise_on_error))
        touched(scheduler, [key for command in batch.commands for key in command.keys])
        return result

    def _confined(self, parent: Any, raise_on_error: bool) -> Any:
        """Prefix every queued command's keys, and take over the TTLs they set.

        The policy's capture commands ride in the same pipeline (the same MULTI, for a
        transaction) right after the command they capture; their replies are taken out again.
        """
        policy = self._cachecheck_policy
        policy._expire_due()
        layer_stack, self.command_stack = list(self.command_stack), []
        extra: list[tuple[int, str, list[bytes], int]] = []  # (reply index, name, keys, how many replies)
        for original, options in layer_stack:
            args = split_name(original)
            name = text(args[0]).upper()  # b"SET" and "set" alike: SET
            keys, rewritten = policy.rewrite(name, args)
            self.command_stack.append((tuple(rejoin(original, rewritten)), options))
            if policy.captures(name, args):
                index = len(self.command_stack)
                count = policy.capture(_Queue(self.command_stack), keys)
                extra.append((index, name, keys, count))
        replies = parent.execute(False)
        drop: set[int] = set()
        for index, name, keys, count in extra:
            policy.captured(name, keys, replies[index : index + count], replies[index - 1])
            drop.update(range(index, index + count))
        kept = [reply for i, reply in enumerate(replies) if i not in drop]
        if raise_on_error:
            self.raise_first_error(layer_stack, kept)
        return kept

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        parent = super()
        policy = self._cachecheck_policy

        def send(*sent: Any) -> Any:
            return parent.immediate_execute_command(*sent, **options)

        action = (lambda: send(*args)) if policy is None else (lambda: policy.execute(self, args, send))
        return self._cachecheck_scheduler.point("redis", command_of(args, self._cachecheck_specs), action)


class _Queue:
    """Lets a policy queue commands on a pipeline's stack without redis-py's own bookkeeping."""

    def __init__(self, stack: list) -> None:
        self.stack = stack

    def execute_command(self, *args: Any) -> None:
        self.stack.append((args, {}))


class _ScheduledScript:
    """A registered Lua script: one point per call, its NOSCRIPT fallback included.

    redis-py sends ``EVALSHA``, and on ``NOSCRIPT`` loads the script and sends it again; Redis
    runs the script atomically either way, so the whole call is one scheduling point, recorded
    as the ``EVALSHA`` with its final reply: the trace does not depend on whether the server had
    the script cached.

    A script registered once and kept (on a class, in a module, redis-py's ``Lock``) outlives
    the example, even the exploration, whose client registered it.  So nothing of that client
    is kept here: the scheduler is the one of the client the call actually uses, and a call
    without a client, whose registered client now belongs to another run, runs on the client
    the calling task's run handed out first (same ``decode_responses``).
    """

    def __init__(self, script: Any) -> None:
        self._script = script

    def __getattr__(self, name: str) -> Any:
        return getattr(self._script, name)

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        keys, args = list(keys or ()), list(args or ())
        client = client if client is not None else _current(self._script.registered_client)
        scheduler = getattr(client, "_cachecheck_scheduler", None)
        if scheduler is None or isinstance(client, redis.client.Pipeline):
            return self._script(keys, args, client)  # queued in a pipeline: the pipeline is the point
        command = command_of(["EVALSHA", self._script.sha, len(keys), *keys, *args], client._cachecheck_specs)
        # An armed fault (error, slow) is taken by this point, never by the EVALSHA inside it.
        return scheduler.point("redis", command, client._faulty(lambda: self._script(keys, args, client)))


def _current(registered: Any) -> Any:
    """The client a script registered on ``registered`` runs on when called without one."""
    task = _context.current_task()
    if task is None or getattr(registered, "_cachecheck_scheduler", None) is task.scheduler:
        return registered
    return task.scheduler.redis_clients.get(_decodes(registered), registered)

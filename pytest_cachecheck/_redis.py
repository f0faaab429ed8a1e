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

from typing import Any, Iterable

import redis
import redis.client

from ._redis_guard import rejoin, split_name, text
from ._scheduler import Scheduler
from .history import INJECTED


def render_arg(arg: Any) -> str:
    """One argument as shown: bare if plain, else quoted with ``repr`` (control characters escaped)."""
    if isinstance(arg, (bytes, bytearray, memoryview)):
        arg = bytes(arg).decode("utf-8", "backslashreplace")
    if isinstance(arg, str):
        if arg and all(ch.isprintable() and not ch.isspace() and ch not in "'\"\\" for ch in arg):
            return arg
        return repr(arg)
    text = str(arg)
    return text if text.isprintable() else repr(text)


def render_command(args: Iterable[Any]) -> str:
    """``SETEX user:u1 3600 '{"name": "u1.v0"}'``: the command name first, values quoted.

    A name redis-py gives as one string (``"MEMORY USAGE"``) is shown as the words Redis gets.
    """
    args = list(args)
    if args and isinstance(args[0], (str, bytes)):
        name = render_arg(args[0]).strip("'\"") if " " in str(args[0]) else render_arg(args[0])
        return " ".join([name, *(render_arg(arg) for arg in args[1:])])
    return " ".join(render_arg(arg) for arg in args)


def _render_stack(pipe: Any) -> str:
    commands = [render_command(entry[0]) for entry in getattr(pipe, "command_stack", ())]
    if pipe.transaction or getattr(pipe, "explicit_transaction", False):
        return "; ".join(["MULTI", *commands, "EXEC"])
    return "PIPELINE " + "; ".join(commands)


_client_classes: dict[type, type] = {}
_pipeline_classes: dict[type, type] = {}


def scheduled_client(base_instance: redis.Redis, scheduler: Scheduler) -> redis.Redis:
    """Turn a redis-py client into a scheduled one (same connection pool), or re-point one."""
    if isinstance(base_instance, _ScheduledClient):
        # A client is reused from example to example: nothing of the last one may remain.
        base_instance._cachecheck_scheduler = scheduler
        base_instance._cachecheck_fail_next = False
        base_instance._cachecheck_policy = None
        return base_instance
    base = type(base_instance)
    cls = _client_classes.get(base)
    if cls is None:
        cls = _client_classes[base] = type(f"Scheduled{base.__name__}", (_ScheduledClient, base), {})
    base_instance.__class__ = cls
    base_instance._cachecheck_scheduler = scheduler  # type: ignore[attr-defined]
    return base_instance


class _ScheduledClient:
    _cachecheck_scheduler: Scheduler
    _cachecheck_policy: Any = None
    """On a shared real server, the confinement that prefixes keys and owns expiry."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        parent = super()
        policy = self._cachecheck_policy

        def send(*sent: Any) -> Any:
            return parent.execute_command(*sent, **options)

        action = (lambda: send(*args)) if policy is None else (lambda: policy.execute(self, args, send))
        return self._cachecheck_scheduler.point("redis", render_command(args), self._faulty(action))

    _cachecheck_fail_next = False
    """Set by the ``error`` fault: the next command raises ConnectionError instead of running."""

    def _faulty(self, action: Any) -> Any:
        def run() -> Any:
            if self._cachecheck_fail_next:
                self._cachecheck_fail_next = False
                raise redis.ConnectionError(f"{INJECTED} connection error")
            return action()

        return run

    def register_script(self, script: Any) -> Any:
        return _ScheduledScript(super().register_script(script), self._cachecheck_scheduler)  # type: ignore[misc]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[misc]
        base = type(pipe)
        cls = _pipeline_classes.get(base)
        if cls is None:
            cls = _pipeline_classes[base] = type(f"Scheduled{base.__name__}", (_ScheduledPipeline, base), {})
        pipe.__class__ = cls
        pipe._cachecheck_scheduler = self._cachecheck_scheduler
        pipe._cachecheck_policy = self._cachecheck_policy
        return pipe


class _ScheduledPipeline:
    _cachecheck_scheduler: Scheduler
    _cachecheck_policy: Any = None

    def execute(self, raise_on_error: bool = True) -> Any:
        parent = super()
        text = _render_stack(self)
        if self._cachecheck_policy is None:
            return self._cachecheck_scheduler.point("redis", text, lambda: parent.execute(raise_on_error))
        return self._cachecheck_scheduler.point("redis", text, lambda: self._confined(parent, raise_on_error))

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
        return self._cachecheck_scheduler.point("redis", render_command(args), action)


class _Queue:
    """Lets a policy queue commands on a pipeline's stack without redis-py's own bookkeeping."""

    def __init__(self, stack: list) -> None:
        self.stack = stack

    def execute_command(self, *args: Any) -> None:
        self.stack.append((args, {}))


class _ScheduledScript:
    """A registered Lua script: one point per call, its NOSCRIPT fallback included.

    redis-py sends ``EVALSHA``, and on ``NOSCRIPT`` loads the script and sends it again; Redis
    runs the script atomically either way, so the whole call is one scheduling point and the
    trace does not depend on whether the script was already cached.
    """

    def __init__(self, script: Any, scheduler: Scheduler) -> None:
        self._script = script
        self._scheduler = scheduler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._script, name)

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        keys, args = list(keys or ()), list(args or ())
        text = render_command(["EVALSHA", self._script.sha, len(keys), *keys, *args])
        return self._scheduler.point("redis", text, lambda: self._script(keys, args, client))

"""The built-in property checkers, and :func:`check`, which runs them with any others.

A checker is a pure function of a :class:`~pytest_cachecheck.history.History` and a
:class:`~pytest_cachecheck.contract.Contract`, registered as a ``cachecheck_check`` hook
implementation (see :mod:`pytest_cachecheck.hooks`).  One module per property family, each with
its definition written down:

* :mod:`.staleness` — ``stale-read`` and ``phantom-read``
* :mod:`.session` — ``read-your-writes`` and ``monotonic-reads``
* :mod:`.divergence` — ``divergence`` (``unknown`` when the run never reached quiescence)
* :mod:`.durability` — ``lost-write`` and ``reordering``
* :mod:`.errors` — ``errors``
* :mod:`.confinement` — ``confinement`` and ``process-hazards``
* :mod:`.locks` — ``mutual-exclusion``, ``lock-release-by-non-owner`` and ``lock-leak``
* :mod:`.stampede` — ``stampede`` (figures on every target; a finding only under ``Contract(stampede=n)``)

Because checkers only read the history, a saved history re-checked later gives the same
verdicts.

>>> from pytest_cachecheck.contract import Contract
>>> from pytest_cachecheck.history import Complete, History, Invoke
>>> history = History.of([
...     Invoke(step=0, time=0.0, client=0, op=0, kind="write", key="u1", value="u1.v0"),
...     Complete(step=1, time=0.0, client=0, op=0),
...     Invoke(step=2, time=1.0, client=1, op=1, kind="write", key="u1", value="u1.v1"),
...     Complete(step=3, time=2.0, client=1, op=1),
...     Invoke(step=4, time=7.0, client=2, op=2, kind="read", key="u1"),
...     Complete(step=5, time=7.0, client=2, op=2, value="u1.v0"),
... ])
>>> for verdict in check(history, Contract.strict()):
...     print(verdict.property, verdict.status)
confinement ok
divergence unknown
errors ok
lock-leak ok
lock-release-by-non-owner ok
lost-write unknown
monotonic-reads ok
mutual-exclusion ok
phantom-read ok
process-hazards ok
read-your-writes ok
reordering unknown
stale-read violated
stampede ok
>>> [stale] = [v for v in check(history, Contract.strict()) if v.property == "stale-read"]
>>> print(stale.violations[0].message)
client 2 read u1 at step 4 (t=7 s) and got the initial value u1.v0, but client 1's write of u1.v1 was acknowledged at step 3 (t=2 s): 5 s stale, 1 write behind.
>>> check(history, Contract.bounded(10))[-1].status  # 5 s stale is within 10 s.
'ok'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pluggy

from .. import hooks
from ..contract import Contract
from ..history import History
from ..verdict import Verdict
from . import confinement, divergence, durability, errors, locks, session, staleness, stampede

__all__ = ["BUILTIN_CHECKERS", "check", "checker_manager"]

BUILTIN_CHECKERS = (staleness, session, divergence, durability, errors, confinement, locks, stampede)
"""The checker modules every run is judged by."""


def checker_manager(plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """A fresh plugin manager with the built-in checkers and ``plugins`` registered.

    A plugin is any object (module, class instance) with a ``cachecheck_check`` function marked
    ``@pytest_cachecheck.hooks.hookimpl``.
    """
    manager = pluggy.PluginManager(hooks.PROJECT)
    manager.add_hookspecs(hooks)
    for plugin in (*BUILTIN_CHECKERS, *plugins):
        manager.register(plugin)
        if callable(getattr(plugin, "cachecheck_check", None)) and not _impls_of(manager, plugin):
            raise TypeError(
                f"{_name(plugin)} defines cachecheck_check without the hook marker, so it would "
                f"never run; decorate it with @pytest_cachecheck.hooks.hookimpl."
            )
    return manager


def check(
    history: History,
    contract: Contract,
    plugins: Iterable[object] = (),
    *,
    manager: pluggy.PluginManager | None = None,
) -> list[Verdict]:
    """Judge ``history`` against ``contract``: every checker's verdicts, sorted by property.

    ``plugins`` add checkers to the built-in ones; an exploration passes a ``manager`` built
    once by :func:`checker_manager` instead, since registering costs more than checking.  A
    checker may return one :class:`~pytest_cachecheck.verdict.Verdict`, an iterable of them, or
    ``None``; anything else raises :class:`TypeError` naming the plugin.
    """
    if manager is None:
        manager = checker_manager(plugins)
    elif plugins:
        raise TypeError("check() takes plugins= or manager=, not both")
    arguments = {"history": history, "contract": contract}
    verdicts: list[Verdict] = []
    # Each implementation is called by hand, not through ``manager.hook``, so that a bad return
    # value can be traced to the plugin that produced it.
    for impl in manager.hook.cachecheck_check.get_hookimpls():
        if impl.hookwrapper or impl.wrapper:
            raise TypeError(
                f"{_name(impl.plugin)} implements cachecheck_check as a hook wrapper; checkers are "
                f"plain hook implementations that return verdicts."
            )
        result = impl.function(*(arguments[name] for name in impl.argnames))
        verdicts.extend(_verdicts(result, impl.plugin))
    return sorted(verdicts, key=lambda verdict: verdict.property)


def _verdicts(result: Any, plugin: object) -> list[Verdict]:
    """``result`` as a list of verdicts, or a TypeError naming ``plugin``."""
    if result is None:
        return []
    if isinstance(result, Verdict):
        return [result]
    if isinstance(result, Iterable) and not isinstance(result, (str, bytes, Mapping)):
        items = list(result)
        for item in items:
            if not isinstance(item, Verdict):
                raise TypeError(
                    f"cachecheck_check of {_name(plugin)} returned an iterable containing "
                    f"{item!r}; every item must be a pytest_cachecheck.verdict.Verdict."
                )
        return items
    raise TypeError(
        f"cachecheck_check of {_name(plugin)} returned {result!r}; return a "
        f"pytest_cachecheck.verdict.Verdict, an iterable of them, or None."
    )


def _impls_of(manager: pluggy.PluginManager, plugin: object) -> list[Any]:
    return [impl for impl in manager.hook.cachecheck_check.get_hookimpls() if impl.plugin is plugin]


def _name(plugin: object) -> str:
    """A plugin as a reader would recognise it: its module name, or its class and repr."""
    name = getattr(plugin, "__name__", None)
    return f"plugin {name}" if isinstance(name, str) else f"plugin {plugin!r}"

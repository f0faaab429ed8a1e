"""The pytest plugin: ``--cachecheck``, the ``cachecheck_explore`` fixture, and the summary.

A test explores a target through the fixture::

    @pytest.mark.cachecheck
    def test_profiles(cachecheck_explore):
        cachecheck_explore(Target(name="profiles", build=..., read="get", write=...))

Exploration is off unless ``--cachecheck`` (or ``cachecheck = true`` in the ini file) is given:
tests marked ``cachecheck`` or using a ``cachecheck_*`` fixture are then skipped with the reason.
Every option has an ini twin; the session seed is shown in the header, and each test derives
its own seed from it and its node id, so one test's failure replays alone with the same seed.
A ``conftest.py`` or plugin defining ``cachecheck_check`` adds a property to every exploration.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import pytest

from ._explore import Budget, CachecheckFailure, explore
from ._report import Report
from ._run import RunConfig
from .target import Target

_STATE = pytest.StashKey["_SessionState"]()
_SKIP_REASON = "cachecheck exploration is off: run pytest with --cachecheck (or set cachecheck = true in the ini file)"


def _positive_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise pytest.UsageError(f"{name}={text!r}: expected a positive whole number, e.g. {name}=200")
        return value

    return parse


def _positive_seconds(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if not value > 0:
            raise pytest.UsageError(f"{name}={text!r}: expected a positive number of seconds, e.g. {name}=5")
        return value

    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise pytest.UsageError(
            f"--cachecheck-seed={text!r}: expected a whole number, e.g. the seed shown in the header"
        ) from None
    if value < 0:
        raise pytest.UsageError(f"--cachecheck-seed={text!r}: the seed must be >= 0")
    return value


# name, ini type, default, parser, help
_OPTIONS: list[tuple[str, str, str, Callable[[str], Any], str]] = [
    ("examples", "string", "500", _positive_int("--cachecheck-examples"), "interleavings explored per target"),
    ("steps", "string", "20", _positive_int("--cachecheck-steps"), "decisions (operations, steps, ticks) per interleaving"),
    (
        "watchdog",
        "string",
        "5",
        _positive_seconds("--cachecheck-watchdog"),
        "wall seconds a client may run without reaching a scheduling point before it is reported as hung",
    ),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cachecheck", "consistency testing of caching layers")
    group.addoption(
        "--cachecheck",
        action="store_true",
        dest="cachecheck",
        default=None,
        help="explore cachecheck targets (tests marked cachecheck are skipped without it)",
    )
    parser.addini("cachecheck", "explore cachecheck targets, like --cachecheck", type="bool", default=False)
    group.addoption(
        "--cachecheck-seed",
        dest="cachecheck_seed",
        type=_seed,
        default=None,
        help="seed of the exploration (default: a fresh one, shown in the header)",
    )
    for name, kind, default, parse, text in _OPTIONS:
        group.addoption(
            f"--cachecheck-{name}",
            dest=f"cachecheck_{name}",
            default=None,
            type=parse,
            help=f"{text} (default {default}; ini cachecheck_{name})",
        )
        parser.addini(f"cachecheck_{name}", text, type=kind, default=default)


@dataclass
class _SessionState:
    enabled: bool
    seed: int
    budget: Budget
    config: RunConfig
    reports: list[Report] = field(default_factory=list)


def _option(config: pytest.Config, name: str, parse: Callable[[str], Any]) -> Any:
    value = config.getoption(f"cachecheck_{name}")
    if value is not None:
        return value
    text = str(config.getini(f"cachecheck_{name}"))
    try:
        return parse(text)
    except pytest.UsageError as error:
        raise pytest.UsageError(f"ini option cachecheck_{name}: {error}") from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cachecheck: explores a caching layer with pytest-cachecheck; skipped unless --cachecheck is given",
    )
    enabled = config.getoption("cachecheck")
    if enabled is None:
        enabled = bool(config.getini("cachecheck"))
    seed = config.getoption("cachecheck_seed")
    if seed is None:
        seed = random.Random().getrandbits(32)
    parsed = {name: _option(config, name, parse) for name, _, _, parse, _ in _OPTIONS}
    state = _SessionState(
        enabled=enabled,
        seed=seed,
        budget=Budget(examples=parsed["examples"], steps=parsed["steps"], seed=seed),
        config=RunConfig(watchdog=parsed["watchdog"]),
    )
    config.stash[_STATE] = state


def _checker_plugins(config: pytest.Config) -> list[Any]:
    """Every registered plugin or conftest that defines ``cachecheck_check``, in a stable order."""
    found = [p for p in config.pluginmanager.get_plugins() if callable(getattr(p, "cachecheck_check", None))]
    return sorted(found, key=lambda p: str(getattr(p, "__file__", None) or getattr(p, "__name__", None) or repr(p)))


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return None
    if not state.enabled:
        return "cachecheck: off (use --cachecheck to explore)"
    return (
        f"cachecheck: seed={state.seed} (replay with --cachecheck-seed={state.seed}), "
        f"{state.budget.examples} examples x {state.budget.steps} steps per target"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[_STATE]
    if state.enabled:
        return
    skip = pytest.mark.skip(reason=_SKIP_REASON)
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if item.get_closest_marker("cachecheck") or any(name.startswith("cachecheck_") for name in fixtures):
            item.add_marker(skip)


def _test_seed(session_seed: int, nodeid: str, target: Target) -> int:
    return zlib.crc32(f"{session_seed}:{nodeid}:{target.name}".encode())


@pytest.fixture
def cachecheck_explore(request: pytest.FixtureRequest) -> Callable[..., Report]:
    """Explore a :class:`~pytest_cachecheck.Target`; fail the test with the story if it breaks.

    Call it as ``cachecheck_explore(target, examples=None, steps=None, plugins=())``; returns the
    :class:`~pytest_cachecheck.Report` of a passing exploration.
    """
    state: _SessionState = request.config.stash[_STATE]
    if not state.enabled:
        pytest.skip(_SKIP_REASON)

    def run(
        target: Target,
        *,
        examples: int | None = None,
        steps: int | None = None,
        plugins: tuple[Any, ...] = (),
    ) -> Report:
        __tracebackhide__ = True
        if not isinstance(target, Target):
            raise TypeError(f"cachecheck_explore takes a pytest_cachecheck.Target, not {target!r}")
        budget = replace(
            state.budget,
            examples=examples or state.budget.examples,
            steps=steps or state.budget.steps,
            seed=_test_seed(state.seed, request.node.nodeid, target),
            replay=f"pytest {request.node.nodeid} --cachecheck --cachecheck-seed={state.seed}",
        )
        checkers = (*_checker_plugins(request.config), *plugins)
        try:
            report = explore(target, budget, plugins=checkers, config=state.config)
        except CachecheckFailure as failure:
            report, story = failure.report, str(failure)
        else:
            story = None
        state.reports.append(report)
        if story is not None:
            pytest.fail(story, pytrace=False)
        return report

    return run


@pytest.fixture
def cachecheck_seed(request: pytest.FixtureRequest) -> int:
    """The session's exploration seed (shown in the header)."""
    return request.config.stash[_STATE].seed


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or not state.reports:
        return
    terminalreporter.section("cachecheck")
    for report in state.reports:
        for line in report.summary_lines():
            terminalreporter.write_line(line)

"""The pytest plugin: ``--cachecheck``, the ``cachecheck_explore`` fixture, and the summary.

A test explores a target through the fixture::

    @pytest.mark.cachecheck
    def test_profiles(cachecheck_explore):
        cachecheck_explore(Target(name="profiles", build=..., read="get", write=...))

Exploration is off unless ``--cachecheck`` (or ``cachecheck = true`` in the ini file) is given:
tests marked ``cachecheck`` or using ``cachecheck_explore`` are then skipped with the reason.
Every option has an ini twin; the session seed is shown in the header, and each test derives
its own seed from it and its node id, so one test's failure replays alone with the same seed.
A ``conftest.py`` or plugin defining ``cachecheck_check`` adds a property to every exploration.
"""

from __future__ import annotations

import os
import random
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import settings

from .backends._environment import EnvironmentFailure, close_backend
from .backends._private_redis import PrivateRedis, PrivateRedisError
from .backends._servers import ServerError, Servers, check_db, check_redis
from .checkers import checker_manager
from .exploration._explore import Budget, CachecheckFailure, explore
from .exploration._run import RunConfig
from .history._printable import printable
from .report._report import Report
from .target import Target

_STATE = pytest.StashKey["_SessionState"]()
_SWEPT = pytest.StashKey[list]()
"""Lines saying what dead runs' leftovers checking the servers removed, for the header."""
_EXPLORING_FIXTURES = frozenset({"cachecheck_explore", "cachecheck_seed"})
"""Tests using these are skipped when exploration is off (``cachecheck_private_redis`` is not)."""
_SKIP_REASON = "cachecheck exploration is off: run pytest with --cachecheck (or set cachecheck = true in the ini file)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError("expected a positive whole number")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError("expected a positive number of seconds")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


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


def _command_line(name: str, parse: Callable[[str], Any], default: str) -> Callable[[str], Any]:
    """``parse`` for ``--cachecheck-NAME``, failing with a usage error that shows a good value."""

    def parse_option(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise pytest.UsageError(f"--cachecheck-{name}={text!r}: {error}, e.g. --cachecheck-{name}={default}") from None

    return parse_option


# name, default, parser, help
_OPTIONS: list[tuple[str, str, Callable[[str], Any], str]] = [
    ("examples", "500", _positive_int, "interleavings explored per target"),
    ("steps", "20", _positive_int, "decisions (operations, resumes, ticks) per interleaving"),
    (
        "watchdog",
        "5",
        _positive_seconds,
        "wall seconds a client may run without reaching a scheduling point before it is reported as hung",
    ),
]


# name, metavar, what it names
_SERVER_OPTIONS = [
    ("redis", "URL", "this Redis server, confined to a key prefix (default: embedded fakeredis)"),
    ("db", "DSN", "this PostgreSQL database, in a private schema (default: embedded SQLite)"),
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
    parser.addini("cachecheck", "explore cachecheck targets, like --cachecheck (true/false)", default="false")
    group.addoption(
        "--cachecheck-seed",
        dest="cachecheck_seed",
        type=_seed,
        default=None,
        help="seed of the exploration (default: a fresh one, shown in the header)",
    )
    for name, metavar, what in _SERVER_OPTIONS:
        group.addoption(
            f"--cachecheck-{name}",
            dest=f"cachecheck_{name}",
            default=None,
            metavar=metavar,
            help=f"explore on {what} (ini cachecheck_{name}; env CACHECHECK_{name.upper()})",
        )
        parser.addini(f"cachecheck_{name}", f"{metavar} to explore on, like --cachecheck-{name}", default="")
    group.addoption(
        "--cachecheck-allow-remote",
        action="store_true",
        dest="cachecheck_allow_remote",
        default=None,
        help="allow servers that are not on this machine (ini cachecheck_allow_remote; env CACHECHECK_ALLOW_REMOTE)",
    )
    parser.addini("cachecheck_allow_remote", "allow non-loopback servers (true/false)", default="false")
    group.addoption(
        "--cachecheck-unconfined",
        action="store_true",
        dest="cachecheck_unconfined",
        default=None,
        help=(
            "run on servers where the login cannot create a per-run Redis ACL user or PostgreSQL role: "
            "the layer is then NOT confined by the servers (ini cachecheck_unconfined; env CACHECHECK_UNCONFINED)"
        ),
    )
    parser.addini("cachecheck_unconfined", "run without server-enforced confinement (true/false)", default="false")
    for name, default, parse, text in _OPTIONS:
        group.addoption(
            f"--cachecheck-{name}",
            dest=f"cachecheck_{name}",
            default=None,
            type=_command_line(name, parse, default),
            help=f"{text} (default {default}; ini cachecheck_{name})",
        )
        parser.addini(f"cachecheck_{name}", text, default=default)


@dataclass
class _SessionState:
    enabled: bool
    seed: int
    budget: Budget
    config: RunConfig
    reports: list[Report] = field(default_factory=list)
    servers: Servers = field(default_factory=lambda: Servers())


def _ini(config: pytest.Config, name: str, parse: Callable[[str], Any], example: str) -> Any:
    text = str(config.getini(name))
    try:
        return parse(text)
    except ValueError as error:
        raise pytest.UsageError(f"ini option {name} = {text!r}: {error}, e.g. {name} = {example}") from None


def _option(config: pytest.Config, name: str, parse: Callable[[str], Any], default: str) -> Any:
    value = config.getoption(f"cachecheck_{name}")
    return value if value is not None else _ini(config, f"cachecheck_{name}", parse, default)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cachecheck: explores a caching layer with pytest-cachecheck; skipped unless --cachecheck is given",
    )
    enabled = config.getoption("cachecheck")
    if enabled is None:
        enabled = _ini(config, "cachecheck", _boolean, "true")
    seed = config.getoption("cachecheck_seed")
    if seed is None:
        seed = random.Random().getrandbits(32)
    parsed = {name: _option(config, name, parse, default) for name, default, parse, _ in _OPTIONS}
    state = _SessionState(
        enabled=enabled,
        seed=seed,
        # The current Hypothesis profile's database (``.hypothesis/`` by default): a failure
        # found once is replayed first next time, as Hypothesis users expect.
        budget=Budget(examples=parsed["examples"], steps=parsed["steps"], seed=seed, database=settings().database),
        config=RunConfig(watchdog=parsed["watchdog"]),
    )
    config.stash[_STATE] = state
    config.stash[_SWEPT] = []
    state.servers = _servers(config, connect=enabled)


def _servers(config: pytest.Config, *, connect: bool) -> Servers:
    """The real servers named on the command line, in the environment or the ini file, checked."""

    def setting(name: str) -> str | None:
        value = config.getoption(f"cachecheck_{name}") or os.environ.get(f"CACHECHECK_{name.upper()}")
        return value or str(config.getini(f"cachecheck_{name}")) or None

    def flag(name: str) -> bool:
        value = config.getoption(f"cachecheck_{name}")
        if value is not None:
            return bool(value)
        env = os.environ.get(f"CACHECHECK_{name.upper()}")
        if env:
            try:
                return _boolean(env)
            except ValueError as error:
                raise pytest.UsageError(f"CACHECHECK_{name.upper()}={env!r}: {error}, e.g. CACHECHECK_{name.upper()}=1") from None
        return _ini(config, f"cachecheck_{name}", _boolean, "true")

    allow, unconfined = flag("allow_remote"), flag("unconfined")
    servers = Servers(redis_url=setting("redis"), db_dsn=setting("db"), allow_remote=allow, unconfined=unconfined)
    try:
        if servers.redis_url:
            check_redis(servers.redis_url, allow_remote=allow, connect=connect, unconfined=unconfined)
        if servers.db_dsn:
            swept = check_db(servers.db_dsn, allow_remote=allow, connect=connect, unconfined=unconfined)
            if swept:
                config.stash[_SWEPT].append(swept)
    except ServerError as error:
        raise pytest.UsageError(str(error)) from None
    return servers


def _checker_plugins(config: pytest.Config) -> list[Any]:
    """Every registered plugin or conftest that defines ``cachecheck_check``, in a stable order."""
    found = [p for p in config.pluginmanager.get_plugins() if callable(getattr(p, "cachecheck_check", None))]
    return sorted(found, key=lambda p: str(getattr(p, "__file__", None) or getattr(p, "__name__", None) or repr(p)))


def pytest_report_header(config: pytest.Config) -> str | list[str] | None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return None
    if not state.enabled:
        return "cachecheck: off (use --cachecheck to explore)"
    header = (
        f"cachecheck: seed={state.seed} (replay with --cachecheck-seed={state.seed}), "
        f"{state.budget.examples} examples x {state.budget.steps} steps per target, "
        f"on {state.servers.describe()}"
    )
    return [header, *config.stash.get(_SWEPT, [])]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[_STATE]
    if state.enabled:
        return
    skip = pytest.mark.skip(reason=_SKIP_REASON)
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if item.get_closest_marker("cachecheck") or _EXPLORING_FIXTURES.intersection(fixtures):
            item.add_marker(skip)


def _budget_flags(state: _SessionState, examples: int | None, steps: int | None) -> str:
    """The budget options a replay needs, when the session's differ from the defaults."""
    flags = ""
    if examples is None and state.budget.examples != int(_OPTIONS[0][1]):
        flags += f" --cachecheck-examples={state.budget.examples}"
    if steps is None and state.budget.steps != int(_OPTIONS[1][1]):
        flags += f" --cachecheck-steps={state.budget.steps}"
    return flags


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
        for name, value in (("examples", examples), ("steps", steps)):
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"cachecheck_explore({name}={value!r}): expected a positive whole number or None")
        where = request.config.invocation_params.dir
        node = Path(os.path.relpath(request.node.path, where)).as_posix()
        test_id = "::".join([node, *request.node.nodeid.split("::")[1:]])
        budget = replace(
            state.budget,
            examples=state.budget.examples if examples is None else examples,
            steps=state.budget.steps if steps is None else steps,
            seed=_test_seed(state.seed, request.node.nodeid, target),
            replay=f"pytest {test_id} --cachecheck --cachecheck-seed={state.seed}" + _budget_flags(state, examples, steps),
            key=f"{request.node.nodeid}:{target.name}",
        )
        checkers = (*_checker_plugins(request.config), *plugins)
        try:
            checker_manager(checkers)
        except TypeError as error:
            pytest.fail(f"cachecheck: {error}", pytrace=False)
        try:
            backend = state.servers.backend()
        except Exception as error:  # a server that passed the checks went away since
            reason = printable((str(error).strip().splitlines() or [type(error).__name__])[0])
            pytest.fail(f"cachecheck: cannot open {state.servers.describe()}: {reason}", pytrace=False)
        _announce_sweeps(request.config, backend)
        report: Report | None = None
        story: str | None = None
        environment: EnvironmentFailure | None = None
        try:
            report = explore(target, budget, plugins=checkers, config=state.config, backend=backend)
        except CachecheckFailure as failure:
            report, story = failure.report, str(failure)
        except EnvironmentFailure as failure:  # a server failed: one line, no story, no figures
            environment = failure
        finally:
            cleanup = close_backend(
                backend,
                quietly=environment is not None,
                where=test_id,
                example=report.examples if report is not None else None,
            )
        if environment is None and story is None:
            environment = cleanup
        if report is not None:
            state.reports.append(report)
            request.node.user_properties.extend(_junit_properties(report, state.seed))
        if environment is not None:
            pytest.fail(environment.line(test_id), pytrace=False)
        if story is not None:
            pytest.fail(story, pytrace=False)
        return report

    return run


def _junit_properties(report: Report, session_seed: int) -> list[tuple[str, object]]:
    """What a CI dashboard shows of one exploration (``--junitxml``), as ``record_property`` would:
    one ``cachecheck.<target>.<figure>`` per figure, so a test exploring several targets keeps
    each apart."""
    violated = sorted(name for name, status in report.properties.items() if status == "violated")
    figures: dict[str, object] = {
        "verdict": "passed" if report.passed else "failed",
        "violated": ",".join(violated),
        "session_seed": session_seed,
        "test_seed": report.seed,
        "examples": report.examples,
        "stale_window_s": round(report.stale_window, 6),
        "longest_divergence_s": round(report.longest_divergence, 6),
        "stampede_max": int(report.stampede_max),
        "holders_past_expiry": report.holders_past_expiry,
        "backend": report.backend,
    }
    return [(f"cachecheck.{report.target.name}.{name}", value) for name, value in figures.items()]


def _announce_sweeps(config: pytest.Config, backend: Any) -> None:
    """Say, one line each, what dead runs' leftovers opening ``backend`` removed from a server."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    for side in (backend.cache, backend.source):
        line = getattr(side, "swept", None)
        if not line or reporter is None:
            continue
        if capture is None:
            reporter.write_line(line)
        else:  # said to the terminal now, not kept in the test's captured output
            with capture.global_and_fixture_disabled():
                reporter.write_line(line)


@pytest.fixture
def cachecheck_private_redis() -> Any:
    """A redis-server of the test's own on a free loopback port, with ``kill()`` (kill -9),
    ``restart()`` and ``url``; stopped and removed after the test.  Skips when redis-server is
    not installed."""
    try:
        server = PrivateRedis()
    except PrivateRedisError as error:
        pytest.skip(str(error))
    with server:
        yield server


@pytest.fixture
def cachecheck_seed(request: pytest.FixtureRequest) -> int:
    """The session's exploration seed (shown in the header)."""
    return request.config.stash[_STATE].seed


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or not state.reports:
        return
    terminalreporter.section("cachecheck")
    brief = config.get_verbosity() <= -2  # -qq: one line per target, its verdict
    for report in state.reports:
        for line in report.summary_lines()[:1] if brief else report.summary_lines():
            terminalreporter.write_line(line)

"""The pytest plugin, tested the way pytest-randomly and xdist test theirs: write a test file,
run pytest on it with ``pytester``, assert the outcomes and the output.

The generated tests explore the shipped seed layer (racy) and its lease variant (correct) with
small budgets.  A test's exploration seed is derived from the session seed and its node id, so
the generated file is always named ``test_layer.py``: the seeds pinned here depend on it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

LAYERS = """
import pytest

from pytest_cachecheck.strategies.cache_aside import SeedCacheAside
from pytest_cachecheck.strategies.catalogue import seed_interface as layer
from pytest_cachecheck.strategies.leases import LeasedCacheAside


@pytest.mark.cachecheck
def test_racy(cachecheck_explore):
    cachecheck_explore(layer("racy", SeedCacheAside))


@pytest.mark.cachecheck
def test_leased(cachecheck_explore):
    cachecheck_explore(layer("leased", LeasedCacheAside))
"""

# A seed for which the racy layer's race is found within the budget (at its 13th example, for
# the node id test_layer.py::test_racy; the shrunk story takes ~90 examples in all), and the lease
# layer passes.  The budget only bounds the lease layer's run (~4 s for 300 examples), since an
# exploration stops at its first failure.
RACE_SEED = 12
RACE_OPTIONS = ("--cachecheck", f"--cachecheck-seed={RACE_SEED}", "--cachecheck-examples=300")
SMALL = ("--cachecheck", "--cachecheck-seed=7", "--cachecheck-examples=10")
EXPLORED = re.compile(r"explored: (\d+) examples?, (\d+) scheduling steps, (\d+) operations")

# Runs that find a failure go through a subprocess in a directory of pytester's: Hypothesis may
# save a failure in an example database under the working directory and replay it first next
# time, and an in-process run would share the outer session's (the repository's) database.


@pytest.fixture
def layers(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_layer=LAYERS)
    return pytester


def summary(result: pytest.RunResult) -> str:
    """The text of the ``cachecheck`` terminal summary section."""
    text = result.stdout.str()
    start = re.search(r"^=+ cachecheck =+$", text, re.M)
    assert start, f"no cachecheck summary section in:\n{text}"
    end = re.search(r"^=+ .* =+$", text[start.end() :], re.M)
    return text[start.end() : start.end() + end.start()] if end else text[start.end() :]


def explored(result: pytest.RunResult, target: str) -> tuple[int, int, int]:
    """(examples, scheduling steps, operations) of ``target`` in the summary."""
    section = summary(result)
    block = section[section.index(f"{target}: ") :]
    examples, points, operations = EXPLORED.search(block).groups()
    return int(examples), int(points), int(operations)


# --- off by default -------------------------------------------------------------------------

OFF_BY_DEFAULT = """
import pytest

from pytest_cachecheck import Target
from pytest_cachecheck.strategies.leases import LeasedCacheAside

LEASED = Target(
    name="leased",
    build=LeasedCacheAside,
    read="get_user",
    write=lambda layer, key, value: layer.update_user(key, {"name": value}),
    observe=lambda user: user and user["name"],
)


@pytest.mark.cachecheck
def test_marked():
    pass


def test_uses_fixture(cachecheck_explore):
    cachecheck_explore(LEASED, examples=5)


def test_uses_seed(cachecheck_seed):
    pass


def test_plain():
    pass
"""


def test_without_cachecheck_marked_and_fixture_tests_are_skipped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_off=OFF_BY_DEFAULT)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(["cachecheck: off (use --cachecheck to explore)"])
    reason = "cachecheck exploration is off: run pytest with --cachecheck (or set cachecheck = true in the ini file)"
    # -rs folds skips with the same location: "SKIPPED [2] test_off.py: <reason>".
    skips = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
    assert all(line.endswith(f": {reason}") for line in skips), skips
    assert sum(int(re.match(r"SKIPPED \[(\d+)\]", line).group(1)) for line in skips) == 3, skips
    result.stdout.no_fnmatch_line("*= cachecheck =*")


def test_cachecheck_option_runs_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_off=OFF_BY_DEFAULT)
    result = pytester.runpytest("--cachecheck", "--cachecheck-seed=7")
    result.assert_outcomes(passed=4)
    # The fixture's own budget (examples=5) wins over the session's.
    result.stdout.fnmatch_lines(["*= cachecheck =*", "leased: PASSED *", "  explored: 5 examples, *"])


def test_ini_cachecheck_true_runs_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_off=OFF_BY_DEFAULT)
    pytester.makeini("[pytest]\ncachecheck = true\ncachecheck_steps = 4\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["cachecheck: seed=* 500 examples x 4 steps per target, on *", "leased: PASSED *"])


def test_cachecheck_seed_fixture_is_the_session_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_seed="""
        def test_seed(cachecheck_seed):
            assert cachecheck_seed == 4242
        """
    )
    pytester.runpytest("--cachecheck", "--cachecheck-seed=4242").assert_outcomes(passed=1)


# --- header and summary ---------------------------------------------------------------------


def test_header_shows_the_seed_and_budget(layers: pytest.Pytester) -> None:
    result = layers.runpytest("--cachecheck", "--cachecheck-seed=4242", "--cachecheck-examples=10", "-k", "leased")
    result.stdout.fnmatch_lines(
        ["cachecheck: seed=4242 (replay with --cachecheck-seed=4242), 10 examples x 20 steps per target, on *"]
    )


def test_header_shows_a_fresh_seed_that_replays(layers: pytest.Pytester) -> None:
    result = layers.runpytest("--cachecheck", "--cachecheck-examples=1", "-k", "leased")
    pattern = r"^cachecheck: seed=(\d+) \(replay with --cachecheck-seed=(\d+)\)"
    header = re.search(pattern, result.stdout.str(), re.M)
    assert header, result.stdout.str()
    assert header.group(1) == header.group(2)


def test_summary_lists_target_verdict_and_figures(layers: pytest.Pytester) -> None:
    result = layers.runpytest(*SMALL, "-k", "leased")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*= cachecheck =*",
            "leased: PASSED (contract: strict (no stale read, converges at quiescence); *)",
            "  verdicts: confinement ok, divergence ok, errors ok, lock-leak ok, lock-release-by-non-owner ok,"
            " lost-write ok, monotonic-reads ok, mutual-exclusion ok, phantom-read ok, process-hazards ok,"
            " read-your-writes ok, reordering ok, stale-read ok, stampede ok",
            "  largest stale-read window: 0 s; longest divergence: 0 s",
            "  explored: 10 examples, * scheduling steps, * operations in *s (test seed *)",
            "  reads: *, hit rate *%, source queries per read *",
            "  stampede: at most * of one missing key (mean *)",
        ]
    )



def test_qq_keeps_one_summary_line_per_target(layers: pytest.Pytester) -> None:
    result = layers.runpytest(*SMALL, "-k", "leased", "-qq")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["leased: PASSED (contract: *)"])
    assert "verdicts:" not in result.stdout.str()
    assert "explored:" not in result.stdout.str()


def test_junit_carries_each_targets_seed_examples_and_verdicts(layers: pytest.Pytester) -> None:
    import xml.etree.ElementTree as ElementTree

    result = layers.runpytest_subprocess(*RACE_OPTIONS, "--junitxml=report.xml")
    result.assert_outcomes(passed=1, failed=1)
    cases = {case.get("name"): case for case in ElementTree.parse(layers.path / "report.xml").iter("testcase")}
    racy = {p.get("name"): p.get("value") for p in cases["test_racy"].iter("property")}
    leased = {p.get("name"): p.get("value") for p in cases["test_leased"].iter("property")}
    assert racy["cachecheck.racy.verdict"] == "failed" and "divergence" in racy["cachecheck.racy.violated"]
    assert leased["cachecheck.leased.verdict"] == "passed" and leased["cachecheck.leased.violated"] == ""
    assert racy["cachecheck.racy.session_seed"] == leased["cachecheck.leased.session_seed"]
    assert int(leased["cachecheck.leased.examples"]) >= 1 and "cachecheck.racy.longest_divergence_s" in racy

# --- the racy layer fails with a story, the lease layer passes --------------------------------


def test_racy_layer_fails_with_the_cache_aside_story(layers: pytest.Pytester) -> None:
    result = layers.runpytest_subprocess(*RACE_OPTIONS, "-k", "racy")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "cachecheck: racy violates divergence (contract: strict (no stale read, converges at quiescence))",
            "[[]divergence[]] client * read the source (u*.v0) at step *;"
            " client * then filled the cache with u*.v0 at step *"
            " The cache disagrees with the source (u*.v1) until the entry expires in 3600 s.",
            "Minimal interleaving (2 decisions);"
            f" replay: pytest test_layer.py::test_racy --cachecheck --cachecheck-seed={RACE_SEED}"
            " --cachecheck-examples=300",
            "state = Racy()",
            "state.do(step=Read(client=*, key='u*', pause_after=2))",
            "state.do(step=Write(client=*, key='u*'))",
            "*= cachecheck =*",
            "racy: FAILED *",
            "  verdicts: confinement ok, divergence violated, *",
        ]
    )
    # The story is the whole failure: no traceback into the harness.
    result.stdout.no_fnmatch_line("*_explore.py*")
    result.stdout.no_fnmatch_line("*pytest_cachecheck*.py*")
    result.stdout.no_fnmatch_line("*Traceback*")


def test_lease_layer_passes_with_the_same_options(layers: pytest.Pytester) -> None:
    result = layers.runpytest(*RACE_OPTIONS, "-k", "leased")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["leased: PASSED *", "  verdicts: confinement ok, divergence ok, *, stale-read ok, stampede ok"])
    assert "violated" not in summary(result)


def failure_section(result: pytest.RunResult) -> str:
    text = result.stdout.str()
    return text[text.index("= FAILURES =") : text.index("= cachecheck =")]


def test_same_seed_gives_byte_identical_failure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two fresh directories, so that neither run can replay the other's saved failure.
    sections = []
    for name in ("first", "second"):
        directory = pytester.mkdir(name)
        (directory / "test_layer.py").write_text(LAYERS)
        monkeypatch.chdir(directory)
        result = pytester.runpytest_subprocess(*RACE_OPTIONS, "-k", "racy")
        result.assert_outcomes(failed=1, deselected=1)
        sections.append(failure_section(result))
    assert "Minimal interleaving" in sections[0]
    assert sections[0] == sections[1]
    # Run again where the second run left its state (and example database, if any): same text.
    again = pytester.runpytest_subprocess(*RACE_OPTIONS, "-k", "racy")
    assert failure_section(again) == sections[0]


# --- bad input --------------------------------------------------------------------------------


WHOLE = "expected a positive whole number"
SECONDS = "expected a positive number of seconds"


@pytest.mark.parametrize(
    "option, message",
    [
        ("--cachecheck-examples=0", f"--cachecheck-examples='0': {WHOLE}, e.g. --cachecheck-examples=*"),
        ("--cachecheck-examples=lots", f"--cachecheck-examples='lots': {WHOLE}, e.g. --cachecheck-examples=*"),
        ("--cachecheck-steps=0", f"--cachecheck-steps='0': {WHOLE}, e.g. --cachecheck-steps=*"),
        ("--cachecheck-seed=-1", "--cachecheck-seed='-1': the seed must be >= 0"),
        ("--cachecheck-seed=abc", "--cachecheck-seed='abc': expected a whole number, e.g. the seed shown in the*"),
        ("--cachecheck-watchdog=0", f"--cachecheck-watchdog='0': {SECONDS}, e.g. --cachecheck-watchdog=*"),
    ],
)
def test_bad_option_is_a_one_line_usage_error(layers: pytest.Pytester, option: str, message: str) -> None:
    result = layers.runpytest("--cachecheck", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert len([line for line in result.stderr.lines if line.strip()]) == 1, result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_bad_ini_value_is_a_usage_error_naming_the_ini_option(layers: pytest.Pytester) -> None:
    layers.makeini("[pytest]\ncachecheck_examples = zero\n")
    result = layers.runpytest("--cachecheck")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: ini option cachecheck_examples = 'zero': expected a positive whole number, e.g. cachecheck_examples = 500"]
    )
    assert len([line for line in result.stderr.lines if line.strip()]) == 1, result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_explore_rejects_what_is_not_a_target(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_not_target="""
        def test_not_target(cachecheck_explore):
            cachecheck_explore({"name": "profiles"})
        """
    )
    result = pytester.runpytest("--cachecheck", "--cachecheck-examples=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E *TypeError: cachecheck_explore takes a pytest_cachecheck.Target, not {'name': 'profiles'}"]
    )


# --- properties added by a conftest -----------------------------------------------------------

OK_PROPERTY = """
from pytest_cachecheck import Verdict, hookimpl


@hookimpl
def cachecheck_check(history, contract):
    return Verdict.of("team-property", [], {"operations": len(history.operations())})
"""

VIOLATED_PROPERTY = """
from pytest_cachecheck import Finding, Verdict, hookimpl


@hookimpl
def cachecheck_check(history, contract):
    writes = [op for op in history.operations() if op.kind == "write" and op.client != 0]
    return Verdict.of(
        "no-writes",
        [Finding("no-writes", f"client {op.client} wrote {op.key} at step {op.invoke_step}") for op in writes],
    )
"""


def test_conftest_property_appears_in_the_verdicts(layers: pytest.Pytester) -> None:
    layers.makeconftest(OK_PROPERTY)
    result = layers.runpytest(*SMALL, "-k", "leased")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["leased: PASSED *", "  verdicts: *, read-your-writes ok, reordering ok, stale-read ok, stampede ok, team-property ok"]
    )


def test_violated_conftest_property_fails_the_exploration_with_its_finding(layers: pytest.Pytester) -> None:
    layers.makeconftest(VIOLATED_PROPERTY)
    result = layers.runpytest_subprocess(
        "--cachecheck", "--cachecheck-seed=5", "--cachecheck-examples=30", "-k", "leased"
    )
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "cachecheck: leased violates no-writes (contract: *)",
            "[[]no-writes[]] client * wrote u* at step *",
            "Minimal interleaving (1 decision*);"
            " replay: pytest test_layer.py::test_leased --cachecheck --cachecheck-seed=5 --cachecheck-examples=30",
            "state.do(step=Write(client=*, key='u*'*))",
            "*= cachecheck =*",
            "leased: FAILED *",
            "  verdicts: *, no-writes violated, *",
        ]
    )


def test_conftest_checker_without_the_marker_is_rejected(layers: pytest.Pytester) -> None:
    layers.makeconftest("def cachecheck_check(history, contract):\n    return None\n")
    result = layers.runpytest(*SMALL, "-k", "leased")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "cachecheck: plugin conftest defines cachecheck_check without the hook marker,"
            " so it would never run; decorate it with @pytest_cachecheck.hooks.hookimpl."
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


# --- the budget options change the figures ----------------------------------------------------


@pytest.mark.parametrize("examples", [1, 10, 30])
def test_examples_option_sets_the_examples_explored(layers: pytest.Pytester, examples: int) -> None:
    # Hypothesis may run a few more than asked on large budgets (1000 asked, ~1005 run); small
    # ones on a passing layer are exact.
    options = ("--cachecheck", "--cachecheck-seed=7", f"--cachecheck-examples={examples}")
    result = layers.runpytest(*options, "-k", "leased")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines([f"  explored: {examples} example*, * scheduling steps, *"])
    assert explored(result, "leased")[0] == examples


def test_steps_option_bounds_the_operations_per_example(layers: pytest.Pytester) -> None:
    short = layers.runpytest(*SMALL, "--cachecheck-steps=2", "-k", "leased")
    long = layers.runpytest(*SMALL, "--cachecheck-steps=20", "-k", "leased")
    short.stdout.fnmatch_lines(["cachecheck: seed=7 *, 10 examples x 2 steps per target, on *"])
    long.stdout.fnmatch_lines(["cachecheck: seed=7 *, 10 examples x 20 steps per target, on *"])
    examples, short_points, short_operations = explored(short, "leased")
    _, long_points, long_operations = explored(long, "leased")
    # Each decision starts at most one operation.
    assert examples == 10 and short_operations <= 2 * examples
    assert long_operations > short_operations and long_points > short_points


# --- a server that fails under the run ------------------------------------------------------------

KILLS_ITS_REDIS = """
import os
import signal

import pytest

from pytest_cachecheck.strategies.catalogue import seed_interface
from pytest_cachecheck.strategies.leases import LeasedCacheAside

READS = [0]


class KillsItsRedis(LeasedCacheAside):
    # The lease layer (correct), whose 30th read first kills the Redis server under it (kill -9).
    def get_user(self, user_id):
        READS[0] += 1
        if READS[0] == 30:
            os.kill(int(os.environ["CACHECHECK_TEST_REDIS_PID"]), signal.SIGKILL)
        return super().get_user(user_id)


@pytest.mark.cachecheck
def test_killed(cachecheck_explore):
    cachecheck_explore(seed_interface("killed", KillsItsRedis))
"""


def test_a_redis_killed_mid_run_is_one_error_line_and_a_failed_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cachecheck_private_redis: Any
) -> None:
    server = cachecheck_private_redis
    pytester.makepyfile(test_killed=KILLS_ITS_REDIS)
    monkeypatch.setenv("CACHECHECK_TEST_REDIS_PID", str(server._process.pid))
    monkeypatch.delenv("CACHECHECK_DB", raising=False)  # the embedded SQLite source: Redis is the fault
    result = pytester.runpytest_subprocess(
        "--cachecheck", f"--cachecheck-redis={server.url}", "--cachecheck-seed=1", "--cachecheck-examples=1000"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    errors = [line for line in result.outlines if line.startswith("cachecheck: environment error")]
    assert len(errors) == 1, result.stdout.str()
    assert re.fullmatch(
        rf"cachecheck: environment error in test_killed\.py::test_killed \(example \d+\): "
        rf"Redis at 127\.0\.0\.1:{server.port} went away \(.*\); check that the server is running",
        errors[0],
    ), errors[0]
    # The failure is that line and nothing else: no traceback, nothing of Hypothesis's.
    text = result.stdout.str()
    section = text[text.index("_ test_killed _") : text.index("short test summary info")]
    body = [line for line in section.splitlines()[1:] if line.strip() and not line.startswith("=")]
    assert body == errors, section
    failures = text[text.index("= FAILURES =") :]
    for noise in ("Traceback", "hypothesis", "Flaky", "ConnectionError"):
        assert noise not in failures, failures
    # Within 10 s of the session's start, cleanup of the dead server included.
    took = float(re.search(r"1 failed in ([\d.]+)s", text).group(1))
    assert took < 10, text

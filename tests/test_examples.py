"""The ``examples/`` suite, run the way a user runs it: ``pytest --cachecheck`` inside ``examples/``.

The main job shows every code sample of the seed document failing with its story, each beside a
variant that passes.  The examples are copied below an ini file as ``examples/``, so their node
ids and the per-test seeds derived from the session seed are the ones they have in the
repository: ``cd examples && pytest --cachecheck --cachecheck-seed=3`` shows what these tests pin.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"
SEEDS = Path(__file__).parents[1].parent / "shared" / "seeds"
SEED_DOCUMENT = SEEDS / "000_91c094cf89f9714a.txt"
SEED = 3


@dataclass(frozen=True)
class SeedSample:
    """One code sample of the seed document in the main job: the test of the seed's code, the
    property its shrunk counterexample violates (one of ``violates``, and no other), its story,
    and the passing variant beside it."""

    sample: str
    test: str
    target: str
    violates: tuple[str, ...]
    fixed_test: str | None
    fixed_target: str | None


SAMPLES = (
    SeedSample("cache-aside", "test_seed_strategies.py::test_seed_cache_aside", "seed-cache-aside", ("divergence",),
               "test_seed_strategies.py::test_leased_cache_aside", "leased-cache-aside"),
    SeedSample("write-through", "test_seed_strategies.py::test_seed_write_through", "seed-write-through",
               ("divergence",), "test_seed_strategies.py::test_versioned_write_through", "versioned-write-through"),
    SeedSample("write-behind (crash)", "test_seed_strategies.py::test_seed_write_behind_crash",
               "seed-write-behind-crash", ("lost-write",),
               "test_seed_strategies.py::test_queued_write_behind_crash", "queued-write-behind"),
    SeedSample("read-through", "test_seed_strategies.py::test_seed_read_through", "seed-read-through", ("stale-read",),
               "test_seed_strategies.py::test_seed_read_through_within_its_ttl", "seed-read-through-bounded"),
    SeedSample("lock", "test_seed_strategies.py::test_seed_get_user_with_lock", "seed-lock",
               ("lock-release-by-non-owner", "mutual-exclusion"),
               "test_seed_strategies.py::test_fenced_token_lock", "fenced-token-lock"),
    SeedSample("early refresh", "test_seed_strategies.py::test_seed_get_with_early_refresh", "seed-early-refresh",
               ("divergence", "stale-read"),
               "test_seed_strategies.py::test_refreshing_cache_aside", "refreshing-cache-aside"),
    # Two seed bugs: the cache-aside race, and a TTL lock with no fence.  No variant of
    # UserProfileCache itself is shipped: its race is cache-aside's, fixed above.
    SeedSample("UserProfileCache", "test_user_profile.py::test_user_profile_cache", "user-profile-cache",
               ("divergence", "mutual-exclusion"), None, None),
)

# Each bug's story, in cache terms: (sample, property) -> the story line.
STORIES = {
    ("cache-aside", "divergence"):
        "[[]divergence[]] client * read the source (u*.v0) at step *, before client *'s write of u*.v1;"
        " client * updated the source (step *) and invalidated the cache (DEL user:u*, step *);"
        " client * then filled the cache with u*.v0 at step * (SETEX user:u* 3600 *)."
        " The cache disagrees with the source (u*.v1) until the entry expires in 3600 s.",
    # The older value reaches the cache after the newer one: the writer's read-back, or a
    # reader's fill on a miss.
    ("write-through", "divergence"):
        "[[]divergence[]] client * read the source (u*) at step *, before client *'s write of u*;"
        " client * updated the source (step *) and updated the cache (SETEX user:u* 3600 *, step *);"
        " client * then * the cache with u* at step * (SETEX user:u* 3600 *)."
        " The cache disagrees with the source (u*) until the entry expires in 3600 s.",
    ("write-behind (crash)", "lost-write"):
        "[[]lost-write[]] client 1's write of u*.v* was acknowledged at step * but never reached the source"
        " (client 1 crashed at step *, before a flush): the source ends on u*",
    ("read-through", "stale-read"):
        "[[]stale-read[]] client * read u* at step * (t=* s) and got * u*.v*, but client *'s write of u*.v*"
        " was acknowledged at step * (t=* s): * s stale, * write* behind.",
    # The shrunk interleaving may or may not pause the writer before its COMMIT; either way the
    # story names the stale read and the late fill.
    ("UserProfileCache", "divergence"):
        "[[]divergence[]] client * read the source (u*.v0) at step *"
        " client * then filled the cache with u*.v0 at step * (SETEX user_profile:u* *)."
        " The cache disagrees with the source (u*.v1) until the entry expires in * s.",
    ("lock", "lock-release-by-non-owner"):
        "[[]lock-release-by-non-owner[]] client * released lock:user:u* at step * (DEL lock:user:u*), but the value"
        " there was client *'s (set at step *, t=* s)*. A bare DEL releases whoever holds the lock now; compare"
        " the token before deleting (a Lua compare-and-delete).",
    ("lock", "mutual-exclusion"):
        "[[]mutual-exclusion[]] client * took lock:user:u* at step * *after its lock expired*fencing token*",
    ("early refresh", "divergence"):
        "[[]divergence[]] client * read the source (u*) at step *, before client *'s write of u*;"
        " * The cache disagrees with the source (u*) until the entry expires in * s.",
    ("early refresh", "stale-read"):
        "[[]stale-read[]] client * read u* at step * (t=* s) and got *, but client *'s write of u*"
        " was acknowledged at step * (t=* s): * s stale, * write* behind.",
    ("UserProfileCache", "mutual-exclusion"):
        "[[]mutual-exclusion[]] client * took lock:user_profile:u* at step * and still wrote user_profile:u*"
        " at step * after its lock expired; *fencing token*",
}


@dataclass(frozen=True)
class MainJob:
    exit_status: int
    stdout: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def matcher(self) -> pytest.LineMatcher:
        return pytest.LineMatcher(self.lines)

    def failed_tests(self) -> set[str]:
        """Node ids of pytest's short summary ``FAILED`` lines."""
        return {line.split()[1] for line in self.lines if line.startswith("FAILED ")}

    def passed_tests(self) -> set[str]:
        """Node ids of the short summary's ``PASSED`` lines (``-rp``)."""
        return {line.split()[1] for line in self.lines if line.startswith("PASSED ")}

    def verdicts(self) -> dict[str, tuple[str, frozenset[str]]]:
        """The cachecheck summary: each target's outcome and the properties it violated."""
        summary: dict[str, tuple[str, frozenset[str]]] = {}
        for line, following in zip(self.lines, self.lines[1:]):
            head = re.match(r"^(\S+): (PASSED|FAILED) \(", line)
            if head and following.startswith("  verdicts: "):
                violated = frozenset(re.findall(r"([\w-]+) violated", following))
                summary[head.group(1)] = (head.group(2), violated)
        return summary

    def failure_section(self, test: str) -> str:
        """The text pytest prints under ``___ test_name ___`` for a failed test."""
        name = test.split("::")[-1]
        start = self.stdout.index(f" {name} _")
        following = re.search(r"\n_{3,} \S+ _{3,}\n|\n={3,} ", self.stdout[start + len(name) + 2 :])
        assert following is not None, f"no end to {name}'s failure section"
        return self.stdout[start : start + len(name) + 2 + following.start()]


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory) -> MainJob:
    """The README's first command, with the seed pinned, on a copy of ``examples/`` whose rootdir
    is one level up (as in the repository), in a process of its own: its example database is
    the copy's, never the repository's."""
    root = tmp_path_factory.mktemp("main-job")
    (root / "pytest.ini").write_text("[pytest]\n")
    copy = root / "examples"
    copy.mkdir()
    for source in EXAMPLES.glob("*.py"):
        shutil.copy(source, copy / source.name)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--cachecheck", f"--cachecheck-seed={SEED}", "-p", "no:cacheprovider", "-rfEp"],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    return MainJob(result.returncode, result.stdout + result.stderr)


def test_the_main_job_exits_1_with_exactly_the_seeds_bugs_failing(main_job: MainJob) -> None:
    assert main_job.exit_status == 1, main_job.stdout
    assert main_job.failed_tests() == {sample.test for sample in SAMPLES}, main_job.stdout
    fixed = {sample.fixed_test for sample in SAMPLES if sample.fixed_test}
    assert main_job.passed_tests() == fixed, main_job.stdout
    # Nothing else: no error, no skip (warnings aside).
    main_job.matcher().re_match_lines([rf"=+ {len(SAMPLES)} failed, {len(fixed)} passed(, \d+ warnings?)? in "])


@pytest.mark.parametrize("sample", SAMPLES, ids=[sample.sample for sample in SAMPLES])
def test_each_seed_sample_fails_with_its_story_and_its_variant_passes(main_job: MainJob, sample: SeedSample) -> None:
    section = main_job.failure_section(sample.test)
    headline = re.search(rf"^cachecheck: {re.escape(sample.target)} violates (\S+) \(contract: ", section, re.M)
    assert headline is not None and headline.group(1) in sample.violates, section
    violated = headline.group(1)
    assert main_job.verdicts().get(sample.target) == ("FAILED", frozenset({violated})), main_job.stdout
    pytest.LineMatcher(section.splitlines()).fnmatch_lines(
        [
            STORIES[sample.sample, violated],
            f"Minimal interleaving (* decision*); replay: pytest {sample.test} --cachecheck --cachecheck-seed={SEED}",
        ]
    )
    if sample.fixed_target is not None:
        assert main_job.verdicts().get(sample.fixed_target) == ("PASSED", frozenset()), main_job.stdout


def test_the_main_job_tells_its_seed_and_budget_and_each_targets_verdicts(main_job: MainJob) -> None:
    main_job.matcher().fnmatch_lines(
        [
            f"cachecheck: seed={SEED} (replay with --cachecheck-seed={SEED}),"
            " 500 examples x 20 steps per target, on *",
            "*_ test_seed_cache_aside _*",
            "Minimal interleaving (2 decisions); replay: pytest test_seed_strategies.py::test_seed_cache_aside"
            f" --cachecheck --cachecheck-seed={SEED}",
            "*= cachecheck =*",
            "seed-cache-aside: FAILED *",
            "  verdicts: confinement ok, divergence violated, *, single-source-query ok, *",
            "leased-cache-aside: PASSED *",
            "  verdicts: confinement ok, divergence ok, errors ok, *lost-write ok, *stale-read ok, stampede ok*",
            "seed-read-through-bounded: PASSED (contract: bounded staleness of 3600 s; *",
            "  verdicts: *, stale-read ok (* within contract)*",
            "user-profile-cache: FAILED *",
        ]
    )


DOUBLE_CHECK = """
import json

import pytest

from pytest_cachecheck import Target
from pytest_cachecheck.strategies.cache_aside import SeedCacheAside


class DoubleCheck(SeedCacheAside):
    '''Reads the source, then reads it again "to be sure" before filling.'''

    def get_user(self, user_id):
        cached = self.r.get(f"user:{user_id}")
        if cached:
            return json.loads(cached)
        self.db.query("SELECT * FROM users WHERE id = %s", user_id)
        user = self.db.query("SELECT * FROM users WHERE id = %s", user_id)
        self.r.setex(f"user:{user_id}", 3600, json.dumps(user))
        return user


@pytest.mark.cachecheck
def test_double_check(cachecheck_explore):
    cachecheck_explore(
        Target(
            name="double-check",
            build=DoubleCheck,
            read="get_user",
            write=lambda layer, key, value: layer.update_user(key, {"name": value}),
            observe=lambda user: user and user["name"],
        )
    )
"""


def test_custom_property_fails_a_read_that_queries_the_source_twice(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((EXAMPLES / "conftest.py").read_text())
    pytester.makepyfile(test_double_check=DOUBLE_CHECK)
    # In a subprocess: its example database, if any, is in pytester's directory, not the repository's.
    result = pytester.runpytest_subprocess("--cachecheck", "--cachecheck-seed=1", "--cachecheck-examples=50")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "cachecheck: double-check violates single-source-query (contract: *)",
            "[[]single-source-query[]] client *'s read of u* queried the source 2 times (steps *, *)",
            "Minimal interleaving (1 decision*); *",
            "state.do(step=Read(client=*, key='u*'*))",
            "*= cachecheck =*",
            "double-check: FAILED *",
            "  verdicts: *, single-source-query violated, *",
        ]
    )


def code_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_user_profile_adapter_is_at_most_20_lines_of_code() -> None:
    text = (EXAMPLES / "test_user_profile.py").read_text()
    start = text.index("# --- adapter")
    end = text.index("# --- end of adapter ---")
    adapter = code_lines(text[text.index("\n", start) : end])
    assert adapter, "the adapter markers enclose no code"
    assert len(adapter) <= 20, f"the adapter is {len(adapter)} lines of code:\n" + "\n".join(adapter)


def normalised(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_user_profile_cache_is_the_seeds_verbatim() -> None:
    if not SEED_DOCUMENT.exists():
        pytest.skip(f"the seed document is not checked out beside the repository ({SEED_DOCUMENT})")
    seed = SEED_DOCUMENT.read_text()
    start = seed.index("class UserProfileCache:")
    seed_class = seed[start : seed.index("This implementation handles the common edge cases:", start)]
    ours = (EXAMPLES / "user_profile.py").read_text()
    our_class = ours[ours.index("class UserProfileCache:") :]
    assert normalised(our_class) == normalised(seed_class)
    assert len(normalised(seed_class)) > 100  # the whole class, not a fragment of it

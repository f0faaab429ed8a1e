"""The ``examples/`` suite, run the way a user runs it: ``pytest --cachecheck`` inside ``examples/``.

The examples are copied under pytester's directory as ``examples/`` below an ini file, so their
node ids (``examples/test_seed_strategies.py::...``) are the ones they have in the repository
and the per-test seeds derived from the session seed are the same: ``cd examples && pytest
--cachecheck --cachecheck-seed=3`` shows what these tests pin.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"
SEEDS = Path(__file__).parents[1].parent / "shared" / "seeds"
SEED_DOCUMENT = SEEDS / "000_91c094cf89f9714a.txt"
SEED = 3


@pytest.fixture
def examples(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of ``examples/``, the working directory, with the rootdir one level up."""
    pytester.makeini("[pytest]\n")
    copy = pytester.mkdir("examples")
    for source in EXAMPLES.glob("*.py"):
        shutil.copy(source, copy / source.name)
    monkeypatch.chdir(copy)
    return copy


@pytest.mark.usefixtures("examples")
def test_examples_outcomes_stories_and_custom_property(pytester: pytest.Pytester) -> None:
    # The README's command, with the seed pinned.
    result = pytester.runpytest_subprocess(
        "--cachecheck", f"--cachecheck-seed={SEED}", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        [
            f"cachecheck: seed={SEED} (replay with --cachecheck-seed={SEED}),"
            " 500 examples x 20 steps per target, on *",
            "*_ test_seed_cache_aside _*",
            "cachecheck: seed-cache-aside violates divergence (contract: strict *)",
            "[[]divergence[]] client * read the source (u*.v0) at step *, before client *'s write of u*.v1;"
            " client * updated the source (step *) and invalidated the cache (DEL user:u*, step *);"
            " client * then filled the cache with u*.v0 at step * (SETEX user:u* 3600 *)."
            " The cache disagrees with the source (u*.v1) until the entry expires in 3600 s.",
            "Minimal interleaving (2 decisions); replay: pytest *test_seed_strategies.py::test_seed_cache_aside"
            f" --cachecheck --cachecheck-seed={SEED}",
            "*_ test_user_profile_cache _*",
            "cachecheck: user-profile-cache violates divergence (contract: strict *)",
            # The shrunk interleaving may or may not pause the writer before its COMMIT; either
            # way the story names the stale read and the late fill.
            "[[]divergence[]] client * read the source (u*.v0) at step *"
            " client * then filled the cache with u*.v0 at step * (SETEX user_profile:u* *)."
            " The cache disagrees with the source (u*.v1)"
            " until the entry expires in * s.",
            "*= cachecheck =*",
            "seed-cache-aside: FAILED *",
            "  verdicts: confinement ok, divergence violated, *, single-source-query ok, *",
            "leased-cache-aside: PASSED *",
            "  verdicts: confinement ok, divergence ok, errors ok, lost-write ok, monotonic-reads ok, phantom-read ok,"
            " process-hazards ok, read-your-writes ok, reordering ok, single-source-query ok, stale-read ok",
            "user-profile-cache: FAILED *",
            "  verdicts: confinement ok, divergence violated, *, single-source-query ok, *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "FAILED test_seed_strategies.py::test_seed_cache_aside - Failed: cachecheck: *",
            "FAILED test_user_profile.py::test_user_profile_cache - Failed: cachecheck: *",
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

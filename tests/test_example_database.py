"""A failing target's verdicts do not depend on the example database.

With the database, Hypothesis replays the saved minimal failure first and stops there; without
it, the exploration meets other failures on its way and while shrinking.  The summary is the
minimal failure's either way; only the figures (examples, steps) tell the two apart.
"""

from hypothesis.database import InMemoryExampleDatabase

import pytest

from pytest_cachecheck import Budget, CachecheckFailure, explore

# For this seed the first failing example also breaks stale-read and read-your-writes, but the
# minimal one breaks divergence alone: accumulated verdicts would differ from a replay's.
SEED = 1


def failing(target, database):
    with pytest.raises(CachecheckFailure) as info:
        explore(target, Budget(examples=300, seed=SEED, database=database))
    return info.value


def violated(failure):
    return sorted(name for name, status in failure.report.properties.items() if status == "violated")


def test_the_verdicts_are_the_minimal_failures_with_or_without_the_database(seed_cache_aside):
    database = InMemoryExampleDatabase()
    first = failing(seed_cache_aside, database)  # explores, shrinks, saves the minimal failure
    replayed = failing(seed_cache_aside, database)  # replays the saved failure first
    without = failing(seed_cache_aside, None)
    assert replayed.report.examples < first.report.examples  # the replay did not explore again
    assert first.report.properties == replayed.report.properties == without.report.properties
    assert violated(first) == violated(replayed) == violated(without) == ["divergence"]
    assert str(first) == str(replayed) == str(without)
    # The summary's verdict line is the same; the explored line is where they differ.
    verdicts = [[line for line in f.report.summary_lines() if "verdicts:" in line] for f in (first, replayed, without)]
    assert verdicts[0] == verdicts[1] == verdicts[2]
    # Every property judged on the minimal failure, each with its status there.
    assert without.report.properties == {v.property: v.status for v in without.violation.verdicts}


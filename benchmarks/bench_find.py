"""How fast the harness finds each known bug, and how fast it explores correct layers.

Prints, for every buggy layer in ``pytest_cachecheck.strategies``: over 5 seeds, how many found
it within the budget and, over those, the median wall seconds to the first failing example and
to the shrunk counterexample, the counterexample's length in decisions and the examples run
before the first failure; for every correct layer, examples explored per second on the embedded
default and on real Redis and PostgreSQL (this machine's, or CACHECHECK_REDIS/CACHECHECK_DB).
Figures, not assertions: run it on a quiet machine and compare runs by eye.

    python benchmarks/bench_find.py [--seeds 5] [--examples 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from pytest_cachecheck.strategies.catalogue import CORRECT, KNOWN_BUGS

from pytest_cachecheck import Budget, CachecheckFailure, Servers, Target, explore
from pytest_cachecheck.backends._servers import ServerError, check_db, check_redis
from pytest_cachecheck.report._report import count_decisions


def bench_bug(target: Target, seeds: int, budget: int) -> dict:
    first, shrunk, lengths, examples = [], [], [], []
    for seed in range(seeds):
        try:
            explore(target, Budget(examples=budget, seed=seed))
        except CachecheckFailure as failure:
            report = failure.report
            first.append(report.seconds_to_first_failure)
            shrunk.append(report.wall_seconds)
            examples.append(report.examples_to_first_failure)
            lengths.append(count_decisions(failure.violation.trace) if failure.violation else 0)
    return {
        "first": statistics.median(first) if first else float("inf"),
        "shrunk": statistics.median(shrunk) if shrunk else float("inf"),
        "length": statistics.median(lengths) if lengths else None,
        "examples": statistics.median(examples) if examples else None,
        "found": f"{len(shrunk)}/{seeds}",
    }


def bench_correct(target: Target, examples: int, servers: Servers) -> float:
    started = time.perf_counter()
    report = explore(target, Budget(examples=examples, seed=1), servers=servers)
    return report.examples / (time.perf_counter() - started)


def real_servers() -> Servers | None:
    """This machine's Redis and PostgreSQL (or CACHECHECK_REDIS/CACHECHECK_DB), if reachable."""
    servers = Servers(
        redis_url=os.environ.get("CACHECHECK_REDIS", "redis://127.0.0.1:6379/0"),
        db_dsn=os.environ.get("CACHECHECK_DB", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    try:
        check_redis(servers.redis_url, allow_remote=False, connect=True)
        check_db(servers.db_dsn, allow_remote=False, connect=True)
    except ServerError as error:
        print(f"(real servers not measured: {error})")
        return None
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--examples", type=int, default=1000, help="examples per correct layer")
    parser.add_argument("--budget", type=int, default=5000, help="examples allowed to find each bug")
    options = parser.parse_args()
    print(f"pytest-cachecheck benchmark on {platform.python_implementation()} {platform.python_version()}, "
          f"embedded default (fakeredis + SQLite), {options.seeds} seeds")
    print()
    print(f"{'known bug':<24} {'found':>6} {'first failure (s)':>18} {'shrunk (s)':>11} {'decisions':>10} {'examples':>9}")
    for target in KNOWN_BUGS:
        row = bench_bug(target, options.seeds, options.budget)
        print(f"{target.name:<24} {row['found']:>6} {row['first']:>18.2f} {row['shrunk']:>11.2f} "
              f"{row['length']!s:>10} {row['examples']!s:>9}")
    print()
    real = real_servers()
    print(f"{'correct layer':<24} {'examples/s embedded':>20} {'examples/s Redis + PostgreSQL':>30}")
    for target in CORRECT:
        embedded = bench_correct(target, options.examples, Servers())
        on_real = f"{bench_correct(target, options.examples, real):.0f}" if real else "n/a"
        print(f"{target.name:<24} {embedded:>20.0f} {on_real:>30}")


if __name__ == "__main__":
    main()

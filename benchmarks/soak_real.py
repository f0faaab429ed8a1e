"""Soak on real servers: every correct reference layer, seed after seed, with another exploration
running beside it; a finding or a hang there is a flake of the harness.

For each seed and each layer in ``pytest_cachecheck.strategies.catalogue.CORRECT``, one
exploration runs on this machine's Redis and PostgreSQL (or CACHECHECK_REDIS/CACHECHECK_DB) in a
child process of its own, under a wall-time limit: a child still running at the limit is killed
(kill -9 of its own pid) and counted as a hang, never waited on.  Meanwhile another process keeps
exploring beside it (by default the same layers on other seeds; ``--beside bug``: the known bugs;
``--beside none``: nothing).  Prints, per layer: seeds run, findings, hangs, errors (a server
fault, a harness crash), examples per seed and wall time; and what the process beside did.
Exits 1 if any exploration of a correct layer (beside included) found something, hung or
errored.

``--twice`` runs every seed a second time, later (so under other load), and compares a digest of
every example's history: the same seed must give the same run whatever runs beside it.

    python benchmarks/soak_real.py [--seeds 50] [--examples 40] [--twice]

Defaults take about 10-15 minutes on 2 cores.  Seeds start at 2000 (``--first-seed``), so the
seed of the reported flake (2017) is among them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pytest_cachecheck.strategies.catalogue import CORRECT, KNOWN_BUGS

from pytest_cachecheck import Budget, CachecheckFailure, Servers, explore, hookimpl
from pytest_cachecheck.backends._servers import ServerError, check_db, check_redis

LAYERS = {target.name: target for target in (*CORRECT, *KNOWN_BUGS)}
BESIDE_FIRST_SEED = 100_000
"""Seeds of the explorations beside: never the measured ones."""
_FORK = multiprocessing.get_context("fork")  # the parent holds no connection and no thread


class HistoryDigest:
    """A checker that judges nothing: it digests every example's history, in order."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    @hookimpl
    def cachecheck_check(self, history: Any, contract: Any) -> None:
        for event in history:
            self._sha.update(repr(event).encode())
            self._sha.update(b"\n")
        self._sha.update(b"--\n")
        return None

    def hexdigest(self) -> str:
        return self._sha.hexdigest()[:16]


@dataclass
class Outcome:
    """One exploration: ``status`` is pass, finding, hang or error."""

    layer: str
    seed: int
    status: str
    examples: int = 0
    seconds: float = 0.0
    digest: str = ""
    detail: str = ""


def _child(layer: str, seed: int, examples: int, steps: int, servers: Servers, conn: Any) -> None:
    """Runs in the forked child: one exploration, its outcome sent back on ``conn``."""
    digest = HistoryDigest()
    status, count, detail = "error", 0, ""
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        try:
            report = explore(LAYERS[layer], Budget(examples=examples, steps=steps, seed=seed), servers=servers, plugins=[digest])
            status, count = "pass", report.examples
        except CachecheckFailure as failure:
            status, count, detail = "finding", failure.report.examples, str(failure)
        except Exception as error:  # a server fault (one line) or a harness crash
            detail = f"{type(error).__name__}: {error}"
    conn.send((status, count, digest.hexdigest(), detail))
    conn.close()


_current: list[Any] = []
"""The child exploring now, so that a stop request can end it too."""
_stopping: list[bool] = []
"""Set (in the process beside) once it is told to stop: no child may outlive it."""


def run_one(layer: str, seed: int, examples: int, steps: int, servers: Servers, limit: float) -> Outcome:
    """One exploration in a child process, killed (and counted as a hang) at ``limit`` wall seconds."""
    receive, send = _FORK.Pipe(duplex=False)
    child = _FORK.Process(target=_child, args=(layer, seed, examples, steps, servers, send), daemon=True)
    started = time.perf_counter()
    child.start()
    _current[:] = [child]
    send.close()
    if _stopping:  # the stop came between the start and now: the handler could not see this child
        os.kill(child.pid, signal.SIGKILL)
    try:
        if receive.poll(limit):
            status, count, digest, detail = receive.recv()
            child.join(30)
            return Outcome(layer, seed, status, count, time.perf_counter() - started, digest, detail)
        return Outcome(layer, seed, "hang", 0, time.perf_counter() - started, "", f"still running after {limit:g} s: killed")
    except EOFError:  # the child died without a word
        child.join(5)
        return Outcome(layer, seed, "error", 0, time.perf_counter() - started, "", f"the exploration died (exit {child.exitcode})")
    finally:
        _current.clear()
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)  # only ever our own child, by its pid
            child.join(5)
        receive.close()


# -- the exploration beside -----------------------------------------------------------------------


def beside_worker(options: argparse.Namespace, servers: Servers) -> None:
    """Explore the chosen layers on fresh seeds until told to stop (SIGTERM); one JSON line each."""
    names = [target.name for target in (KNOWN_BUGS if options.beside == "bug" else CORRECT)]

    def stop(*_: Any) -> None:
        _stopping.append(True)
        for child in list(_current):
            if child.is_alive():
                os.kill(child.pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    seed = BESIDE_FIRST_SEED
    with open(options.beside_worker, "a") as out:
        while True:
            for name in names:
                if _stopping:
                    return
                outcome = run_one(name, seed, options.examples, options.steps, servers, options.limit)
                if _stopping:
                    return  # the exploration cut short by the stop is not counted
                out.write(json.dumps(outcome.__dict__) + "\n")
                out.flush()
            seed += 1


def start_beside(options: argparse.Namespace, results: str) -> subprocess.Popen | None:
    if options.beside == "none":
        return None
    command = [
        sys.executable, os.path.abspath(__file__), "--beside-worker", results, "--beside", options.beside,
        "--examples", str(options.examples), "--steps", str(options.steps), "--limit", str(options.limit),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_beside(process: subprocess.Popen | None, results: str) -> list[Outcome]:
    if process is None:
        return []
    process.send_signal(signal.SIGTERM)  # our own child, by its pid
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    outcomes = []
    with contextlib.suppress(FileNotFoundError):
        with open(results) as lines:
            outcomes = [Outcome(**json.loads(line)) for line in lines if line.strip()]
        os.unlink(results)
    return outcomes


# -- figures --------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    def line(self) -> str:
        passed = [outcome.examples for outcome in self.outcomes if outcome.status in ("pass", "finding")]
        examples = f"{statistics.median(passed):g}" if passed else "-"
        wall = sum(outcome.seconds for outcome in self.outcomes)
        slowest = max((outcome.seconds for outcome in self.outcomes), default=0.0)
        return (
            f"{self.name:<28} {len(self.outcomes):>5} {self.count('finding'):>8} {self.count('hang'):>5} "
            f"{self.count('error'):>6} {examples:>13} {wall:>9.1f} {slowest:>11.1f}"
        )


HEADER = f"{'layer':<28} {'seeds':>5} {'findings':>8} {'hangs':>5} {'errors':>6} {'examples/seed':>13} {'wall (s)':>9} {'slowest (s)':>11}"


def real_servers() -> Servers:
    """This machine's Redis and PostgreSQL (or CACHECHECK_REDIS/CACHECHECK_DB); exits if unreachable."""
    servers = Servers(
        redis_url=os.environ.get("CACHECHECK_REDIS", "redis://127.0.0.1:6379/0"),
        db_dsn=os.environ.get("CACHECHECK_DB", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    try:
        check_redis(servers.redis_url, allow_remote=False, connect=True)
        check_db(servers.db_dsn, allow_remote=False, connect=True)
    except ServerError as error:
        sys.exit(f"soak_real: {error}")
    return servers


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=positive, default=50, help="seeds per layer (default 50)")
    parser.add_argument("--first-seed", type=int, default=2000, help="the first seed (default 2000)")
    parser.add_argument("--examples", type=positive, default=40, help="examples per seed (default 40)")
    parser.add_argument("--steps", type=positive, default=20, help="decisions per example (default 20)")
    parser.add_argument("--limit", type=float, default=120.0, help="wall seconds before an exploration counts as a hang")
    parser.add_argument("--beside", choices=("correct", "bug", "none"), default="correct",
                        help="what the other process explores meanwhile (default: the correct layers, other seeds)")
    parser.add_argument("--twice", action="store_true", help="run every seed twice and compare the histories")
    parser.add_argument("--beside-worker", metavar="FILE", help=argparse.SUPPRESS)
    options = parser.parse_args()
    servers = real_servers()
    if options.beside_worker:
        beside_worker(options, servers)
        return 0

    seeds = range(options.first_seed, options.first_seed + options.seeds)
    beside = {
        "correct": "the correct layers on other seeds",
        "bug": "the known bugs",
        "none": "nothing",
    }[options.beside]
    print(f"pytest-cachecheck soak on {servers.describe()}")
    print(
        f"{options.seeds} seeds ({seeds[0]}-{seeds[-1]}) x {options.examples} examples x {options.steps} steps per layer"
        f"{', each run twice' if options.twice else ''}; wall limit {options.limit:g} s per exploration; "
        f"beside, in another process: {beside}"
    )
    results = f"/tmp/cachecheck-soak-{os.getpid()}.jsonl"
    process = start_beside(options, results)
    rows = {target.name: Row(target.name) for target in CORRECT}
    first: dict[tuple[str, int], Outcome] = {}
    differing: list[tuple[Outcome, Outcome]] = []
    started = time.perf_counter()
    try:
        for round_ in range(2 if options.twice else 1):
            for seed in seeds:
                for target in CORRECT:
                    outcome = run_one(target.name, seed, options.examples, options.steps, servers, options.limit)
                    rows[target.name].outcomes.append(outcome)
                    earlier = first.setdefault((target.name, seed), outcome)
                    if round_ and outcome.status == earlier.status == "pass" and outcome.digest != earlier.digest:
                        differing.append((earlier, outcome))
                    if outcome.status != "pass":
                        print(f"  {outcome.status}: {target.name} seed {seed}: {outcome.detail.splitlines()[0] if outcome.detail else ''}", flush=True)
    finally:
        beside_outcomes = stop_beside(process, results)
    total = time.perf_counter() - started

    print()
    print(HEADER)
    for row in rows.values():
        print(row.line())
    if process is not None:
        extra = Row(f"beside: {options.beside} layers")
        extra.outcomes = beside_outcomes
        print(extra.line())
    print(f"\ntotal wall time {total:.0f} s")
    if options.twice:
        compared = sum(1 for row in rows.values() for o in row.outcomes[len(row.outcomes) // 2 :] if o.status == "pass")
        print(f"same seed, same histories: {compared - len(differing)} of {compared} explorations run twice")
        for earlier, later in differing:
            print(f"  {earlier.layer} seed {earlier.seed}: histories differ ({earlier.digest} then {later.digest})")

    failed = [o for row in rows.values() for o in row.outcomes if o.status != "pass"]
    if options.beside == "correct":
        failed += [o for o in beside_outcomes if o.status != "pass"]
    else:
        failed += [o for o in beside_outcomes if o.status in ("hang", "error")]
    for outcome in failed:
        print(f"\n{outcome.status}: {outcome.layer} seed {outcome.seed} ({outcome.seconds:.1f} s)\n{outcome.detail}")
    return 1 if failed or differing else 0


if __name__ == "__main__":
    sys.exit(main())

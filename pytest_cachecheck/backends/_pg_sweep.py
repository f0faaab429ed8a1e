"""Liveness of runs on PostgreSQL, and sweeping what dead runs left behind.

A run holds, for its whole life, a session-level advisory lock keyed by its run id
(:func:`hold`, on its admin connection).  The server releases it when that session ends, however
it ends (a clean close, ``kill -9`` of pytest, a lost connection), so "nobody holds run X's lock"
is exact: run X is dead.  Advisory locks are per database but ``pg_locks`` shows every
database's, so a sweeper connected to another database still sees a live run's lock.

:func:`sweep` finds the roles, databases and (in the database it is connected to) schemas named
``cachecheck_<8 hex digits>`` that carry :data:`MARK` as their comment (what a run of this
version creates; a same-named object without it, from an older version or someone else, is
never touched), claims each dead run's lock itself (so two sweepers never race, and its lock
shows as held while it drops), drops what that run left, and says so in one line.

Invariants: an object whose run's lock is held in any database is never dropped; only objects
named and marked as a run's own are dropped; each drop runs under the admin connection's
statement and lock timeouts.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import psycopg
from psycopg import sql as pgsql

PREFIX = "cachecheck_"
NAME = re.compile(r"^cachecheck_[0-9a-f]{8}$")
MARK = "cachecheck run: dropped when its run ends, or swept by a later run once it is dead"
LOCK_CLASS = 0x63636B31
"""The first key of every run's advisory lock (``cck1``); the second is the run id."""


def lock_key(run: str) -> tuple[int, int]:
    """The two int4 keys of run ``run``'s advisory lock (``run`` is 8 hex digits)."""
    value = int(run, 16)
    return LOCK_CLASS, value - 2**32 if value >= 2**31 else value


def hold(admin: psycopg.Connection, run: str) -> None:
    """Take run ``run``'s lock on ``admin`` (autocommit) for as long as that session lives."""
    taken = admin.execute("SELECT pg_try_advisory_lock(%s, %s)", lock_key(run)).fetchone()[0]
    if not taken:  # 32 random bits collided with a live run: never share its name
        raise RuntimeError(f"run id {run} is held by another live run")


def release(admin: psycopg.Connection, run: str) -> None:
    admin.execute("SELECT pg_advisory_unlock(%s, %s)", lock_key(run))


@dataclass
class Leftover:
    """One object of a run: ``kind`` is schema, database or role."""

    kind: str
    name: str

    @property
    def run(self) -> str:
        return self.name[len(PREFIX):]


_FIND = """
SELECT 'database', datname FROM pg_database
 WHERE datname ~ '^cachecheck_[0-9a-f]{8}$' AND shobj_description(oid, 'pg_database') = %(mark)s
UNION ALL
SELECT 'schema', nspname FROM pg_namespace
 WHERE nspname ~ '^cachecheck_[0-9a-f]{8}$' AND obj_description(oid, 'pg_namespace') = %(mark)s
UNION ALL
SELECT 'role', rolname FROM pg_roles
 WHERE rolname ~ '^cachecheck_[0-9a-f]{8}$' AND shobj_description(oid, 'pg_authid') = %(mark)s
"""

_HELD = """
SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2
                AND classid = %s::bigint::oid AND objid = %s::bigint::oid)
"""


def find(admin: psycopg.Connection) -> list[Leftover]:
    """Every marked object of any run, live or dead (schemas: of this database only)."""
    rows = admin.execute(_FIND, {"mark": MARK}).fetchall()
    return [Leftover(kind, name) for kind, name in rows]


def alive(admin: psycopg.Connection, run: str) -> bool:
    """Whether some session, in any database of the cluster, holds run ``run``'s lock."""
    value = int(run, 16)
    return bool(admin.execute(_HELD, (LOCK_CLASS, value)).fetchone()[0])


def sweep(admin: psycopg.Connection, server: str) -> str | None:
    """Drop what dead runs left; one line saying what went, or None when nothing did.

    Runs whose objects cannot be dropped here (a schema in another database still depends on a
    role) are left for a sweeper connected there; each object is dropped or left whole.
    """
    by_run: dict[str, list[Leftover]] = {}
    for leftover in find(admin):
        by_run.setdefault(leftover.run, []).append(leftover)
    dropped: Counter[str] = Counter()
    runs = 0
    for run, leftovers in sorted(by_run.items()):
        if alive(admin, run) or not _claim(admin, run):
            continue
        try:
            gone = drop_run(admin, leftovers)
        finally:
            release(admin, run)
        dropped.update(gone)
        runs += bool(gone)
    return sweep_line(server, runs, dropped)


def sweep_line(server: str, runs: int, dropped: Counter[str]) -> str | None:
    """``cachecheck: swept 3 dead runs' leftovers from <server> (3 schemas, 3 roles)``, or None."""
    if not runs:
        return None
    order = ("schema", "database", "role")
    parts = ", ".join(f"{dropped[kind]} {kind}{'s' if dropped[kind] != 1 else ''}" for kind in order if dropped[kind])
    noun = "run's" if runs == 1 else "runs'"
    return f"cachecheck: swept {runs} dead {noun} leftovers from {server} ({parts})"


def _claim(admin: psycopg.Connection, run: str) -> bool:
    return bool(admin.execute("SELECT pg_try_advisory_lock(%s, %s)", lock_key(run)).fetchone()[0])


def drop_run(admin: psycopg.Connection, leftovers: list[Leftover]) -> list[str]:
    """Drop one dead run's objects (databases and schemas first, then its role); the kinds dropped."""
    gone = []
    rank = {"database": 0, "schema": 1, "role": 2}
    for leftover in sorted(leftovers, key=lambda item: rank[item.kind]):
        ident = pgsql.Identifier(leftover.name)
        try:
            if leftover.kind == "database":
                drop_database(admin, leftover.name)
            elif leftover.kind == "schema":
                admin.execute(pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
            else:
                drop_role(admin, leftover.name)
        except psycopg.Error:
            continue  # in use elsewhere or not ours to drop from here: left whole for a later sweep
        gone.append(leftover.kind)
    return gone


def drop_role(admin: psycopg.Connection, role: str) -> None:
    """Drop ``role`` and what it owns in this database (the role must be a run's own).

    ``DROP OWNED`` needs the privileges of the role: a login that is not a superuser grants
    itself membership first (CREATEROLE allows it for roles that are not superusers).
    """
    ident = pgsql.Identifier(role)
    with admin.transaction():
        superuser = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        if not superuser:
            admin.execute(pgsql.SQL("GRANT {} TO CURRENT_USER").format(ident))
        admin.execute(pgsql.SQL("DROP OWNED BY {}").format(ident))
        admin.execute(pgsql.SQL("DROP ROLE {}").format(ident))


def drop_database(admin: psycopg.Connection, name: str) -> None:
    """Drop a run's database, ending the sessions still in it (PostgreSQL 13+ does it itself)."""
    ident = pgsql.Identifier(name)
    if admin.info.server_version >= 130000:
        admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        return
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {}").format(ident))

"""PostgreSQL confinement: the server itself keeps a layer's SQL inside the run's own schema.

Each test works in a throwaway database ``cachecheck_test_<random>`` holding foreign data (a
``public.users`` whose ids are the harness's keys, a ``public.some_table``), beside a second
throwaway database with a table; hostile layers try every escape, and afterwards all foreign data
is intact and each attempt is the layer's ``confinement`` finding.
"""

from __future__ import annotations

import re
import secrets
from contextlib import contextmanager

import psycopg
import pytest
from conftest import SERVERS
from layers import target
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pytest_cachecheck import Budget, CachecheckFailure, explore
from pytest_cachecheck.backends._backend import Backend
from pytest_cachecheck.backends._fake_cache import FakeCache
from pytest_cachecheck.backends._pg_confinement import ConfinementError
from pytest_cachecheck.backends._postgres import PostgresSource
from pytest_cachecheck.backends._servers import ServerError, check_db
from pytest_cachecheck.engine._patches import simulated_world
from pytest_cachecheck.exploration._run import Run, RunConfig

NEEDS_DB = "needs a real PostgreSQL: set CACHECHECK_DB (.ci/run does, on its second pass)"
pytestmark = pytest.mark.skipif(not SERVERS.db_dsn, reason=NEEDS_DB)

FOREIGN = (
    "CREATE TABLE public.users (id TEXT PRIMARY KEY, name TEXT NOT NULL)",
    "INSERT INTO public.users SELECT 'u' || g, 'foreign ' || g FROM generate_series(1, 50) g",
    "CREATE TABLE public.some_table (id INTEGER PRIMARY KEY, note TEXT)",
    "INSERT INTO public.some_table SELECT g, 'note ' || g FROM generate_series(1, 100) g",
)
BOUNDARY = "(the run's role may use only its own schema)"


def dsn_for(database: str, user: str | None = None) -> str:
    params = conninfo_to_dict(SERVERS.db_dsn)
    params["dbname"] = database
    if user:
        params["user"] = user
    return make_conninfo("", **params)


def admin_connection() -> psycopg.Connection:
    return psycopg.connect(SERVERS.db_dsn, autocommit=True)


@contextmanager
def throwaway_database(*statements: str):
    """A database of the test's own, with ``statements`` run in it; dropped afterwards."""
    name = f"cachecheck_test_{secrets.token_hex(4)}"
    with admin_connection() as admin:
        admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
        try:
            with psycopg.connect(dsn_for(name), autocommit=True) as db:
                for statement in statements:
                    db.execute(statement)
            yield name
        finally:
            admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))


@contextmanager
def throwaway_login(database: str, *attributes: str):
    """A login role of the test's own (``attributes``: CREATEROLE, ...) that may create schemas in ``database``."""
    name = f"cachecheck_test_{secrets.token_hex(4)}"
    ident, db = pgsql.Identifier(name), pgsql.Identifier(database)
    with admin_connection() as admin:
        admin.execute(pgsql.SQL("CREATE ROLE {} LOGIN " + " ".join(attributes)).format(ident))
        admin.execute(pgsql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(db, ident))
        try:
            yield name
        finally:
            with psycopg.connect(dsn_for(database), autocommit=True) as there:
                there.execute(pgsql.SQL("DROP OWNED BY {}").format(ident))
            admin.execute(pgsql.SQL("DROP OWNED BY {}").format(ident))
            admin.execute(pgsql.SQL("DROP ROLE {}").format(ident))


def foreign_state(database: str) -> dict:
    """Everything a layer must not change: row counts and checksums, schemas, tables, databases."""
    with psycopg.connect(dsn_for(database), autocommit=True) as db:
        state = {
            table: db.execute(
                f"SELECT count(*), md5(string_agg(id::text || ':' || {column}, ',' ORDER BY id)) FROM {table}"
            ).fetchone()
            for table, column in (("public.users", "name"), ("public.some_table", "note"))
        }
        state["public tables"] = db.execute(
            "SELECT array_agg(relname ORDER BY relname) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ).fetchone()[0]
        state["schemas"] = db.execute(
            "SELECT array_agg(nspname ORDER BY nspname) FROM pg_namespace WHERE nspname NOT LIKE 'cachecheck%'"
        ).fetchone()[0]
    with admin_connection() as admin:
        state["databases"] = admin.execute(
            "SELECT array_agg(datname ORDER BY datname) FROM pg_database WHERE datname NOT LIKE 'cachecheck%'"
        ).fetchone()[0]
    return state


def run_objects(source: PostgresSource) -> list:
    """What is left on the server of ``source``'s run: its role, schema and database."""
    with admin_connection() as admin:
        return admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = %(n)s UNION ALL "
            "SELECT datname FROM pg_database WHERE datname = %(n)s",
            {"n": source.schema},
        ).fetchall()


def hostile(*statements: str):
    """A layer that tries ``statements`` (catching what fails) before each read and write."""

    class Hostile:
        caught: list[BaseException] = []

        def __init__(self, r, conn):
            self.conn = conn

        def _escape(self):
            for statement in statements:
                try:
                    self.conn.execute(statement)
                    self.conn.commit()
                except psycopg.Error as error:
                    Hostile.caught.append(error)
                    self.conn.rollback()

        def read(self, key):
            self._escape()
            row = self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()
            self.conn.commit()
            return row and row[0]

        def write(self, key, value):
            self._escape()
            self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
            self.conn.commit()

    return Hostile


def explore_on(database: str, layer: type, **source_options):
    """Explore ``layer`` on a source in ``database``; the failure it must raise, and the source."""
    source = PostgresSource(dsn_for(database), **source_options)
    backend = Backend(FakeCache(), source)
    try:
        with pytest.raises(CachecheckFailure) as failure:
            explore(target(layer), Budget(examples=3, seed=1), backend=backend)
    finally:
        backend.close()
    return failure.value, source


def confinement_findings(failure: CachecheckFailure) -> list[str]:
    return [line for line in str(failure).splitlines() if line.startswith("[confinement]")]


# --- every escape is refused by the server, and told as the layer's finding --------------------


def test_every_escape_is_refused_and_reported_and_foreign_data_is_intact():
    with throwaway_database(*FOREIGN) as database, throwaway_database(
        "CREATE TABLE other_table (id INTEGER PRIMARY KEY, note TEXT)",
        "INSERT INTO other_table SELECT g, 'other ' || g FROM generate_series(1, 20) g",
    ) as other:
        admin_user = conninfo_to_dict(SERVERS.db_dsn).get("user") or "postgres"
        new_database = f"cachecheck_test_{secrets.token_hex(4)}"
        escapes = {
            "SELECT note FROM public.some_table WHERE id = 1": "permission denied for table some_table",
            "UPDATE public.some_table SET note = 'mine'": "permission denied for table some_table",
            "INSERT INTO public.users (id, name) VALUES ('u99', 'mine')": "permission denied for table users",
            "DROP SCHEMA public CASCADE": "must be owner of schema public",
            "CREATE TABLE public.t (a INTEGER)": "permission denied for schema public",
            "CREATE SCHEMA elsewhere": f"permission denied for database {database}",
            f"SET ROLE {admin_user}": f'permission denied to set role "{admin_user}"',
        }
        # The connection a layer gets is always in a transaction, where CREATE DATABASE cannot run
        # at all (it fails before any privilege check); the role could not create one either.
        create_database = f"CREATE DATABASE {new_database}"
        before, other_before = foreign_state(database), foreign_state_of(other)
        layer = hostile(*escapes, create_database)
        failure, source = explore_on(database, layer)
        assert failure.report.properties["confinement"] == "violated"
        findings = confinement_findings(failure)
        for statement, reason in escapes.items():
            told = [line for line in findings if f" tried to {statement} at step " in line]
            assert told and told[0].endswith(f": {reason} {BOUNDARY}"), (statement, findings)
        assert psycopg.errors.ActiveSqlTransaction in {type(error) for error in layer.caught}
        assert new_database not in foreign_state(database)["databases"]
        assert foreign_state(database) == before
        assert foreign_state_of(other) == other_before
        assert run_objects(source) == []


def foreign_state_of(database: str):
    with psycopg.connect(dsn_for(database), autocommit=True) as db:
        return db.execute("SELECT count(*), md5(string_agg(id || ':' || note, ',' ORDER BY id)) FROM other_table").fetchone()


def test_a_refusal_reaches_the_layer_as_the_drivers_own_error_class():
    with throwaway_database(*FOREIGN) as database:
        layer = hostile("SELECT note FROM public.some_table WHERE id = 1")
        backend = Backend(FakeCache(), PostgresSource(dsn_for(database)))
        try:
            with simulated_world():
                run = Run(target(layer), RunConfig(), backend)
                run.start(1, "read", "u1")
                history = run.history()
                run.close()
        finally:
            backend.close()
    [call] = [call for call in history.calls if "some_table" in call.command]
    assert call.result == (
        "raised InsufficientPrivilege: cachecheck: refused: permission denied for table some_table " + BOUNDARY
    )
    assert [type(error) for error in layer.caught] == [psycopg.errors.InsufficientPrivilege]
    assert history.operations()[-1].observed == "u1.v0"  # the layer went on, in its own schema


# --- a session's state never survives into the next example -----------------------------------


class SwitchesPath:
    """Points its session at ``public`` (and commits) on a read; reads and writes by unqualified name."""

    def __init__(self, r, conn):
        self.conn = conn

    def read(self, key):
        self.conn.execute("SET search_path TO public")
        self.conn.commit()
        row = self.conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()
        return row and row[0]

    def write(self, key, value):
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", (value, key))
        self.conn.commit()


def test_a_committed_search_path_does_not_survive_into_the_next_example():
    with throwaway_database(*FOREIGN) as database:
        before = foreign_state(database)
        source = PostgresSource(dsn_for(database))
        backend = Backend(FakeCache(), source)
        try:
            with simulated_world():
                first = Run(target(SwitchesPath), RunConfig(), backend)
                first.start(1, "read", "u1")  # client 1's session now points at public
                first.close()
                second = Run(target(SwitchesPath), RunConfig(), backend)
                second.start(1, "write", "u1")  # the same connection, the next example
                [write] = [op for op in second.history().operations() if op.kind == "write" and op.client == 1]
                assert write.status == "ok", write
                assert source.read(target(SwitchesPath).source, "u1") == "u1.v1"  # in the run's schema
                second.close()
        finally:
            backend.close()
        assert foreign_state(database) == before


def test_writes_after_a_layer_switches_its_path_are_refused_not_misattributed():
    with throwaway_database(*FOREIGN) as database:
        before = foreign_state(database)
        failure, _ = explore_on(database, SwitchesPath)
        assert failure.report.properties["confinement"] == "violated"
        assert failure.report.properties.get("reordering") != "violated"
        assert any(
            re.search(r"tried to (SELECT name FROM users|UPDATE users SET name = 'u\d\.v\d+') WHERE id = 'u\d' "
                      r"at step \d+ \([^)]+\): permission denied for table users", line)
            for line in confinement_findings(failure)
        ), str(failure)
        assert foreign_state(database) == before


# --- logins and databases that cannot confine a run --------------------------------------------


def test_a_login_that_cannot_create_roles_is_refused_unless_unconfined():
    with throwaway_database(*FOREIGN) as database, throwaway_login(database) as login:
        dsn = dsn_for(database, user=login)
        with pytest.raises(ServerError) as refused:
            check_db(dsn, allow_remote=False, connect=True)
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(f"--cachecheck-db=user={login} ")
        assert f"the login {login} cannot create roles" in message
        assert f"ALTER ROLE {login} CREATEROLE" in message and "--cachecheck-unconfined" in message
        with pytest.raises(ConfinementError):
            PostgresSource(dsn)
        check_db(dsn, allow_remote=False, connect=True, unconfined=True)
        source = PostgresSource(dsn, unconfined=True)
        assert source.confinement is None
        backend = Backend(FakeCache(), source)
        try:
            report = explore(target(SwitchesPath, read=None), Budget(examples=3, seed=1), backend=backend)
        finally:
            backend.close()
        assert report.passed
        with psycopg.connect(dsn_for(database), autocommit=True) as db:
            assert db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (source.schema,)).fetchone()[0] == 0
            db.execute(pgsql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(pgsql.Identifier(database), pgsql.Identifier(login)))
        with pytest.raises(ServerError) as refused:  # even unconfined, a run needs a schema of its own
            check_db(dsn, allow_remote=False, connect=True, unconfined=True)
        assert str(refused.value).endswith(
            f"the login {login} cannot create schemas in database {database}; GRANT CREATE ON DATABASE {database} TO {login}"
        )


def test_a_login_with_createrole_only_confines_its_runs():
    with throwaway_database(*FOREIGN) as database, throwaway_login(database, "CREATEROLE") as login:
        before = foreign_state(database)
        source = PostgresSource(dsn_for(database, user=login))
        assert source.confinement is not None and source.confinement.database is None
        backend = Backend(FakeCache(), source)
        try:
            with pytest.raises(CachecheckFailure) as failure:
                explore(target(hostile("UPDATE public.some_table SET note = 'mine'")), Budget(examples=3, seed=1), backend=backend)
        finally:
            backend.close()
        assert failure.value.report.properties["confinement"] == "violated"
        assert run_objects(source) == []
        assert foreign_state(database) == before


def test_a_database_where_public_may_create_gets_a_database_of_the_runs_own():
    hole = "GRANT CREATE ON SCHEMA public TO PUBLIC"  # what PostgreSQL before 15 grants by default
    with throwaway_database(*FOREIGN, hole) as database:
        before = foreign_state(database)
        failure, source = explore_on(database, hostile("CREATE TABLE public.t (a INTEGER)"))
        assert source.confinement is not None and source.confinement.database == source.schema
        findings = confinement_findings(failure)
        assert findings and all(
            " tried to CREATE TABLE public.t (a INTEGER) at step " in finding
            and finding.endswith("permission denied for schema public (the run's role may use only its own database)")
            for finding in findings
        ), findings
        assert foreign_state(database) == before
        assert run_objects(source) == []
        with throwaway_login(database, "CREATEROLE") as login, pytest.raises(ServerError) as refused:
            check_db(dsn_for(database, user=login), allow_remote=False, connect=True)
        assert f"in database {database} PUBLIC holds CREATE on schema public" in str(refused.value)
        assert f"ALTER ROLE {login} CREATEDB" in str(refused.value)

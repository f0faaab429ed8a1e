"""PostgreSQL confinement: a role of the run's own, with rights on the run's schema only.

A confined exploration creates a login role ``cachecheck_<run>`` (NOSUPERUSER NOCREATEDB
NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS, a small connection limit, a random password
stored as the server's verifier) and, for every example, a schema of the same name owned by the
admin login, on which the role has USAGE and CREATE only.  Every connection the layer gets, and
the harness's own setup and reads, log in as that role; the admin login only creates, resets and
drops.  So what the layer's SQL may touch is decided by the server's privilege checks: another
schema's tables, ``DROP SCHEMA public``, ``CREATE DATABASE``, ``CREATE SCHEMA``, ``SET ROLE`` are
refused with SQLSTATE 42501, and :func:`refusal` turns that error into a ``confinement`` finding.
(The harness reads as the role too, so nothing the layer builds in its schema, a view over a
function say, ever runs with the admin's rights.)

What PUBLIC may do, the role may do.  PostgreSQL 15 and later grant PUBLIC no CREATE on schema
``public``; older versions do, and a team may grant PUBLIC more: each such privilege is a *hole*
(:func:`holes`: CREATE on a schema or on the database, a write privilege on a table or sequence).
A run on a database with holes gets a database of its own instead (``cachecheck_<run>``, from
``template0``, owned by the admin login, CONNECT and TEMPORARY for the role only) when the login
may create databases: the role is handed connections to nothing else, so nothing of the user's
database is in reach.  Otherwise the run is refused with one line naming the hole and the fixes,
unless the user asked for an unconfined run.

Invariants: the harness alters no object it did not create (a CONNECT grant to the run's own role
on a database that denies PUBLIC its CONNECT is the one addition to the user's objects, and goes
with the role); the role owns nothing outside the run's schema or database except what a session
can always make (temporary tables, large objects), which ``DROP OWNED`` removes with the role.
Limits: functions the team made ``SECURITY DEFINER`` and executable by PUBLIC run with their
owner's rights; code that opens a connection of its own logs in as whoever it can.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..history import REFUSED
from ._pg_sweep import MARK, drop_database, drop_role
from ._server_error import CONNECT_TIMEOUT, ServerError

CONNECTION_LIMIT = 12
"""Connections the run's role may hold: every client (at most 6), the probe, the harness's own,
and room for a connection being replaced after a crash."""

SCHEMA_BOUNDARY = "the run's role may use only its own schema"
DATABASE_BOUNDARY = "the run's role may use only its own database"
UNCONFINED_BOUNDARY = "refused to the login given; this run is unconfined"


class ConfinementError(ServerError):
    """The login or the database cannot confine a run; ``problem`` says what is missing and the fix."""

    def __init__(self, where: str, problem: str) -> None:
        self.problem = problem
        super().__init__(f"{where}: {problem}")


# -- what the login can do, and what PUBLIC can -------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Where a confined run on this database keeps its data, or why it cannot be confined."""

    mode: str
    """``schema`` (a schema in the user's database) or ``database`` (a database of its own)."""
    problem: str | None = None


_LOGIN = """
SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, current_database(),
       has_database_privilege(current_database(), 'CREATE')
  FROM pg_roles WHERE rolname = current_user
"""

_HOLES = """
SELECT format('CREATE on schema %I', n.nspname) FROM pg_namespace n
 WHERE EXISTS (SELECT FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                WHERE a.grantee = 0 AND a.privilege_type = 'CREATE')
UNION ALL
SELECT format('CREATE on database %I', d.datname) FROM pg_database d
 WHERE d.datname = current_database()
   AND EXISTS (SELECT FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                WHERE a.grantee = 0 AND a.privilege_type = 'CREATE')
UNION ALL
SELECT format('%s on %I.%I', a.privilege_type, n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND a.grantee = 0
   AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'USAGE')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')  -- the system's own (pg_settings)
"""


def holes(conn: psycopg.Connection) -> list[str]:
    """What PUBLIC (so any new role) may change in ``conn``'s database, e.g. ``CREATE on schema public``."""
    return [row[0] for row in conn.execute(_HOLES).fetchall()]


def plan(conn: psycopg.Connection, *, unconfined: bool = False) -> Plan:
    """How a run on ``conn``'s database (with ``conn``'s login as admin) can be confined; or,
    ``unconfined``, whether it can have its private schema."""
    user, superuser, createrole, createdb, database, create_schema = conn.execute(_LOGIN).fetchone()
    cannot_create_schemas = (
        f"the login {user} cannot create schemas in database {database}; GRANT CREATE ON DATABASE "
        f"{database} TO {user}"
    )
    if unconfined:
        return Plan("schema", None if superuser or create_schema else cannot_create_schemas)
    if not (superuser or createrole):
        return Plan("schema", (
            f"the login {user} cannot create roles, which a confined run needs (a role of the run's own, "
            f"with rights on its own schema only); ALTER ROLE {user} CREATEROLE, or run unconfined "
            "(--cachecheck-unconfined) with a private schema only"
        ))
    found = holes(conn)
    if found:
        if superuser or createdb:
            return Plan("database")
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        return Plan("database", (
            f"in database {database} PUBLIC holds {shown}, so a run's own role could write outside its "
            f"schema; REVOKE it (PostgreSQL 15's default: REVOKE CREATE ON SCHEMA public FROM PUBLIC), "
            f"ALTER ROLE {user} CREATEDB (a database per run), or run unconfined (--cachecheck-unconfined)"
        ))
    if not (superuser or create_schema):
        return Plan("schema", cannot_create_schemas)
    return Plan("schema")


# -- the run's role ------------------------------------------------------------------------------


class Confinement:
    """One run's role and where its data lives; :meth:`create` at the start, :meth:`drop` at the end."""

    def __init__(self, dsn: str, run: str, mode: str) -> None:
        self.dsn = dsn
        self.role = f"cachecheck_{run}"
        self.schema = self.role
        self.database: str | None = self.role if mode == "database" else None
        self.boundary = DATABASE_BOUNDARY if self.database else SCHEMA_BOUNDARY
        self._password = secrets.token_urlsafe(24)
        self.verifier = ""
        """The password as the server stores it (never the password itself in a statement)."""

    @classmethod
    def create(cls, admin: psycopg.Connection, dsn: str, run: str, where: str) -> "Confinement":
        """Create run ``run``'s role (and database, on a database with holes) with ``admin``."""
        chosen = plan(admin)
        if chosen.problem:
            raise ConfinementError(where, chosen.problem)
        self = cls(dsn, run, chosen.mode)
        role = pgsql.Identifier(self.role)
        self.verifier = admin.pgconn.encrypt_password(self._password.encode(), self.role.encode()).decode()
        superuser = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        with admin.transaction():
            admin.execute(pgsql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS "
                "CONNECTION LIMIT {} PASSWORD {}"
            ).format(role, pgsql.Literal(CONNECTION_LIMIT), pgsql.Literal(self.verifier)))
            admin.execute(pgsql.SQL("COMMENT ON ROLE {} IS {}").format(role, pgsql.Literal(MARK)))
            if not superuser:  # DROP OWNED and ending the role's backends need its privileges
                admin.execute(pgsql.SQL("GRANT {} TO CURRENT_USER").format(role))
        try:
            if self.database:
                self._create_database(admin)
            elif not admin.execute(
                "SELECT has_database_privilege(%s, current_database(), 'CONNECT')", (self.role,)
            ).fetchone()[0]:
                admin.execute(
                    pgsql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        pgsql.Identifier(admin.info.dbname), role
                    )
                )
        except BaseException:
            self.drop(admin)
            raise
        return self

    def _create_database(self, admin: psycopg.Connection) -> None:
        assert self.database is not None
        database, role = pgsql.Identifier(self.database), pgsql.Identifier(self.role)
        admin.execute(pgsql.SQL("CREATE DATABASE {} TEMPLATE template0").format(database))
        admin.execute(pgsql.SQL("COMMENT ON DATABASE {} IS {}").format(database, pgsql.Literal(MARK)))
        admin.execute(pgsql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        admin.execute(pgsql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(database, role))
        with psycopg.connect(self.admin_conninfo(), autocommit=True) as home:
            try:  # before PostgreSQL 15 PUBLIC may create in public; harmless in a database of the run's own
                home.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            except psycopg.Error:
                pass

    # -- connections ---------------------------------------------------------------------------

    def admin_conninfo(self, options: str = "") -> str:
        """The admin login, in the database where the run's schema lives."""
        return conninfo(self.dsn, options=options, dbname=self.database)

    def client_conninfo(self, options: str = "") -> str:
        """The run's role, in the database where the run's schema lives, with the schema as its path."""
        return conninfo(
            self.dsn,
            options=f"-c search_path={self.schema} {options}",
            user=self.role,
            password=self._password,
            dbname=self.database,
            application_name=self.role,
        )

    def connect(self, where: str, *, autocommit: bool, options: str = "") -> psycopg.Connection:
        """A connection logged in as the run's role; a login the server refuses is one line."""
        try:
            return psycopg.connect(self.client_conninfo(options), autocommit=autocommit)
        except psycopg.OperationalError as error:
            text = (str(error).strip().splitlines() or [type(error).__name__])[0]
            if "password" in text or "authentication" in text or "pg_hba" in text:
                raise ConfinementError(where, (
                    f"the run's own role {self.role} cannot log in ({text}); let roles named cachecheck_* log "
                    "in with a password (pg_hba.conf), or run unconfined (--cachecheck-unconfined)"
                )) from None
            raise

    # -- the end ---------------------------------------------------------------------------------

    def drop(self, admin: psycopg.Connection) -> None:
        """Drop the run's database (if it has one) and its role, with what the role owns."""
        if self.database:
            drop_database(admin, self.database)
        drop_role(admin, self.role)


def conninfo(dsn: str, *, options: str = "", **overrides: Any) -> str:
    """``dsn`` with ``overrides`` (None: keep) and ``options`` appended to its own options."""
    params = conninfo_to_dict(dsn)
    params.update({key: value for key, value in overrides.items() if value is not None})
    merged = " ".join(part for part in (params.get("options", ""), options) if part and part.strip())
    if merged:
        params["options"] = merged
    params.setdefault("connect_timeout", str(int(CONNECT_TIMEOUT)))
    return make_conninfo("", **params)


def refusal(exc: BaseException, boundary: str) -> BaseException | None:
    """The error the layer gets for a statement the server refused for privilege, or None.

    The same psycopg class (the layer's ``except`` clauses still match), its message beginning
    with :data:`~pytest_cachecheck.history.REFUSED`: the ``confinement`` checker reports it.
    """
    if not isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return None
    text = (str(exc).strip().splitlines() or ["permission denied"])[0]
    if text.startswith(REFUSED):
        return None
    return type(exc)(f"{REFUSED}: {text} ({boundary})")

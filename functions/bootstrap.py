"""Bootstrap: the application role, the migration role, least-privilege grants, then migrations.

Runs at deploy time with the RDS master credentials, directly against the database (the only
function allowed to). Every statement is idempotent, and whether anything changed is decided by
comparing the catalog before and after (roles, role settings, memberships, schema and table
ACLs, default privileges), so the report says what really changed, not what was attempted.

Timeouts live on the role (`ALTER ROLE ... SET`) because startup parameters do not survive a
pooler in transaction mode: every server connection PgBouncer or RDS Proxy opens as `app_user`
gets them from the catalog.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from yoyo import get_backend, read_migrations
from yoyo.backends.base import DatabaseBackend
from yoyo.connections import default_migration_table

from .config import ConfigurationError, SslMode
from .credentials import DatabaseSecret, read_secret
from .errors import FailureClass, classify
from .observability import flush, logger, note_invocation

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# yoyo's own bookkeeping tables: the migration role's, never the application's.
YOYO_TABLES = (
    default_migration_table,
    DatabaseBackend.log_table,
    DatabaseBackend.lock_table,
    DatabaseBackend.version_table,
)
APP_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"
LOCK_KEY = 0x510760A2D  # pg_advisory_xact_lock key: one bootstrap at a time


class BootstrapInputError(ValueError):
    """The bootstrap event or environment is malformed; the message names what to change."""


class AppUserSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=IDENTIFIER)
    connection_limit: int = Field(ge=1)
    statement_timeout_ms: int = Field(ge=0)
    idle_in_transaction_session_timeout_ms: int = Field(ge=0)
    lock_timeout_ms: int = Field(ge=0)
    search_path: tuple[str, ...] = Field(min_length=1)

    @field_validator("search_path", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("search_path")
    @classmethod
    def _identifiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [part for part in value if not re.match(IDENTIFIER, part)]
        if bad:
            raise ValueError(f"search_path entries must be plain lower-case names, not {bad}")
        return value


class MigrationRoleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=IDENTIFIER)
    # Migrations need one connection (two while yoyo holds its lock); the admin margin covers it.
    connection_limit: int = Field(default=3, ge=1)


class BootstrapEvent(BaseModel):
    """What the connection budget decided, as the deployment sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    app_user: AppUserSpec
    migration_role: MigrationRoleSpec
    database: str = Field(pattern=IDENTIFIER)
    # The application schema; by default the first entry of app_user.search_path.
    app_schema: str | None = Field(default=None, pattern=IDENTIFIER, alias="schema")

    @property
    def schema_name(self) -> str:
        return self.app_schema or self.app_user.search_path[0]


class Target(BaseModel):
    """Where the database is and how to verify it (the bootstrap connects to it directly)."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int = 5432
    sslmode: SslMode = "verify-full"
    sslrootcert: str | None = None
    connect_timeout_s: int = 10


class Change(BaseModel):
    item: str
    before: str | None
    after: str | None


class BootstrapReport(BaseModel):
    changed: bool
    changes: list[Change]
    migrations_applied: list[str]
    summary: str


# -- connections ---------------------------------------------------------------------------------


def _conninfo(target: Target, user: str, password: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(
        host=target.host,
        port=target.port,
        user=user,
        password=password,
        dbname=dbname,
        sslmode=target.sslmode,
        sslrootcert=target.sslrootcert or "",
        connect_timeout=target.connect_timeout_s,
        application_name="slotguard-bootstrap",
    )


def _can_log_in(target: Target, user: str, password: str, dbname: str) -> bool:
    try:
        with psycopg.connect(_conninfo(target, user, password, dbname)):
            return True
    except psycopg.OperationalError as exc:
        if classify(exc) is FailureClass.AUTHENTICATION:
            return False
        raise


# -- catalog snapshot ----------------------------------------------------------------------------


def snapshot(conn: psycopg.Connection[Any], event: BootstrapEvent) -> dict[str, str]:
    """Everything the bootstrap manages, as comparable strings."""
    state: dict[str, str] = {}
    schema = event.schema_name
    for role in (event.app_user.name, event.migration_role.name):
        row = conn.execute(
            "SELECT rolcanlogin, rolconnlimit, rolcreatedb, rolcreaterole, rolsuper, rolinherit"
            " FROM pg_roles WHERE rolname = %s",
            (role,),
        ).fetchone()
        if row is None:
            continue
        for key, value in zip(
            ("login", "connection_limit", "createdb", "createrole", "superuser", "inherit"),
            row,
            strict=True,
        ):
            state[f"role {role} {key}"] = str(value)
        for (setting,) in conn.execute(
            "SELECT unnest(s.setconfig) FROM pg_db_role_setting s"
            " JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s AND s.setdatabase = 0",
            (role,),
        ):
            key, _, value = str(setting).partition("=")
            state[f"role {role} setting {key}"] = value
        (members,) = conn.execute(
            "SELECT coalesce(string_agg(g.rolname, ',' ORDER BY g.rolname), '')"
            " FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s",
            (role,),
        ).fetchone() or ("",)
        state[f"role {role} member_of"] = str(members)
    for nsp in (schema, "public"):
        row = conn.execute(
            "SELECT pg_get_userbyid(nspowner), coalesce(nspacl::text, '')"
            " FROM pg_namespace WHERE nspname = %s",
            (nsp,),
        ).fetchone()
        if row is not None:
            state[f"schema {nsp} owner"], state[f"schema {nsp} acl"] = str(row[0]), str(row[1])
    (datacl,) = conn.execute(
        "SELECT coalesce(datacl::text, '') FROM pg_database WHERE datname = current_database()"
    ).fetchone() or ("",)
    state["database acl"] = str(datacl)
    for objtype, acl in conn.execute(
        "SELECT d.defaclobjtype::text, d.defaclacl::text FROM pg_default_acl d"
        " JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.nspname = %s",
        (schema,),
    ):
        state[f"default privileges {schema} {objtype}"] = str(acl)
    for name, kind, owner, acl in conn.execute(
        "SELECT c.relname, c.relkind::text, pg_get_userbyid(c.relowner),"
        " coalesce(c.relacl::text, '') FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')",
        (schema,),
    ):
        state[f"relation {schema}.{name} ({kind}) owner"] = str(owner)
        state[f"relation {schema}.{name} ({kind}) acl"] = str(acl)
    return state


def diff(before: dict[str, str], after: dict[str, str]) -> list[Change]:
    return [
        Change(item=key, before=before.get(key), after=after.get(key))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


# -- the steps -----------------------------------------------------------------------------------


def _stored_verifier(conn: psycopg.Connection[Any], role: str) -> str | None:
    """The role's stored SCRAM verifier when the master may read it (superuser), else None."""
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
            ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None  # RDS: the master is not a superuser and cannot read pg_authid
    return str(row[0]) if row and row[0] is not None else None


def _password_needed(
    conn: psycopg.Connection[Any], target: Target, secret: DatabaseSecret, role: str, db: str
) -> str | None:
    """The password (or verifier) to install for `role`, or None when it is already in place.

    With a `scram_verifier` the exact verifier must be installed (PgBouncer's auth file holds the
    same one); where pg_authid is readable it is compared exactly, elsewhere a login with the
    plaintext password is the check.
    """
    desired = secret.scram_verifier or secret.password
    if secret.scram_verifier:
        stored = _stored_verifier(conn, role)
        if stored is not None:
            return None if stored == secret.scram_verifier else desired
    return None if _can_log_in(target, role, secret.password, db) else desired


def _ensure_role(conn: psycopg.Connection[Any], name: str, connection_limit: int) -> None:
    role = sql.Identifier(name)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    if not exists:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    # NOSUPERUSER/NOREPLICATION/NOBYPASSRLS are CREATE ROLE's defaults; naming them here would
    # need a real superuser, which the RDS master is not.
    conn.execute(
        sql.SQL(
            "ALTER ROLE {} WITH LOGIN NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT {}"
        ).format(role, sql.Literal(connection_limit))
    )


def _configure(
    conn: psycopg.Connection[Any], event: BootstrapEvent, passwords: dict[str, str]
) -> None:
    app, mig = event.app_user, event.migration_role
    app_role, mig_role = sql.Identifier(app.name), sql.Identifier(mig.name)
    schema = sql.Identifier(event.schema_name)
    database = sql.Identifier(event.database)
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    _ensure_role(conn, app.name, app.connection_limit)
    _ensure_role(conn, mig.name, mig.connection_limit)
    for role, password in passwords.items():
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
    for setting, value in (
        ("statement_timeout", app.statement_timeout_ms),
        ("idle_in_transaction_session_timeout", app.idle_in_transaction_session_timeout_ms),
        ("lock_timeout", app.lock_timeout_ms),
    ):
        conn.execute(
            sql.SQL("ALTER ROLE {} SET {} = {}").format(
                app_role, sql.Identifier(setting), sql.Literal(value)
            )
        )
    conn.execute(
        sql.SQL("ALTER ROLE {} SET search_path TO {}").format(
            app_role, sql.SQL(", ").join(sql.Identifier(s) for s in app.search_path)
        )
    )
    conn.execute(sql.SQL("ALTER ROLE {} SET search_path TO {}").format(mig_role, schema))
    # The RDS master is not a superuser: it must be a member of the migration role to create a
    # schema owned by it and to set that role's default privileges.
    (is_super,) = conn.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone() or (False,)
    if not is_super:
        conn.execute(sql.SQL("GRANT {} TO current_user").format(mig_role))
    conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(mig_role))
    conn.execute(
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(schema, mig_role)
    )
    conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, mig_role))
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, app_role))
    # Nobody but owners creates objects: no CREATE on public, no CREATE or TEMP on the database.
    conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    conn.execute(sql.SQL("REVOKE CREATE, TEMPORARY ON DATABASE {} FROM PUBLIC").format(database))
    conn.execute(
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}").format(database, app_role, mig_role)
    )
    for grant in (
        f"GRANT {APP_TABLE_PRIVILEGES} ON TABLES TO {{app}}",
        "GRANT USAGE ON SEQUENCES TO {app}",
    ):
        conn.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {mig} IN SCHEMA {schema} " + grant).format(
                mig=mig_role, schema=schema, app=app_role
            )
        )


def _grant_tables(conn: psycopg.Connection[Any], event: BootstrapEvent) -> None:
    """Grants on what migrations created (defaults cover new tables; this covers older ones)."""
    app_role = sql.Identifier(event.app_user.name)
    schema = event.schema_name
    rows = conn.execute(
        "SELECT c.relname, c.relkind::text FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'S')",
        (schema,),
    ).fetchall()
    for name, kind in rows:
        relation = sql.Identifier(schema, str(name))
        if name in YOYO_TABLES:
            conn.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(relation, app_role))
        elif kind == "S":
            conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(relation, app_role))
        else:
            conn.execute(
                sql.SQL("GRANT " + APP_TABLE_PRIVILEGES + " ON TABLE {} TO {}").format(
                    relation, app_role
                )
            )


def migrate(target: Target, migrator: DatabaseSecret, event: BootstrapEvent) -> list[str]:
    """Apply pending migrations as the migration role; the ids applied."""
    query = urlencode(
        {
            "schema": event.schema_name,
            "sslmode": target.sslmode,
            "sslrootcert": target.sslrootcert or "",
            "connect_timeout": str(target.connect_timeout_s),
            "application_name": "slotguard-migrations",
        }
    )
    uri = (
        f"postgresql+psycopg://{quote(event.migration_role.name, safe='')}:"
        f"{quote(migrator.password, safe='')}@{target.host}:{target.port}/"
        f"{quote(event.database, safe='')}?{query}"
    )
    backend = get_backend(uri)
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [str(m.id) for m in pending]
    finally:
        backend.connection.close()


@contextmanager
def _master(
    target: Target, master: DatabaseSecret, dbname: str
) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(_conninfo(target, master.username, master.password, dbname)) as conn:
        yield conn


def run(
    event: BootstrapEvent,
    target: Target,
    master: DatabaseSecret,
    app_secret: DatabaseSecret,
    migrator: DatabaseSecret,
) -> BootstrapReport:
    """Create/update the roles and grants, migrate, and report what changed."""
    app, mig = event.app_user.name, event.migration_role.name
    if app_secret.username != app or migrator.username != mig:
        raise BootstrapInputError(
            f"secret usernames ({app_secret.username!r}, {migrator.username!r}) must match the "
            f"event's app_user.name {app!r} and migration_role.name {mig!r}"
        )
    with _master(target, master, event.database) as conn:
        before = snapshot(conn, event)
        conn.commit()
        passwords: dict[str, str] = {}
        for role, secret in ((app, app_secret), (mig, migrator)):
            needed = _password_needed(conn, target, secret, role, event.database)
            if needed is not None:
                passwords[role] = needed
        conn.commit()
        with conn.transaction():
            _configure(conn, event, passwords)
    applied = migrate(target, migrator, event)
    with _master(target, master, event.database) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            _grant_tables(conn, event)
        after = snapshot(conn, event)
    changes = diff(before, after) + [
        Change(item=f"role {role} password", before=None, after="set") for role in sorted(passwords)
    ]
    changed = bool(changes or applied)
    summary = (
        f"{len(changes)} catalog change(s), {len(applied)} migration(s) applied"
        if changed
        else "no change"
    )
    return BootstrapReport(
        changed=changed, changes=changes, migrations_applied=applied, summary=summary
    )


# -- the Lambda handler --------------------------------------------------------------------------


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ConfigurationError(f"the bootstrap function needs {name} in its environment")
    return value


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point: the event carries the budget's decisions, secrets come from the env."""
    note_invocation()
    try:
        parsed = BootstrapEvent.model_validate(event)
    except ValidationError as exc:
        raise BootstrapInputError(f"bootstrap event is invalid: {exc}") from exc
    master = read_secret(_env("MASTER_SECRET_ARN"))
    app_secret = read_secret(_env("APP_USER_SECRET_ARN"))
    migrator = read_secret(_env("MIGRATOR_SECRET_ARN"))
    host = os.environ.get("DB_HOST") or app_secret.host
    port = os.environ.get("DB_PORT") or app_secret.port or 5432
    if not host:
        raise ConfigurationError("set DB_HOST (the database endpoint) for the bootstrap function")
    target = Target.model_validate(
        {
            "host": host,
            "port": port,
            "sslmode": os.environ.get("DB_SSLMODE") or "verify-full",
            "sslrootcert": os.environ.get("DB_SSLROOTCERT") or None,
            "connect_timeout_s": os.environ.get("DB_CONNECT_TIMEOUT_S") or 10,
        }
    )
    report = run(parsed, target, master, app_secret, migrator)
    logger.info("bootstrap finished", extra={"summary": report.summary})
    flush()
    return report.model_dump()

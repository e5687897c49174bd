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
from collections.abc import Iterator, Mapping
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
from .rotation import clone_name, clone_role, other_user

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
# The predefined role that reads every session's state in pg_stat_activity.
STATS_ROLE = "pg_read_all_stats"


class BootstrapInputError(ValueError):
    """The bootstrap event or environment is malformed; the message names what to change."""


class AppUserSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=IDENTIFIER)
    # The budget's limit: the pooler ceiling of the budget's max_connections.
    connection_limit: int = Field(ge=1)
    # Slots the pooler never gets on the running server (the budget's admin margin). Given, the
    # role's limit is also held within what the RUNNING server offers: max_connections is a
    # static parameter that changes only at a reboot, and until then the pooler (which logs in
    # as this role) must not be able to open more than the server it talks to can give.
    admin_margin: int | None = Field(default=None, ge=0)
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
    # The workloads' roles (stack setting `workloads`): each its own login role with its own
    # limit and timeouts, and the application role's grants. Empty without workloads.
    workloads: tuple[AppUserSpec, ...] = ()
    # The application schema; by default the first entry of app_user.search_path.
    app_schema: str | None = Field(default=None, pattern=IDENTIFIER, alias="schema")

    @property
    def schema_name(self) -> str:
        return self.app_schema or self.app_user.search_path[0]

    @property
    def application_roles(self) -> tuple[AppUserSpec, ...]:
        """app_user and every workload's role: the roles functions log in as."""
        return (self.app_user, *self.workloads)


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
    # The CONNECTION LIMIT set, and whether it is below the budget's until the server restarts
    # with the budget's max_connections (a pending reboot).
    connection_limit: int | None = None
    waiting_for_restart: bool = False
    # How the migration role reads other sessions' states (see `_grant_stats`).
    stats_access: str | None = None


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
    for role in (*(r.name for r in event.application_roles), event.migration_role.name):
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


def running_connection_limit(conn: psycopg.Connection[Any], app: AppUserSpec) -> int:
    """The role's limit: the budget's, held within what the running server gives the pooler.

    `max_connections` and `superuser_reserved_connections` are static: a parameter group change
    waits for a reboot (pending-reboot), so the running values, not the budget's, bound what the
    pooler may open now. On an increase the limit stays at the running server's ceiling until
    the restart; on a decrease it drops to the budget's at once, before the restart.
    """
    if app.admin_margin is None:
        return app.connection_limit
    row = conn.execute(
        "SELECT current_setting('max_connections')::int,"
        " current_setting('superuser_reserved_connections')::int,"
        " coalesce(current_setting('reserved_connections', true), '0')::int,"
        " coalesce(current_setting('rds.rds_superuser_reserved_connections', true), '0')::int"
    ).fetchone()
    assert row is not None
    max_connections, superuser_reserved, reserved, rds_reserved = (int(v) for v in row)
    running = max_connections - superuser_reserved - reserved - rds_reserved - app.admin_margin
    return max(1, min(app.connection_limit, running))


def _member_of(conn: psycopg.Connection[Any], member: str, role: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
        " JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = %s AND u.rolname = %s",
        (role, member),
    ).fetchone()
    return row is not None


def _try_grant(conn: psycopg.Connection[Any], role: str, member: str) -> bool:
    """GRANT role TO member in a savepoint; False when the current user may not."""
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(member))
            )
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def grant_stats(
    conn: psycopg.Connection[Any], migrator: str, app: str, workloads: tuple[str, ...] = ()
) -> str:
    """Let the migration role (owner of the utilisation function) read sessions' states.

    From PostgreSQL 16, granting membership needs ADMIN OPTION on the granted role; CREATEROLE
    alone no longer suffices (PostgreSQL 16 release notes, "Restrict the privileges of
    CREATEROLE"). RDS's master user is NOSUPERUSER CREATEROLE, and AWS's rds_superuser page
    lists the roles it may grant (rds_superuser, rds_replication, rds_password), not
    pg_read_all_stats. So the grant is tried, and when refused the migration role gets the
    privileges of the application role instead (its creator holds ADMIN OPTION on it), which is
    enough to see the states of the application's sessions. Never fails the deploy.
    """
    if _member_of(conn, migrator, STATS_ROLE) or _try_grant(conn, STATS_ROLE, migrator):
        return STATS_ROLE
    logger.warning(
        "cannot grant pg_read_all_stats to the migration role; it reads the application "
        "role's sessions only",
        extra={"migration_role": migrator},
    )
    if _member_of(conn, migrator, app) or _try_grant(conn, app, migrator):
        # The workloads' roles too, so utilisation counts their sessions (created by the same
        # master, which holds ADMIN OPTION on them as on app_user).
        for role in workloads:
            if not _member_of(conn, migrator, role):
                _try_grant(conn, role, migrator)
        return f"{app} sessions"
    logger.warning("the migration role reads its own sessions' states only")
    return "own sessions"


def _role_settings(conn: psycopg.Connection[Any], app: AppUserSpec) -> None:
    """Timeouts and search_path on the role: every pooled server connection gets them."""
    app_role = sql.Identifier(app.name)
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


def _configure(
    conn: psycopg.Connection[Any],
    event: BootstrapEvent,
    passwords: dict[str, str],
    limits: dict[str, int],
    *,
    clone: bool = False,
) -> str:
    app, mig = event.app_user, event.migration_role
    app_role, mig_role = sql.Identifier(app.name), sql.Identifier(mig.name)
    schema = sql.Identifier(event.schema_name)
    database = sql.Identifier(event.database)
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    for spec in event.application_roles:
        _ensure_role(conn, spec.name, limits[spec.name])
    _ensure_role(conn, mig.name, mig.connection_limit)
    if clone:
        # The alternating-users login: created here so its password can be set; its settings,
        # limit and membership follow app_user's at the end (clone_role).
        _ensure_role(conn, clone_name(app.name), limits[app.name])
    for role, password in passwords.items():
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
    for spec in event.application_roles:
        _role_settings(conn, spec)
    conn.execute(sql.SQL("ALTER ROLE {} SET search_path TO {}").format(mig_role, schema))
    # The RDS master is not a superuser: it must be a member of the migration role to create a
    # schema owned by it and to set that role's default privileges.
    (is_super,) = conn.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone() or (False,)
    if not is_super:
        conn.execute(sql.SQL("GRANT {} TO current_user").format(mig_role))
    stats_access = grant_stats(conn, mig.name, app.name, tuple(w.name for w in event.workloads))
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
    # A workload's role gets app_user's privileges, granted directly (not through membership,
    # which would let it SET ROLE app_user and take app_user's limit and timeouts).
    for spec in event.workloads:
        workload_role = sql.Identifier(spec.name)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, workload_role))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, workload_role))
        for grant in (
            f"GRANT {APP_TABLE_PRIVILEGES} ON TABLES TO {{app}}",
            "GRANT USAGE ON SEQUENCES TO {app}",
        ):
            conn.execute(
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {mig} IN SCHEMA {schema} " + grant
                ).format(mig=mig_role, schema=schema, app=workload_role)
            )
    if clone:
        clone_role(conn, app.name)
    return stats_access


def _grant_tables(conn: psycopg.Connection[Any], event: BootstrapEvent) -> None:
    """Grants on what migrations created (defaults cover new tables; this covers older ones)."""
    for spec in event.application_roles:
        _grant_role_tables(conn, event.schema_name, sql.Identifier(spec.name))


def _grant_role_tables(
    conn: psycopg.Connection[Any], schema: str, app_role: sql.Identifier
) -> None:
    """One application role's grants on the schema's relations."""
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
    *,
    workload_secrets: dict[str, DatabaseSecret] | None = None,
    standby: DatabaseSecret | None = None,
) -> BootstrapReport:
    """Create/update the roles and grants, migrate, and report what changed.

    `standby` is the alternating-users login the functions' secret does not name
    (functions/rotation.py): its role and password are kept too, so a rotation can change it
    while nobody uses it.
    """
    app, mig = event.app_user.name, event.migration_role.name
    # After an alternating-users rotation the secret names the clone (functions/rotation.py).
    logins = (app, clone_name(app))
    if app_secret.username not in logins or migrator.username != mig:
        raise BootstrapInputError(
            f"secret usernames ({app_secret.username!r}, {migrator.username!r}) must match the "
            f"event's app_user.name {app!r} (or {clone_name(app)!r}) and migration_role.name "
            f"{mig!r}"
        )
    workload_secrets = workload_secrets or {}
    missing = [w.name for w in event.workloads if w.name not in workload_secrets]
    wrong = [r for r, s in workload_secrets.items() if s.username != r]
    if missing or wrong:
        raise BootstrapInputError(
            f"workload role(s) without a secret: {missing or '-'}; secrets whose username is "
            f"not their role: {wrong or '-'} (set WORKLOAD_SECRET_ARN_<ROLE> to each role's secret)"
        )
    if standby is not None and (
        standby.username not in logins or standby.username == app_secret.username
    ):
        raise BootstrapInputError(
            f"the standby secret names {standby.username!r}: it must be the login the app "
            f"secret does not name ({other_user(app_secret.username, app)!r})"
        )
    secrets_by_role = [(app_secret.username, app_secret), (mig, migrator)]
    if standby is not None:
        secrets_by_role.insert(1, (standby.username, standby))
    clone = clone_name(app) in (role for role, _ in secrets_by_role)
    with _master(target, master, event.database) as conn:
        before = snapshot(conn, event)
        conn.commit()
        passwords: dict[str, str] = {}
        secrets_by_role += [(w.name, workload_secrets[w.name]) for w in event.workloads]
        for role, secret in secrets_by_role:
            needed = _password_needed(conn, target, secret, role, event.database)
            if needed is not None:
                passwords[role] = needed
        conn.commit()
        limits = {
            spec.name: running_connection_limit(conn, spec) for spec in event.application_roles
        }
        limit = limits[app]
        conn.commit()
        with conn.transaction():
            stats_access = _configure(conn, event, passwords, limits, clone=clone)
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
    waiting = limit < event.app_user.connection_limit
    if waiting:
        logger.warning(
            "app_user's connection limit is held below the budget's until the database restarts",
            extra={"connection_limit": limit, "budget": event.app_user.connection_limit},
        )
    return BootstrapReport(
        changed=changed,
        changes=changes,
        migrations_applied=applied,
        summary=summary,
        connection_limit=limit,
        waiting_for_restart=waiting,
        stats_access=stats_access,
    )


# -- the Lambda handler --------------------------------------------------------------------------


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ConfigurationError(f"the bootstrap function needs {name} in its environment")
    return value


WORKLOAD_SECRET_PREFIX = "WORKLOAD_SECRET_ARN_"  # noqa: S105 - a variable name, not a secret


def _workload_secrets(env: Mapping[str, str]) -> dict[str, DatabaseSecret]:
    """`WORKLOAD_SECRET_ARN_<ROLE>`: each workload role's secret (the role lower-cased)."""
    return {
        name.removeprefix(WORKLOAD_SECRET_PREFIX).lower(): read_secret(value)
        for name, value in sorted(env.items())
        if name.startswith(WORKLOAD_SECRET_PREFIX) and value
    }


# The function's own configuration: the budget's roles, limits and timeouts as JSON, set by the
# program (infra/app_user.py) and by the local target. The invocation event is not read for them:
# anyone allowed lambda:InvokeFunction could otherwise re-run the master-credentialed bootstrap
# with other numbers.
CONFIG_ENV = "BOOTSTRAP_CONFIG"


def configured_event() -> BootstrapEvent:
    """The bootstrap's settings from its environment; a clear error names what is wrong."""
    raw = _env(CONFIG_ENV)
    try:
        return BootstrapEvent.model_validate_json(raw)
    except ValidationError as exc:
        raise BootstrapInputError(f"{CONFIG_ENV} is invalid: {exc}") from exc


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point: the event only triggers a run; settings and secrets come from the env."""
    note_invocation()
    parsed = configured_event()
    if event:
        logger.info(
            "the invocation event is ignored: the bootstrap's settings come from its configuration",
            extra={"event_keys": sorted(str(k) for k in event)},
        )
    master = read_secret(_env("MASTER_SECRET_ARN"))
    app_secret = read_secret(_env("APP_USER_SECRET_ARN"))
    standby_arn = os.environ.get("APP_USER_STANDBY_SECRET_ARN")
    standby = read_secret(standby_arn) if standby_arn else None
    migrator = read_secret(_env("MIGRATOR_SECRET_ARN"))
    workload_secrets = _workload_secrets(os.environ)
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
    report = run(
        parsed,
        target,
        master,
        app_secret,
        migrator,
        workload_secrets=workload_secrets,
        standby=standby,
    )
    logger.info("bootstrap finished", extra={"summary": report.summary})
    flush()
    return report.model_dump()

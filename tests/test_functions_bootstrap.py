"""Bootstrap against a real PostgreSQL: roles, role settings, least privilege, migrations."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from functions import bootstrap
from functions.config import ConfigurationError
from functions.credentials import DatabaseSecret
from tests.fixtures_functions import FakeLambdaContext, FunctionsStack, LocalAws, bootstrap_event

pytestmark = pytest.mark.integration


def shipped_migrations() -> list[str]:
    """The ids of the migrations in functions/migrations, in order: the kit's and a fork's own."""
    return sorted(
        path.name.removesuffix(".sql")
        for path in bootstrap.MIGRATIONS_DIR.glob("*.sql")
        if not path.name.endswith(".rollback.sql")
    )


def _app_conn(stack: FunctionsStack, dbname: str = "app") -> psycopg.Connection[Any]:
    return psycopg.connect(
        stack.postgres.conninfo("app_user", stack.app_password, dbname), autocommit=True
    )


def _handler_env(stack: FunctionsStack, aws_env: LocalAws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_SECRET_ARN", aws_env.put_secret(stack.master.model_dump()))
    monkeypatch.setenv("APP_USER_SECRET_ARN", aws_env.put_secret(stack.secret_value()))
    monkeypatch.setenv(
        "MIGRATOR_SECRET_ARN",
        aws_env.put_secret(stack.migrator_secret.model_dump(exclude_none=True)),
    )
    monkeypatch.setenv("DB_HOST", "127.0.0.1")
    monkeypatch.setenv("DB_PORT", str(stack.postgres.settings.port))
    monkeypatch.setenv("DB_SSLROOTCERT", str(stack.postgres.tls.ca_cert))
    monkeypatch.setenv(bootstrap.CONFIG_ENV, json.dumps(bootstrap_event()))


def test_first_run_creates_roles_and_applies_migrations(functions_stack):
    report = functions_stack.first_report
    assert report.changed
    assert report.migrations_applied == shipped_migrations()
    assert "0002.connection-utilisation" in report.migrations_applied  # the health function's
    items = {change.item for change in report.changes}
    assert "role app_user login" in items
    assert "role app_user password" in items
    assert "role app_user setting statement_timeout" in items


def test_second_run_through_the_handler_reports_no_change(functions_stack, aws_env, monkeypatch):
    _handler_env(functions_stack, aws_env, monkeypatch)
    report = bootstrap.handler(bootstrap_event(), FakeLambdaContext("bootstrap"))
    assert report["changed"] is False, report["changes"]
    assert report["changes"] == []
    assert report["migrations_applied"] == []
    assert report["summary"] == "no change"


def test_role_carries_its_limits_and_timeouts(functions_stack):
    with functions_stack.postgres.connect_admin(dbname="app") as admin:
        limit, login = admin.execute(
            "select rolconnlimit, rolcanlogin from pg_roles where rolname = 'app_user'"
        ).fetchone()
        (config,) = admin.execute(
            "select setconfig from pg_db_role_setting s join pg_roles r on r.oid = s.setrole"
            " where r.rolname = 'app_user' and s.setdatabase = 0"
        ).fetchone()
    assert (limit, login) == (20, True)
    assert set(config) == {
        "statement_timeout=1000",
        "idle_in_transaction_session_timeout=1500",
        "lock_timeout=500",
        "search_path=app",
    }
    with _app_conn(functions_stack) as conn:
        assert conn.execute("show statement_timeout").fetchone() == ("1s",)
        assert conn.execute("show search_path").fetchone() == ("app",)


def test_the_exact_scram_verifier_is_installed(functions_stack):
    with functions_stack.postgres.connect_admin() as admin:
        (stored,) = admin.execute(
            "select rolpassword from pg_authid where rolname = 'app_user'"
        ).fetchone()
    assert stored == functions_stack.app_secret.scram_verifier


@pytest.mark.parametrize(
    "statement",
    [
        "create table app.sneaky (id int)",
        "create table public.sneaky (id int)",
        "create temporary table sneaky (id int)",
        "create schema sneaky",
        "create function app.f() returns int language sql as 'select 1'",
    ],
)
def test_app_user_cannot_create_anything(functions_stack, statement):
    with _app_conn(functions_stack) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def test_app_user_reads_and_writes_app_tables_but_no_other_schema(functions_stack):
    with functions_stack.postgres.connect_admin(dbname="app") as admin:
        admin.execute("create schema if not exists other")
        admin.execute("create table if not exists other.secrets (v text)")
        admin.execute("create table if not exists public.leftover (v text)")
    with _app_conn(functions_stack) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("insert into items (name) values ('probe')")
            assert conn.execute("select count(*) from items where name = 'probe'").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from other.secrets")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from public.leftover")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from _yoyo_migration")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from pg_authid")


def test_migrations_ran_as_the_migration_role(functions_stack):
    with functions_stack.postgres.connect_admin(dbname="app") as admin:
        owners = dict(
            admin.execute(
                "select c.relname, pg_get_userbyid(c.relowner) from pg_class c"
                " join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = 'app' and c.relkind = 'r'"
            ).fetchall()
        )
        (fn_owner,) = admin.execute(
            "select pg_get_userbyid(proowner) from pg_proc where proname = 'connection_utilisation'"
        ).fetchone()
        (schema_owner,) = admin.execute(
            "select pg_get_userbyid(nspowner) from pg_namespace where nspname = 'app'"
        ).fetchone()
    assert owners["items"] == "app_migrator"
    assert owners["_yoyo_migration"] == "app_migrator"
    assert fn_owner == schema_owner == "app_migrator"


def test_a_changed_setting_is_applied_and_reported(functions_stack):
    stack = functions_stack

    def run(event: dict[str, Any]) -> bootstrap.BootstrapReport:
        return bootstrap.run(
            bootstrap.BootstrapEvent.model_validate(event),
            stack.target,
            stack.master,
            stack.app_secret,
            stack.migrator_secret,
        )

    try:
        report = run(bootstrap_event(statement_timeout_ms=2500, connection_limit=15))
        changes = {c.item: (c.before, c.after) for c in report.changes}
        assert changes == {
            "role app_user setting statement_timeout": ("1000", "2500"),
            "role app_user connection_limit": ("20", "15"),
        }
    finally:
        restored = run(bootstrap_event())
    assert {c.item for c in restored.changes} == set(changes)


def test_bad_configuration_names_the_field(functions_stack, aws_env, monkeypatch):
    _handler_env(functions_stack, aws_env, monkeypatch)
    config = bootstrap_event(name="app-user; drop role postgres")
    monkeypatch.setenv(bootstrap.CONFIG_ENV, json.dumps(config))
    with pytest.raises(
        bootstrap.BootstrapInputError, match=r"(?s)BOOTSTRAP_CONFIG.*app_user\.name"
    ):
        bootstrap.handler({}, FakeLambdaContext("bootstrap"))


def test_an_event_carrying_other_numbers_changes_nothing(functions_stack, aws_env, monkeypatch):
    """Whoever may invoke the bootstrap cannot make it apply other limits or timeouts."""
    _handler_env(functions_stack, aws_env, monkeypatch)
    hostile = bootstrap_event(connection_limit=500, statement_timeout_ms=0, lock_timeout_ms=0)
    hostile["migration_role"] = {"name": "app_user", "connection_limit": 100}
    report = bootstrap.handler(hostile, FakeLambdaContext("bootstrap"))
    assert report["changed"] is False, report["changes"]
    with functions_stack.postgres.connect_admin(dbname="app") as admin:
        (limit,) = admin.execute(
            "select rolconnlimit from pg_roles where rolname = 'app_user'"
        ).fetchone()
        (config,) = admin.execute(
            "select setconfig from pg_db_role_setting s join pg_roles r on r.oid = s.setrole"
            " where r.rolname = 'app_user'"
        ).fetchone()
    assert limit == bootstrap_event()["app_user"]["connection_limit"]
    assert "statement_timeout=1000" in config


def test_without_its_configuration_the_bootstrap_names_the_variable(
    functions_stack, aws_env, monkeypatch
):
    _handler_env(functions_stack, aws_env, monkeypatch)
    monkeypatch.delenv(bootstrap.CONFIG_ENV)
    with pytest.raises(ConfigurationError, match="BOOTSTRAP_CONFIG"):
        bootstrap.handler(bootstrap_event(), FakeLambdaContext("bootstrap"))


def test_an_rds_like_master_without_superuser_bootstraps_idempotently(functions_stack):
    """On RDS the master is not a superuser: no pg_authid, membership needed for grants."""
    postgres = functions_stack.postgres
    with postgres.connect_admin() as admin:
        admin.execute("drop database if exists rds_app")
        admin.execute("drop role if exists rds_master")
        admin.execute("create role rds_master login createrole createdb password 'rds-master-pw'")
        admin.execute("create database rds_app owner rds_master")
    master = DatabaseSecret(username="rds_master", password="rds-master-pw")
    app = DatabaseSecret.model_validate(
        {**functions_stack.secret_value(), "username": "rds_app_user", "dbname": "rds_app"}
    )
    migrator = DatabaseSecret(username="rds_migrator", password="rds-migrator-pw")
    event = bootstrap.BootstrapEvent.model_validate(
        {
            **bootstrap_event(name="rds_app_user"),
            "migration_role": {"name": "rds_migrator"},
            "database": "rds_app",
        }
    )
    first = bootstrap.run(event, functions_stack.target, master, app, migrator)
    second = bootstrap.run(event, functions_stack.target, master, app, migrator)
    assert first.changed
    assert first.migrations_applied == shipped_migrations()
    assert not second.changed, second.changes
    with (
        psycopg.connect(postgres.conninfo("rds_app_user", app.password, "rds_app")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("create table app.sneaky (id int)")

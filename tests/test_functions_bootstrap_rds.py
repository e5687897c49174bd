"""The bootstrap against real PostgreSQL where RDS differs: static parameters and the master's rights.

- `max_connections` is a static parameter: a parameter group change is `pending-reboot` until the
  instance restarts (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_WorkingWithParamGroups.html:
  "static parameters ... require a manual reboot"). The role's `CONNECTION LIMIT` is the hard guard
  (the pooler logs in as `app_user`), so the bootstrap derives it from the RUNNING server.
- RDS's master user is `NOSUPERUSER CREATEROLE` (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Appendix.PostgreSQL.CommonDBATasks.Roles.rds_superuser.html),
  and from PostgreSQL 16 granting a role needs ADMIN OPTION on it
  (https://www.postgresql.org/docs/16/release-16.html, "Restrict the privileges of CREATEROLE").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from functions import bootstrap
from tests.fixtures_functions import FunctionsStack, bootstrap_event

pytestmark = pytest.mark.integration


def _limit(stack: FunctionsStack, role: str = "app_user") -> int:
    with stack.postgres.connect_admin() as admin:
        row = admin.execute("select rolconnlimit from pg_roles where rolname = %s", (role,))
        value = row.fetchone()
    assert value is not None
    return int(value[0])


def _running_ceiling(stack: FunctionsStack, margin: int) -> int:
    with stack.postgres.connect_admin() as admin:
        row = admin.execute(
            "select current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
        ).fetchone()
    assert row is not None
    return int(row[0]) - margin


@pytest.fixture
def restore_event(functions_stack: FunctionsStack) -> Iterator[None]:
    yield
    stack = functions_stack
    event = bootstrap.BootstrapEvent.model_validate(stack.event)
    bootstrap.run(event, stack.target, stack.master, stack.app_secret, stack.migrator_secret)


def _run(stack: FunctionsStack, **app_user: Any) -> bootstrap.BootstrapReport:
    event = bootstrap.BootstrapEvent.model_validate(bootstrap_event(**app_user))
    return bootstrap.run(event, stack.target, stack.master, stack.app_secret, stack.migrator_secret)


def test_a_raised_budget_waits_for_the_running_server(functions_stack, restore_event):
    """Increase, before the reboot: the budget asks for more than the running server gives."""
    margin = 3
    ceiling = _running_ceiling(functions_stack, margin)
    report = _run(functions_stack, connection_limit=ceiling + 30, admin_margin=margin)
    assert _limit(functions_stack) == ceiling == report.connection_limit
    assert report.waiting_for_restart


def test_a_lowered_budget_applies_before_the_reboot(functions_stack, restore_event):
    """Decrease: the running server still has more; the budget's smaller limit holds at once."""
    margin = 3
    ceiling = _running_ceiling(functions_stack, margin)
    report = _run(functions_stack, connection_limit=ceiling - 10, admin_margin=margin)
    assert _limit(functions_stack) == ceiling - 10 == report.connection_limit
    assert not report.waiting_for_restart


def test_the_role_limit_is_a_hard_guard_on_logins(functions_stack, restore_event):
    """PostgreSQL refuses the login beyond CONNECTION LIMIT: a pooler cannot exceed it."""
    stack = functions_stack
    with stack.postgres.connect_admin() as admin:
        # Sessions the shared stack already holds as app_user (its pooler's, a kept function
        # connection) count against the limit too: leave room for exactly two more.
        row = admin.execute(
            "select count(*) from pg_stat_activity where usename = 'app_user'"
        ).fetchone()
    assert row is not None
    already = int(row[0])
    _run(stack, connection_limit=already + 2, admin_margin=3)
    conninfo = stack.postgres.conninfo("app_user", stack.app_password, "app")
    held = [psycopg.connect(conninfo) for _ in range(2)]
    try:
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            psycopg.connect(conninfo)
    finally:
        for conn in held:
            conn.close()


def test_the_budget_event_carries_the_admin_margin():
    """The deployment's event gives the bootstrap what it needs to derive the running limit."""
    from infra.budget import compute_budget
    from infra.offline import variant_settings

    budget = compute_budget(variant_settings("dev"))
    event = bootstrap.BootstrapEvent.model_validate(budget.bootstrap_event("app"))
    assert event.app_user.admin_margin == budget.admin_margin
    assert event.app_user.connection_limit == budget.pooler_ceiling


# -- pg_read_all_stats as a non-superuser master --------------------------------------------------


@pytest.fixture
def roles(functions_stack: FunctionsStack) -> Iterator[dict[str, str]]:
    names = {"master": "sim_master", "app": "sim_app", "migrator": "sim_migrator"}
    with functions_stack.postgres.connect_admin() as admin:
        for name in names.values():
            admin.execute(f"drop role if exists {name}")
        admin.execute("create role sim_app login")
        admin.execute("create role sim_migrator login")
    yield names
    with functions_stack.postgres.connect_admin() as admin:
        # Members first: from PostgreSQL 16 a membership depends on its grantor (sim_master),
        # which cannot be dropped while a membership it granted exists.
        for name in reversed(names.values()):
            admin.execute(f"drop role if exists {name}")


def _as_master(stack: FunctionsStack, attributes: str) -> psycopg.Connection[Any]:
    with stack.postgres.connect_admin() as admin:
        admin.execute(f"create role sim_master login nosuperuser {attributes} password 'sim-pw'")
    return psycopg.connect(stack.postgres.conninfo("sim_master", "sim-pw", "app"))


def _members(stack: FunctionsStack, member: str) -> set[str]:
    with stack.postgres.connect_admin() as admin:
        rows = admin.execute(
            "select r.rolname from pg_auth_members m join pg_roles r on r.oid = m.roleid"
            " join pg_roles u on u.oid = m.member where u.rolname = %s",
            (member,),
        ).fetchall()
    return {str(row[0]) for row in rows}


def test_stats_grant_refused_falls_back_and_never_fails(functions_stack, roles):
    """A master without ADMIN OPTION on pg_read_all_stats (PG 16 RDS) still completes."""
    stack = functions_stack
    with stack.postgres.connect_admin() as admin:
        admin.execute("drop role if exists sim_master")
    conn = _as_master(stack, "nocreaterole")
    with stack.postgres.connect_admin() as admin:
        # The creator of a role holds ADMIN OPTION on it from PostgreSQL 16 on.
        admin.execute("grant sim_app to sim_master with admin option")
    with conn, conn.transaction():
        access = bootstrap.grant_stats(conn, "sim_migrator", "sim_app")
        conn.execute("select 1")  # the transaction is still usable
    assert access == "sim_app sessions"
    assert _members(stack, "sim_migrator") == {"sim_app"}


def test_stats_grant_with_no_right_at_all_is_only_reported(functions_stack, roles):
    stack = functions_stack
    conn = _as_master(stack, "nocreaterole")
    with conn, conn.transaction():
        access = bootstrap.grant_stats(conn, "sim_migrator", "sim_app")
    assert access == "own sessions"
    assert _members(stack, "sim_migrator") == set()


def test_createrole_alone_no_longer_grants_stats_from_16(functions_stack, roles):
    """PostgreSQL 16: CREATEROLE without ADMIN OPTION on pg_read_all_stats cannot grant it.

    (https://www.postgresql.org/docs/16/release-16.html, "Restrict the privileges of
    CREATEROLE"); the local server runs the stacks' major, so this is what RDS 16 does too.
    """
    stack = functions_stack
    with stack.postgres.connect_admin() as admin:
        row = admin.execute("show server_version_num").fetchone()
    assert row is not None
    assert int(row[0]) >= 160000
    conn = _as_master(stack, "createrole")
    with conn, conn.transaction():
        access = bootstrap.grant_stats(conn, "sim_migrator", "sim_app")
    assert access == "own sessions"
    assert _members(stack, "sim_migrator") == set()


def test_stats_grant_where_allowed(functions_stack, roles):
    """A master holding ADMIN OPTION on pg_read_all_stats (PostgreSQL 15: CREATEROLE) grants it."""
    stack = functions_stack
    conn = _as_master(stack, "createrole")
    with stack.postgres.connect_admin() as admin:
        admin.execute("grant pg_read_all_stats to sim_master with admin option")
    with conn, conn.transaction():
        assert bootstrap.grant_stats(conn, "sim_migrator", "sim_app") == "pg_read_all_stats"
        # A second run finds the membership and grants nothing again.
        assert bootstrap.grant_stats(conn, "sim_migrator", "sim_app") == "pg_read_all_stats"
    assert _members(stack, "sim_migrator") == {"pg_read_all_stats"}

"""Workloads against real servers: PgBouncer's per-user pools, the bootstrap's workload roles.

PgBouncer 1.24 doc/config.md, "Section [users]": `pool_size` "Set the maximum size of pools for
all connections from this user. If not set, the database or default_pool_size is used."; and
`max_user_connections` caps all of the user's pools together. These tests hold the kit to that
with the pinned PgBouncer, not with the documentation alone.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import psycopg
import pytest

from functions import bootstrap
from functions.credentials import DatabaseSecret
from pgbouncer import scram
from pgbouncer.config import UserPool
from tests.fixtures_functions import bootstrap_event

pytestmark = [pytest.mark.integration, pytest.mark.heavy(seconds=15)]


def _hold(conninfo: str, seconds: float, started: threading.Event) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        started.set()
        conn.execute("SELECT pg_sleep(%s)", (seconds,))


def _pool(bouncer: Any, user: str) -> dict[str, object]:
    return next(p for p in bouncer.show("POOLS") if p["user"] == user)


def test_a_saturated_workload_pool_leaves_the_default_pool_to_its_users(
    postgres_factory, pgbouncer_factory
):
    server = postgres_factory(max_connections=30)
    passwords = {"fast": secrets.token_urlsafe(12), "slow": secrets.token_urlsafe(12)}
    # default_pool_size 2 for `fast`, a pool of 1 for `slow`: 2 + 1 = max_db_connections 3.
    bouncer = pgbouncer_factory(
        server,
        users=passwords,
        pool_size=2,
        max_db_connections=3,
        query_wait_timeout_s=20,
        user_pools=(UserPool("slow", pool_size=1, max_user_connections=1),),
    )
    users = {u["name"]: u for u in bouncer.show("USERS")}
    assert int(str(users["slow"]["pool_size"])) == 1
    slow = bouncer.conninfo("slow", passwords["slow"])
    fast = bouncer.conninfo("fast", passwords["fast"])
    threads = []
    for _ in range(3):  # three long queries on a pool of one: one runs, two wait
        started = threading.Event()
        thread = threading.Thread(target=_hold, args=(slow, 3.0, started), daemon=True)
        thread.start()
        started.wait(10)
        threads.append(thread)
    deadline = time.monotonic() + 5
    while int(str(_pool(bouncer, "slow")["cl_waiting"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pool = _pool(bouncer, "slow")
    assert int(str(pool["sv_active"])) == 1
    assert int(str(pool["cl_waiting"])) == 2
    # Meanwhile the other user's pool answers at once, twice in parallel.
    began = time.monotonic()
    with psycopg.connect(fast, autocommit=True) as a, psycopg.connect(fast, autocommit=True) as b:
        a.execute("SELECT 1")
        b.execute("SELECT 1")
    assert time.monotonic() - began < 2.0
    for thread in threads:
        thread.join(15)


def test_bootstrap_creates_each_workload_role_with_its_limit_timeouts_and_grants(
    postgres_factory,
):
    server = postgres_factory(max_connections=40)
    with server.connect_admin() as admin:
        admin.execute("CREATE DATABASE app")
    common = {"engine": "postgres", "host": "127.0.0.1", "port": server.settings.port}

    def secret(user: str) -> DatabaseSecret:
        password = secrets.token_urlsafe(12)
        return DatabaseSecret.model_validate(
            {
                "username": user,
                "password": password,
                "dbname": "app",
                "scram_verifier": scram.make_verifier(password),
                **common,
            }
        )

    target = bootstrap.Target(
        host="127.0.0.1",
        port=server.settings.port,
        sslrootcert=str(server.tls.ca_cert),
        connect_timeout_s=5,
    )
    master = DatabaseSecret(username="postgres", password=server.master_password)
    app, migrator, reports = secret("app_user"), secret("app_migrator"), secret("app_reports")
    event = bootstrap_event()
    event["workloads"] = [
        {
            "name": "app_reports",
            "connection_limit": 4,
            "statement_timeout_ms": 20_000,
            "idle_in_transaction_session_timeout_ms": 30_000,
            "lock_timeout_ms": 5000,
            "search_path": ["app"],
        }
    ]
    parsed = bootstrap.BootstrapEvent.model_validate(event)
    with pytest.raises(bootstrap.BootstrapInputError, match="without a secret"):
        bootstrap.run(parsed, target, master, app, migrator)
    first = bootstrap.run(
        parsed, target, master, app, migrator, workload_secrets={"app_reports": reports}
    )
    assert "role app_reports setting statement_timeout" in {c.item for c in first.changes}
    again = bootstrap.run(
        parsed, target, master, app, migrator, workload_secrets={"app_reports": reports}
    )
    assert again.changed is False, again.changes
    with server.connect_admin(dbname="app") as admin:
        (limit,) = admin.execute(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app_reports'"
        ).fetchone()
        (member_of_app_user,) = admin.execute(
            "SELECT pg_has_role('app_reports', 'app_user', 'MEMBER')"
        ).fetchone()
    assert limit == 4
    assert member_of_app_user is False  # its own role, not app_user's limit or timeouts
    with psycopg.connect(
        server.conninfo("app_reports", reports.password, "app"), autocommit=True
    ) as conn:
        timeout = conn.execute("SHOW statement_timeout").fetchone()
        assert timeout == ("20s",)
        conn.execute("INSERT INTO items (name, quantity) VALUES ('workload', 1)")
        count = conn.execute("SELECT count(*) FROM items WHERE name = 'workload'").fetchone()
        assert count == (1,)


def test_stats_fallback_lets_the_migration_role_see_the_workloads_sessions(postgres_factory):
    """Where pg_read_all_stats cannot be granted (RDS, PostgreSQL 16), utilisation still counts
    the workloads' sessions: the migration role gets their privileges as it gets app_user's."""
    server = postgres_factory(max_connections=20)
    with server.connect_admin() as admin:
        for role in ("sim_app", "sim_reports", "sim_migrator"):
            admin.execute(f"create role {role} login")
        admin.execute("create role sim_master login nosuperuser nocreaterole password 'sim-pw'")
        admin.execute("grant sim_app, sim_reports to sim_master with admin option")
    with psycopg.connect(server.conninfo("sim_master", "sim-pw")) as conn, conn.transaction():
        access = bootstrap.grant_stats(conn, "sim_migrator", "sim_app", ("sim_reports",))
    assert access == "sim_app sessions"
    with server.connect_admin() as admin:
        rows = admin.execute(
            "select r.rolname from pg_auth_members m join pg_roles r on r.oid = m.roleid"
            " join pg_roles u on u.oid = m.member where u.rolname = 'sim_migrator'"
        ).fetchall()
    assert {str(row[0]) for row in rows} == {"sim_app", "sim_reports"}

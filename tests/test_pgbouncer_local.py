"""The rendered configuration runs the real PgBouncer: SCRAM over TLS, no plaintext at rest."""

from __future__ import annotations

import dataclasses
import os
import stat
import time

import psycopg
import pytest

from pgbouncer import scram

pytestmark = pytest.mark.integration

APP_PASSWORD = "app-secret-Ünïcode-42"


@pytest.fixture(scope="module")
def bouncer(postgres, pgbouncer_factory):
    return pgbouncer_factory(postgres, users={"app_user": APP_PASSWORD}, pool_size=5)


def test_app_user_logs_in_with_scram_over_tls(bouncer, postgres):
    with psycopg.connect(bouncer.conninfo("app_user", APP_PASSWORD)) as conn:
        assert conn.info.pgconn.ssl_in_use
        row = conn.execute(
            "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()"
        ).fetchone()
    assert row == ("app_user", True)
    # The database stores exactly the verifier the pooler holds, so PgBouncer logged in with the
    # client's proof (SCRAM pass-through) rather than a stored password.
    with postgres.connect_admin() as admin:
        found = admin.execute(
            "select rolpassword from pg_authid where rolname = 'app_user'"
        ).fetchone()
    assert found is not None
    stored = found[0]
    assert scram.matches(APP_PASSWORD, stored)
    assert f'"app_user" "{stored}"' in bouncer.auth_file.read_text()


def test_wrong_password_is_refused(bouncer):
    with pytest.raises(psycopg.OperationalError, match=r"password authentication failed|SASL"):
        psycopg.connect(bouncer.conninfo("app_user", "not-the-password"))


def test_tcp_without_tls_is_refused(bouncer):
    conninfo = bouncer.conninfo("app_user", APP_PASSWORD).replace(
        "sslmode=verify-full", "sslmode=disable"
    )
    with pytest.raises(psycopg.OperationalError, match=r"SSL required|ssl"):
        psycopg.connect(conninfo)


def test_auth_file_is_private_and_holds_no_plaintext(bouncer):
    text = bouncer.auth_file.read_text()
    assert APP_PASSWORD not in text
    assert bouncer.admin_password not in text
    mode = stat.S_IMODE(os.stat(bouncer.auth_file).st_mode)
    assert mode == 0o600
    for line in text.splitlines():
        assert line.split(" ", 1)[1].startswith('"SCRAM-SHA-256$')


def test_admin_console_answers_show_pools(bouncer):
    with psycopg.connect(bouncer.conninfo("app_user", APP_PASSWORD)) as conn:
        conn.execute("select 1")
        pools = bouncer.show("POOLS")
    assert {p["database"] for p in pools} >= {"postgres", "pgbouncer"}
    config = {row["key"]: row["value"] for row in bouncer.show("CONFIG")}
    assert config["pool_mode"] == "transaction"
    assert config["auth_type"] == "hba"  # the console from this machine only


def test_client_idle_longer_than_client_idle_timeout_is_disconnected(postgres, pgbouncer_factory):
    reaper = pgbouncer_factory(
        postgres, users={"app_user": APP_PASSWORD}, pool_size=2, client_idle_timeout_s=1
    )
    with psycopg.connect(reaper.conninfo("app_user", APP_PASSWORD), autocommit=True) as idle:
        idle.execute("select 1")
        with psycopg.connect(reaper.conninfo("app_user", APP_PASSWORD), autocommit=True) as busy:
            deadline = time.monotonic() + 3.5
            while time.monotonic() < deadline:  # a client that keeps talking is not reaped
                busy.execute("select 1")
                time.sleep(0.2)
            busy.execute("select 1")
        with pytest.raises(psycopg.OperationalError, match="client_idle_timeout"):
            idle.execute("select 1")


def test_kill_and_restart(postgres, pgbouncer_factory):
    drill = pgbouncer_factory(postgres, users={"app_user": APP_PASSWORD}, pool_size=2)
    before = drill.pids()
    assert len(before) == 1
    drill.kill()
    assert drill.pids() == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(drill.conninfo("app_user", APP_PASSWORD))
    drill.start()
    after = drill.pids()
    assert after
    assert after != before
    with psycopg.connect(drill.conninfo("app_user", APP_PASSWORD)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_every_rendered_setting_is_one_this_pgbouncer_knows(bouncer):
    known = {row["key"] for row in bouncer.show("CONFIG")}
    text = bouncer.ini_path(0).read_text().split("[pgbouncer]", 1)[1]
    rendered = {
        line.split("=", 1)[0].strip()
        for line in text.splitlines()
        if "=" in line and not line.startswith((";", "["))
    }
    assert rendered
    assert rendered <= known, rendered - known


def test_reload_applies_new_settings(postgres, pgbouncer_factory):
    reloading = pgbouncer_factory(postgres, users={"app_user": APP_PASSWORD}, pool_size=2)
    assert {r["key"]: r["value"] for r in reloading.show("CONFIG")}["query_wait_timeout"] == "10"
    reloading.reload(dataclasses.replace(reloading.settings, query_wait_timeout_s=7))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        config = {r["key"]: r["value"] for r in reloading.show("CONFIG")}
        if config["query_wait_timeout"] == "7":
            break
        time.sleep(0.05)
    assert config["query_wait_timeout"] == "7"


def test_several_processes_share_one_port(postgres, pgbouncer_factory):
    # PgBouncer 1.18 has no peer_id, so the local target may rehearse processes > 1 only with
    # cancels that can land on the wrong process (allow_lost_cancels, set by local_settings).
    multi = pgbouncer_factory(postgres, users={"app_user": APP_PASSWORD}, pool_size=2, processes=2)
    assert len(multi.pids()) == 2
    for index in range(2):
        config = {r["key"]: r["value"] for r in multi.show("CONFIG", process=index)}
        assert config["so_reuseport"] == "1"
        assert config["unix_socket_dir"] == multi.settings.paths[index].unix_socket_dir
    conns = [
        psycopg.connect(multi.conninfo("app_user", APP_PASSWORD), autocommit=True)
        for _ in range(12)
    ]
    try:
        for conn in conns:
            assert conn.execute("select 1").fetchone() == (1,)
        clients = [
            sum(
                int(p["cl_active"])
                for p in multi.show("POOLS", process=i)
                if p["database"] == "postgres"
            )
            for i in range(2)
        ]
    finally:
        for conn in conns:
            conn.close()
    assert sum(clients) == 12
    multi.stop(safe=True)
    assert multi.pids() == []

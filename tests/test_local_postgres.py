"""The local PostgreSQL behaves like the stack's RDS instance: size, TLS forced, SCRAM."""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.integration


def test_server_carries_the_requested_max_connections(postgres_factory):
    server = postgres_factory(max_connections=25, superuser_reserved_connections=2)
    with server.connect_admin() as conn:
        assert conn.execute("show max_connections").fetchone() == ("25",)
        assert conn.execute("show superuser_reserved_connections").fetchone() == ("2",)
        assert conn.execute("show password_encryption").fetchone() == ("scram-sha-256",)


def test_tcp_without_tls_is_refused(postgres):
    conninfo = postgres.conninfo().replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(psycopg.OperationalError, match=r"no encryption|pg_hba"):
        psycopg.connect(conninfo)


def test_tls_is_verified_against_the_local_ca(postgres):
    with postgres.connect_admin() as conn:
        row = conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone()
    assert row == (True,)

"""Fixtures for a real PgBouncer (transaction pooling, SCRAM, TLS) in front of a real PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from slotguard.local.pgbouncer import LocalPgBouncer, create_local_pgbouncer
from slotguard.local.postgres import LocalPostgres
from slotguard.local.system import ensure_programs
from tests.scratch import reachable_temp_dir

PgBouncerFactory = Callable[..., LocalPgBouncer]


@pytest.fixture(scope="session")
def pgbouncer_factory() -> Iterator[PgBouncerFactory]:
    """Start PgBouncer in transaction mode in front of a `LocalPostgres`; all stop at session end.

    ``pgbouncer_factory(postgres, *, users, dbname="postgres", pool_size=20, reserve_pool_size=0,
    max_db_connections=None, max_client_conn=1000, query_wait_timeout_s=10,
    client_idle_timeout_s=300, server_idle_timeout_s=60, idle_transaction_timeout_s=30,
    listen_backlog=4096, processes=1, create_roles=True, scram_iterations=4096, **more)``
    -> a started `LocalPgBouncer`.

    - ``users`` maps role name -> password. Each role's SCRAM verifier goes in the auth file (mode
      0600, no plaintext) and is installed on the database as the role's password, so PgBouncer
      logs in with the client's proof; a role whose stored verifier already matches its password
      keeps it, a missing role is created with LOGIN (unless ``create_roles=False``). A role whose
      password is changed later on the server must be passed again via
      ``bouncer.reload(verifiers=install_role_verifiers(...))``.
    - ``scram_iterations``: PBKDF2 rounds of the verifiers; a storm test may lower it so the
      client side (libpq computes SCRAM on the event loop) does not dominate its run time.
    - ``max_db_connections`` defaults to ``pool_size + reserve_pool_size``: the hard ceiling of
      server connections per process.
    - ``more`` passes any other `pgbouncer.config.PgBouncerSettings` field (seconds are ``*_s``).
    - Clients: ``bouncer.conninfo(user, password, dbname=None)`` (TCP, TLS verify-full against the
      local CA); the admin console: ``bouncer.connect_admin()`` / ``bouncer.show("POOLS")``.
    """
    ensure_programs()
    started: list[LocalPgBouncer] = []
    roots: list[Path] = []

    def make(
        postgres: LocalPostgres,
        *,
        users: dict[str, str],
        dbname: str = "postgres",
        pool_size: int = 20,
        reserve_pool_size: int = 0,
        max_db_connections: int | None = None,
        max_client_conn: int = 1000,
        query_wait_timeout_s: int = 10,
        client_idle_timeout_s: int = 300,
        server_idle_timeout_s: int = 60,
        idle_transaction_timeout_s: int = 30,
        listen_backlog: int = 4096,
        processes: int = 1,
        create_roles: bool = True,
        scram_iterations: int = 4096,
        **more: Any,
    ) -> LocalPgBouncer:
        root = reachable_temp_dir("slotguard-pgb-")
        roots.append(root)
        bouncer = create_local_pgbouncer(
            root,
            postgres,
            users=users,
            dbname=dbname,
            processes=processes,
            create_roles=create_roles,
            scram_iterations=scram_iterations,
            default_pool_size=pool_size,
            reserve_pool_size=reserve_pool_size,
            max_db_connections=(
                max_db_connections
                if max_db_connections is not None
                else pool_size + reserve_pool_size
            ),
            max_client_conn=max_client_conn,
            query_wait_timeout_s=query_wait_timeout_s,
            client_idle_timeout_s=client_idle_timeout_s,
            server_idle_timeout_s=server_idle_timeout_s,
            idle_transaction_timeout_s=idle_transaction_timeout_s,
            listen_backlog=listen_backlog,
            **more,
        )
        bouncer.start()
        started.append(bouncer)
        return bouncer

    yield make
    for bouncer in started:
        bouncer.stop()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)

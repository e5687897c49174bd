"""Releasing a fleet: logins still in progress are counted, idle backends of the fleet ended."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import psycopg
import pytest

from slotguard.local.fleet import release_fleet, starting_backends

pytestmark = pytest.mark.integration


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_logins_in_progress_are_counted_until_their_clients_go(postgres):
    with postgres.connect_admin() as admin:
        admin.autocommit = True
        assert starting_backends(admin) == 0
        # Connections that never send a startup packet: the server holds a child for each
        # (invisible to pg_stat_activity) until authentication_timeout or the client leaves.
        stalled = [
            socket.create_connection(("127.0.0.1", postgres.settings.port)) for _ in range(5)
        ]
        try:
            assert wait_for(lambda: starting_backends(admin) == 5), starting_backends(admin)
        finally:
            for sock in stalled:
                sock.close()
        assert wait_for(lambda: starting_backends(admin) == 0)


def test_release_terminates_the_fleet_and_waits_for_its_logins(postgres):
    fleet = [
        psycopg.connect(postgres.conninfo(), application_name="fleet-direct", autocommit=True)
        for _ in range(3)
    ]
    other = psycopg.connect(postgres.conninfo(), application_name="bystander", autocommit=True)
    stalled = socket.create_connection(("127.0.0.1", postgres.settings.port))
    try:
        with postgres.connect_admin() as admin:
            admin.autocommit = True
            wait_for(lambda: starting_backends(admin) == 1)
            # With a login in progress the release waits, and says so when it gives up.
            waiting = release_fleet(admin, ["fleet-direct"], timeout_s=1.0)
            assert waiting.terminated == 3
            assert (waiting.connected_left, waiting.starting_left) == (0, 1)
            assert not waiting.complete
            assert "1 logins still in progress" in waiting.describe()
            stalled.close()
            released = release_fleet(admin, ["fleet-direct"], timeout_s=10.0)
            assert released.complete, released
        assert all(conn.closed or _broken(conn) for conn in fleet)
        assert other.execute("SELECT 1").fetchone() == (1,)  # not of the fleet: left alone
    finally:
        stalled.close()
        other.close()
        for conn in fleet:
            conn.close()


def _broken(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False

"""Release a storm wiring's fleet before the next wiring starts, over a connection kept open.

After a direct burst the database can refuse *every* new connection, a superuser's included, for
up to a minute: each login that a function gave up on (or whose socket it has not closed yet) is
a postmaster child still in TLS or authentication until `authentication_timeout` (60 s, RDS's
default too) ends it, and once the children reach the postmaster's cap (`2 * MaxBackends` in
PostgreSQL 15's `MaxLivePostmasterChildren()`) it answers "sorry, too many clients already"
before any role check, so the superuser-reserved slots do not help. The storm therefore opens its
admin connection once, before any burst, and does everything here over it: terminate the
fleet's idle backends, then wait until no backend of the fleet is left and no login is still in
progress. Logins in progress are invisible to `pg_stat_activity` in PostgreSQL 15 (a backend is
listed once authenticated), so they are counted as the postmaster's children that it does not
list, read from /proc: the local target's server runs on this machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

# authentication_timeout (PostgreSQL's and RDS's default, 60 s) plus room for the
# terminations to land: past it every login still in progress has been ended by the server.
RELEASE_TIMEOUT_S = 75.0
POLL_S = 0.2


@dataclass(frozen=True)
class Release:
    """What releasing a fleet took: backends terminated, time waited, and anything left."""

    terminated: int
    waited_s: float
    connected_left: int
    starting_left: int

    @property
    def complete(self) -> bool:
        return self.connected_left == 0 and self.starting_left == 0

    def describe(self) -> str:
        if self.complete:
            return f"released: {self.terminated} terminated, settled in {self.waited_s:.1f} s"
        return (
            f"not fully released after {self.waited_s:.0f} s: {self.connected_left} connected, "
            f"{self.starting_left} logins still in progress"
        )


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after its last ")" do not.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1])


def _title(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def starting_backends(conn: psycopg.Connection[Any]) -> int:
    """Logins in progress: children of the server's postmaster that `pg_stat_activity` omits.

    Every postmaster child but the logger is listed there once it has authenticated (the
    auxiliary processes included), so the rest are connections still in TLS or authentication.
    """
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    postmaster = _parent_pid(int(row[0])) if row else None
    if postmaster is None:
        return 0
    listed = {int(r[0]) for r in conn.execute("SELECT pid FROM pg_stat_activity").fetchall()}
    children = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _parent_pid(int(entry.name)) == postmaster
    ]
    return sum(
        1 for pid in children if pid not in listed and "logger" not in _title(pid).split(":")[-1]
    )


def connected(conn: psycopg.Connection[Any], application_names: list[str]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)",
        (application_names,),
    ).fetchone()
    return int(row[0]) if row else 0


def terminate(conn: psycopg.Connection[Any], application_names: list[str]) -> int:
    """Terminate the client backends opened under these application names (the fleet's)."""
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' AND application_name = ANY(%s)",
        (application_names,),
    ).fetchall()
    return len(rows)


def release_fleet(
    conn: psycopg.Connection[Any],
    application_names: list[str],
    *,
    timeout_s: float = RELEASE_TIMEOUT_S,
    poll_s: float = POLL_S,
) -> Release:
    """Terminate the fleet's backends and wait until none is left and no login is in progress.

    `conn` is a superuser connection opened before the burst; nothing here opens another. A
    backend that finishes its login after the first pass is terminated on a later pass.
    """
    started = time.monotonic()
    terminated = 0
    while True:
        if application_names:
            terminated += terminate(conn, application_names)
            left = connected(conn, application_names)
        else:
            left = 0
        starting = starting_backends(conn)
        waited = time.monotonic() - started
        if (left == 0 and starting == 0) or waited >= timeout_s:
            return Release(terminated, waited, left, starting)
        time.sleep(poll_s)

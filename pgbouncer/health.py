"""Container health check: every PgBouncer process answers on its admin console.

Run by the image's HEALTHCHECK (and usable as the ECS container health check) with the task's
own environment; exit status 0 when healthy, 1 otherwise, with the reason on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from pgbouncer.environment import DEFAULT_RUN_DIR, STATS_USER


def check(env: Mapping[str, str]) -> list[str]:
    """Problems found (empty when healthy)."""
    run_dir = Path(env.get("PGBOUNCER_RUN_DIR") or DEFAULT_RUN_DIR)
    processes = int(env.get("PGBOUNCER_PROCESSES") or 1)
    port = int(env.get("PGBOUNCER_LISTEN_PORT") or 6432)
    password = env.get("PGBOUNCER_STATS_PASSWORD", "")
    problems = []
    for index in range(processes):
        conninfo = make_conninfo(
            "",
            host=str(run_dir / str(index + 1)),
            port=port,
            dbname="pgbouncer",
            user=STATS_USER,
            password=password,
            connect_timeout=3,
        )
        try:
            with (
                psycopg.connect(
                    conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor
                ) as conn,
                conn.cursor() as cur,
            ):
                cur.execute("SHOW VERSION")
                cur.fetchall()
        except psycopg.Error as exc:
            problems.append(f"process {index + 1}: {exc}")
    return problems


def main() -> int:
    problems = check(os.environ)
    for problem in problems:
        sys.stderr.write(problem + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Opens (or reuses) the instance's connection and holds it for a query of `sleep_s` seconds."""

from __future__ import annotations

from typing import Any

from .db import connection


def handler(event: Any, context: Any) -> dict[str, Any]:
    conn = connection()
    row = conn.execute(
        "select pg_backend_pid(), pg_sleep(%s)", (float(event.get("sleep_s", 0.0)),)
    ).fetchone()
    assert row is not None
    return {"statusCode": 200, "backend_pid": row[0]}

"""Reconcile what a drill's clients were told against what the database holds.

An acknowledged create (2xx) must be in the table exactly once. Rows are counted both by
idempotency key and by the item's name (which the client derived from the key), so a duplicate is
caught even if the unique key that serves as the idempotency store were missing or bypassed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from slotguard.drills.storm import RequestLog


@dataclass(frozen=True)
class Reconciliation:
    acknowledged: int
    rows_found: int  # rows of this drill's keys, acknowledged or not
    lost: list[str] = field(default_factory=list)  # acknowledged, no row
    duplicates: list[str] = field(default_factory=list)  # keys with more than one row
    unacknowledged_stored: int = 0  # requests never acknowledged whose row exists (harmless)
    mismatched: list[str] = field(default_factory=list)  # a key stored with another request's body


def reconcile(conninfo: str, schema: str, name_prefix: str, log: RequestLog) -> Reconciliation:
    """Count this drill's rows per key and per name, as the master user on the database."""
    query = psycopg.sql.SQL(
        "SELECT idempotency_key, name FROM {}.items WHERE name LIKE %s OR idempotency_key LIKE %s"
    ).format(psycopg.sql.Identifier(schema))
    key_prefix = name_prefix.removeprefix("drill-")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(query, (_like_prefix(name_prefix), _like_prefix(key_prefix))).fetchall()
    by_key: dict[str, int] = {}
    by_name: dict[str, int] = {}
    for key, name in rows:
        if key is not None:
            by_key[str(key)] = by_key.get(str(key), 0) + 1
        by_name[str(name)] = by_name.get(str(name), 0) + 1
    acknowledged = set(log.acknowledged)
    lost = sorted(k for k in acknowledged if by_key.get(k, 0) == 0)
    duplicates = sorted(
        k
        for k in set(by_key) | {n.removeprefix("drill-") for n in by_name}
        if by_key.get(k, 0) > 1 or by_name.get(f"drill-{k}", 0) > 1
    )
    stored_not_acked = sum(1 for k in by_key if k not in acknowledged)
    mismatched = sorted(str(k) for k, name in rows if k is not None and name != f"drill-{k}")
    return Reconciliation(
        acknowledged=len(acknowledged),
        rows_found=len(rows),
        lost=lost,
        duplicates=duplicates,
        unacknowledged_stored=stored_not_acked,
        mismatched=mismatched,
    )


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"

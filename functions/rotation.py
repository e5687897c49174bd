"""Alternating-users rotation: the application role's clone, so two credentials are always valid.

AWS Secrets Manager's "alternating users" strategy: the first rotation clones the user
(`<user>_clone`), and each rotation after it changes the password of the user the secret does NOT
name, then points the secret at it. The user the functions hold stays valid throughout, so no
login fails while the pooler and the functions catch up (AWS, "Lambda function rotation
strategies"). The clone has the original's role settings and connection limit and inherits its
privileges through membership, so grants, default privileges and ownership stay with the
original role.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

CLONE_SUFFIX = "_clone"


def clone_name(user: str) -> str:
    """The second user's name, as AWS's alternating-users rotation names it."""
    return f"{user}{CLONE_SUFFIX}"


def other_user(current: str, user: str) -> str:
    """The user a rotation changes: the one the secret does not name."""
    return clone_name(user) if current == user else user


def clone_role(conn: psycopg.Connection[Any], user: str) -> str:
    """Create or refresh `<user>_clone`: login, member of `user`, its settings and limit.

    Idempotent; returns the clone's name. Run as the master (it holds ADMIN OPTION on roles it
    created, which PostgreSQL 16 requires to grant membership).
    """
    clone = clone_name(user)
    row = conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
    if row is None:
        raise ValueError(f"role {user} does not exist: run the bootstrap first")
    limit = int(row[0])
    role, source = sql.Identifier(clone), sql.Identifier(user)
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (clone,)).fetchone() is None:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    conn.execute(
        sql.SQL(
            "ALTER ROLE {} WITH LOGIN NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT {}"
        ).format(role, sql.Literal(limit))
    )
    member = conn.execute(
        "SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
        " JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = %s AND u.rolname = %s",
        (user, clone),
    ).fetchone()
    if member is None:
        conn.execute(sql.SQL("GRANT {} TO {}").format(source, role))
    # Role settings (timeouts, search_path) are per role and not inherited: copy them.
    for (setting,) in conn.execute(
        "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_roles r"
        " ON r.oid = s.setrole WHERE r.rolname = %s AND s.setdatabase = 0",
        (user,),
    ).fetchall():
        key, _, value = str(setting).partition("=")
        if key == "search_path":
            parts = [p.strip() for p in value.split(",") if p.strip()]
            conn.execute(
                sql.SQL("ALTER ROLE {} SET search_path TO {}").format(
                    role, sql.SQL(", ").join(sql.Identifier(p.strip('"')) for p in parts)
                )
            )
        else:
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    role, sql.Identifier(key), sql.Literal(value)
                )
            )
    return clone

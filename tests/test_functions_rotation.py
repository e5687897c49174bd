"""Alternating-users rotation against a real PostgreSQL and PgBouncer: no login fails.

The order is infra/rotation.py's; AWS Secrets Manager's alternating-users strategy ("Lambda
function rotation strategies": "You create the first user, and during the first rotation, the
rotation function clones it to create the second user. Every time the secret rotates, the
rotation function alternates which user's password it updates") names the clone `<user>_clone`.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from functions.credentials import SecretCredentials
from functions.rotation import clone_name, clone_role, other_user
from infra.rotation import ROTATION_STEPS
from pgbouncer import scram
from tests.fixtures_functions import FunctionsStack, LocalAws, make_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def rotation_stack(postgres_factory, pgbouncer_factory) -> FunctionsStack:
    return make_stack(postgres_factory, pgbouncer_factory)


def through_pooler(stack: FunctionsStack, user: str, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1",
        port=stack.bouncer.port,
        user=user,
        password=password,
        dbname="app",
        sslmode="verify-full",
        sslrootcert=str(stack.postgres.tls.ca_cert),
        connect_timeout=3,
        autocommit=True,
    )


def test_names_follow_aws() -> None:
    assert clone_name("app_user") == "app_user_clone"
    assert other_user("app_user", "app_user") == "app_user_clone"
    assert other_user("app_user_clone", "app_user") == "app_user"
    assert len(ROTATION_STEPS) == 3


def test_the_clone_carries_the_roles_limit_settings_and_privileges(
    rotation_stack: FunctionsStack,
) -> None:
    with rotation_stack.postgres.connect_admin(dbname="app") as admin:
        clone = clone_role(admin, "app_user")
        assert clone_role(admin, "app_user") == clone  # idempotent
        rows: dict[str, Any] = dict(
            admin.execute(
                "SELECT r.rolname, r.rolconnlimit FROM pg_roles r"
                " WHERE r.rolname IN ('app_user', 'app_user_clone')"
            ).fetchall()
        )
        settings: dict[str, Any] = dict(
            admin.execute(
                "SELECT r.rolname, s.setconfig FROM pg_db_role_setting s"
                " JOIN pg_roles r ON r.oid = s.setrole"
                " WHERE r.rolname IN ('app_user', 'app_user_clone')"
            ).fetchall()
        )
        admin.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(clone), sql.Literal("clone-pw")
            )
        )
    assert rows["app_user_clone"] == rows["app_user"]
    assert sorted(settings["app_user_clone"]) == sorted(settings["app_user"])
    with psycopg.connect(
        rotation_stack.postgres.conninfo("app_user_clone", "clone-pw", "app"), autocommit=True
    ) as conn:
        # The application's tables, through membership in app_user.
        assert conn.execute("SELECT count(*) FROM app.items").fetchone() is not None


def test_rotation_in_order_fails_no_login(
    rotation_stack: FunctionsStack, aws_env: LocalAws
) -> None:
    stack = rotation_stack
    arn = aws_env.put_secret(stack.secret_value())
    warm = SecretCredentials(arn, user="app_user")  # a warm instance: fetched before
    held = warm.get()
    password = secrets.token_urlsafe(18)
    verifier = scram.make_verifier(password)
    target = other_user(held.user, "app_user")
    # 1. the inactive user's password
    with stack.postgres.connect_admin(dbname="app") as admin:
        clone_role(admin, "app_user")
        admin.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(target), sql.Literal(verifier)
            )
        )
    # 2. the pooler's verifier, confirmed with one login
    stack.bouncer.reload(verifiers={**stack.bouncer.verifiers, target: verifier})
    deadline = time.monotonic() + 10
    while True:
        try:
            through_pooler(stack, target, password).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    # The warm instance's credentials still log in: nothing it uses changed.
    with through_pooler(stack, held.user, held.password) as conn:
        conn.execute("SELECT 1")
    # 3. the secret names the other user; a cold instance (DB_USER=app_user) logs in as it
    aws_env.update_secret(
        arn,
        {
            **stack.secret_value(),
            "username": target,
            "password": password,
            "scram_verifier": verifier,
        },
    )
    cold = SecretCredentials(arn, user="app_user").get()
    assert cold.user == target
    with through_pooler(stack, cold.user, cold.password) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (target,)
    with through_pooler(stack, held.user, held.password) as conn:
        conn.execute("SELECT 1")


def test_db_user_still_wins_over_another_username(aws_env: LocalAws) -> None:
    arn = aws_env.put_secret({"username": "someone_else", "password": "pw"})
    assert SecretCredentials(arn, user="app_user").get().user == "app_user"


def test_bootstrap_keeps_the_standby_login_and_refuses_a_mixed_up_one(
    rotation_stack: FunctionsStack,
) -> None:
    """The program gives the bootstrap the standby login's secret (APP_USER_STANDBY_SECRET_ARN):
    it creates the clone with app_user's settings and sets its password; idempotent."""
    from functions import bootstrap
    from functions.credentials import DatabaseSecret

    stack = rotation_stack
    password = secrets.token_urlsafe(18)
    standby = DatabaseSecret.model_validate(
        {
            **stack.secret_value(),
            "username": "app_user_clone",
            "password": password,
            "scram_verifier": scram.make_verifier(password),
        }
    )
    event = bootstrap.BootstrapEvent.model_validate(stack.event)
    args = (event, stack.target, stack.master, stack.app_secret, stack.migrator_secret)
    first = bootstrap.run(*args, standby=standby)
    assert "role app_user_clone password" in {c.item for c in first.changes}
    with psycopg.connect(
        stack.postgres.conninfo("app_user_clone", password, "app"), autocommit=True
    ) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1s",)
    again = bootstrap.run(*args, standby=standby)
    assert not again.changed, again.changes
    same = standby.model_copy(update={"username": "app_user"})
    with pytest.raises(bootstrap.BootstrapInputError, match="standby secret names 'app_user'"):
        bootstrap.run(*args, standby=same)

"""The task's variables map onto the settings by name; a bad one is refused by name."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from pgbouncer import environment
from pgbouncer.config import render
from pgbouncer.scram import make_verifier

VERIFIER = make_verifier("pw", salt=b"0123456789abcdef")


def base_env(**extra: str) -> dict[str, str]:
    env = {
        "PGBOUNCER_DB_HOST": "db.internal",
        "PGBOUNCER_DB_NAME": "app",
        "PGBOUNCER_USER_SECRET_APP": json.dumps(
            {"username": "app_user", "password": "pw", "scram_verifier": VERIFIER}
        ),
        "PGBOUNCER_STATS_PASSWORD": "stats",
        "PGBOUNCER_CLIENT_TLS_CERT": "-----BEGIN CERTIFICATE-----",
        "PGBOUNCER_CLIENT_TLS_KEY": "-----BEGIN PRIVATE KEY-----",
    }
    env.update(extra)
    return env


def test_every_number_has_a_variable_named_after_its_field():
    cfg = environment.read(
        base_env(
            PGBOUNCER_PROCESSES="2",
            PGBOUNCER_DEFAULT_POOL_SIZE="9",
            PGBOUNCER_MAX_DB_CONNECTIONS="10",
            PGBOUNCER_RESERVE_POOL_TIMEOUT_S="1.5",
            PGBOUNCER_DATABASE_SHARE="20",
            PGBOUNCER_MAX_PREPARED_STATEMENTS="100",
        ),
        version=(1, 26),
        fd_limit=65536,
    )
    s = cfg.settings
    assert (s.processes, s.default_pool_size, s.max_db_connections) == (2, 9, 10)
    assert s.reserve_pool_timeout_s == 1.5
    assert s.database_share == 20
    assert s.fd_limit == 65536
    assert s.database.ca_file == environment.DEFAULT_CA_FILE
    assert s.database.sslmode == "verify-full"
    assert len({p.unix_socket_dir for p in s.paths}) == 2
    assert "database_share" in environment.NUMERIC_FIELDS
    assert "fd_limit" not in environment.NUMERIC_FIELDS  # measured, not configured
    rendered = render(s, {**cfg.verifiers, environment.STATS_USER: VERIFIER})
    assert len(rendered.ini) == 2
    assert "pw" not in rendered.auth_file.replace(VERIFIER, "")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"PGBOUNCER_DB_HOST": ""}, "PGBOUNCER_DB_HOST is not set"),
        ({"PGBOUNCER_STATS_PASSWORD": ""}, "PGBOUNCER_STATS_PASSWORD is not set"),
        (
            {"PGBOUNCER_MAX_CLIENT_CONN": "lots"},
            "PGBOUNCER_MAX_CLIENT_CONN='lots' is not an integer",
        ),
        ({"PGBOUNCER_METRICS": "maybe"}, "PGBOUNCER_METRICS='maybe' must be on or off"),
        ({"PGBOUNCER_USER_SECRET_APP": "{"}, "PGBOUNCER_USER_SECRET_APP is not JSON"),
        (
            {"PGBOUNCER_USER_SECRET_APP": json.dumps({"username": "a", "password": "p"})},
            "PGBOUNCER_USER_SECRET_APP has no scram_verifier",
        ),
        (
            {"PGBOUNCER_USER_SECRET_APP": json.dumps({"username": "a", "scram_verifier": "md5x"})},
            "PGBOUNCER_USER_SECRET_APP: scram_verifier not a SCRAM-SHA-256 verifier",
        ),
    ],
)
def test_bad_variables_are_named(change, message):
    with pytest.raises(environment.TaskEnvironmentError) as caught:
        environment.read(base_env(**change), version=(1, 26), fd_limit=None)
    assert message in str(caught.value)


def test_a_user_secret_is_required():
    env = base_env()
    del env["PGBOUNCER_USER_SECRET_APP"]
    with pytest.raises(environment.TaskEnvironmentError, match="PGBOUNCER_USER_VERIFIER_<ROLE>"):
        environment.read(env, version=(1, 26), fd_limit=None)


def test_the_pooler_package_imports_nothing_from_the_rest_of_the_repository():
    package = Path(environment.__file__).parent
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                root = node.module.split(".")[0]
            elif isinstance(node, ast.Import):
                root = node.names[0].name.split(".")[0]
            else:
                continue
            assert root not in {"slotguard", "infra", "functions", "policy", "tests"}, source


def test_a_bare_verifier_names_its_role_by_suffix():
    verifier = make_verifier("pw", b"0123456789abcdef")
    assert environment.user_verifiers({"PGBOUNCER_USER_VERIFIER_APP_USER": verifier}) == {
        "app_user": verifier
    }
    with pytest.raises(environment.TaskEnvironmentError, match="not a SCRAM-SHA-256 verifier"):
        environment.user_verifiers({"PGBOUNCER_USER_VERIFIER_APP_USER": "plaintext"})

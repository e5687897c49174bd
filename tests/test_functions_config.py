"""The function environment and credential sources, without a database."""

from __future__ import annotations

import psycopg
import pytest

from functions.config import ConfigurationError, load_settings
from functions.credentials import IamTokenCredentials, SecretCredentials, credential_source
from functions.errors import FailureClass, classify, is_retryable_at_connect

BASE = {"DB_HOST": "pooler.internal", "DB_NAME": "app", "DB_SECRET_ARN": "arn:secret"}


def test_defaults_follow_the_contract():
    settings = load_settings(BASE)
    assert (settings.port, settings.auth, settings.sslmode, settings.retries) == (
        5432,
        "secret",
        "verify-full",
        "on",
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DB_PORT": "abc"}, "DB_PORT"),
        ({"DB_PORT": "70000"}, "DB_PORT"),
        ({"DB_SSLMODE": "verify"}, "DB_SSLMODE"),
        ({"DB_CONNECT_TIMEOUT_S": "1"}, "DB_CONNECT_TIMEOUT_S"),
        ({"DB_RETRIES": "maybe"}, "DB_RETRIES"),
        ({"HEALTH_ALARM_PERCENT": "150"}, "HEALTH_ALARM_PERCENT"),
        ({"DB_SECRET_ARN": ""}, "DB_SECRET_ARN"),
        ({"DB_AUTH": "iam"}, "DB_USER"),
        ({"DB_HOST": ""}, "DB_HOST"),
    ],
)
def test_a_bad_variable_is_named(env, named):
    with pytest.raises(ConfigurationError, match=named):
        load_settings({**BASE, **env})


def test_iam_auth_signs_a_token_for_the_proxy(aws_env):
    settings = load_settings(
        {**BASE, "DB_AUTH": "iam", "DB_USER": "app_user", "AWS_REGION": "eu-west-1"}
    )
    source = credential_source(settings)
    assert isinstance(source, IamTokenCredentials)
    creds = source.get()
    assert creds.user == "app_user"
    assert creds.password.startswith("pooler.internal:5432/?Action=connect&DBUser=app_user")
    assert "X-Amz-Signature=" in creds.password
    assert source.get() is creds  # cached until it nears expiry


def test_secret_is_cached_and_refreshed_on_demand(aws_env):
    arn = aws_env.put_secret({"username": "app_user", "password": "one"})
    source = SecretCredentials(arn)
    assert source.get().password == "one"
    aws_env.update_secret(arn, {"username": "app_user", "password": "two"})
    assert source.get().password == "one"
    assert source.refresh().password == "two"
    assert source.fetches == 2


def test_a_malformed_secret_names_the_secret(aws_env):
    arn = aws_env.put_secret({"user": "x"})
    with pytest.raises(ConfigurationError, match="username"):
        SecretCredentials(arn).get()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("FATAL:  sorry, too many clients already", FailureClass.TOO_MANY_CONNECTIONS),
        ("FATAL:  the database system is starting up", FailureClass.CANNOT_CONNECT_NOW),
        ("FATAL:  no more connections allowed (max_client_conn)", FailureClass.POOLER_REFUSAL),
        ("ERROR:  pgbouncer cannot connect to server", FailureClass.POOLER_REFUSAL),
        ("server closed the connection unexpectedly", FailureClass.CONNECTION),
        ('FATAL:  password authentication failed for user "x"', FailureClass.AUTHENTICATION),
    ],
)
def test_messages_without_sqlstate_are_classified(message, expected):
    assert classify(psycopg.OperationalError(message)) is expected


def test_sqlstate_wins_over_message():
    assert classify(psycopg.errors.UndefinedTable("connection refused")) is FailureClass.OTHER
    assert classify(psycopg.errors.QueryCanceled("x")) is FailureClass.STATEMENT_TIMEOUT


def test_data_errors_are_never_retryable():
    assert not is_retryable_at_connect(psycopg.errors.UniqueViolation("duplicate key"))
    assert not is_retryable_at_connect(psycopg.errors.QueryCanceled("canceling statement"))
    assert is_retryable_at_connect(psycopg.errors.TooManyConnections("too many"))
    assert is_retryable_at_connect(psycopg.errors.ProtocolViolation("query_wait_timeout"))

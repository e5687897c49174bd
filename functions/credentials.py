"""Database credentials: a Secrets Manager secret cached per instance, or an RDS IAM token.

The secret is fetched once per function instance (not per invocation: Secrets Manager calls cost
latency and money during a burst) and fetched again only when the database rejects the password,
which is how a rotated password is picked up without a redeploy.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

import boto3
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import ConfigurationError, DbSettings
from .rotation import clone_name

# RDS IAM tokens are valid for 15 minutes; renew well before that.
IAM_TOKEN_LIFETIME_S = 600.0


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str


class DatabaseSecret(BaseModel):
    """The secret shape RDS Proxy expects (extra keys such as `scram_verifier` are allowed)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    engine: str | None = None
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    scram_verifier: str | None = None


def read_secret(secret_arn: str, client: Any | None = None) -> DatabaseSecret:
    """Fetch and validate a database secret; a malformed one names the secret and the key."""
    sm = client if client is not None else boto3.client("secretsmanager")
    raw = sm.get_secret_value(SecretId=secret_arn)["SecretString"]
    try:
        return DatabaseSecret.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ConfigurationError(
            f"secret {secret_arn} must be JSON with at least 'username' and 'password': {exc}"
        ) from exc


class CredentialSource(Protocol):
    def get(self) -> Credentials: ...

    def refresh(self) -> Credentials: ...


class SecretCredentials:
    """Password from Secrets Manager; `user` overrides the secret's username when set, except
    for its rotation clone (`<user>_clone`), which the secret names after a rotation."""

    def __init__(self, secret_arn: str, user: str | None = None) -> None:
        self._secret_arn = secret_arn
        self._user = user
        self._client: Any | None = None
        self._cached: Credentials | None = None
        self.fetches = 0

    def get(self) -> Credentials:
        return self._cached if self._cached is not None else self.refresh()

    def refresh(self) -> Credentials:
        if self._client is None:
            self._client = boto3.client("secretsmanager")
        secret = read_secret(self._secret_arn, self._client)
        self.fetches += 1
        self._cached = Credentials(self._login_user(secret.username), secret.password)
        return self._cached

    def _login_user(self, secret_user: str) -> str:
        """DB_USER, unless the secret names its alternating-users clone (functions/rotation.py):
        after a rotation the secret's password is the clone's, so the clone logs in."""
        if self._user and secret_user != clone_name(self._user):
            return self._user
        return secret_user


class IamTokenCredentials:
    """An RDS (Proxy) IAM auth token, signed locally by boto3 and renewed before it expires."""

    def __init__(self, host: str, port: int, user: str, region: str | None) -> None:
        self._host, self._port, self._user, self._region = host, port, user, region
        self._client: Any | None = None
        self._cached: Credentials | None = None
        self._issued_at = 0.0

    def get(self) -> Credentials:
        fresh = time.monotonic() - self._issued_at < IAM_TOKEN_LIFETIME_S
        return self._cached if self._cached is not None and fresh else self.refresh()

    def refresh(self) -> Credentials:
        if self._client is None:
            self._client = boto3.client("rds", region_name=self._region)
        token = self._client.generate_db_auth_token(
            DBHostname=self._host, Port=self._port, DBUsername=self._user, Region=self._region
        )
        self._issued_at = time.monotonic()
        self._cached = Credentials(self._user, str(token))
        return self._cached


def credential_source(settings: DbSettings) -> CredentialSource:
    """The source `DB_AUTH` asks for."""
    if settings.auth == "iam":
        assert settings.user is not None  # enforced by DbSettings
        return IamTokenCredentials(settings.host, settings.port, settings.user, settings.region)
    assert settings.secret_arn is not None  # enforced by DbSettings
    return SecretCredentials(settings.secret_arn, settings.user)

"""The function environment (the shared contract), read once per instance and validated.

Every number here comes from the connection budget through the environment the deployment sets;
a missing or malformed variable is a configuration error that names the variable, raised before
any connection is attempted, rather than a confusing libpq failure later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class ConfigurationError(RuntimeError):
    """The function environment is missing a variable or carries a malformed one."""


# Environment variable -> field name; the variables are the shared contract's names.
ENV_NAMES: dict[str, str] = {
    "DB_HOST": "host",
    "DB_PORT": "port",
    "DB_NAME": "dbname",
    "DB_USER": "user",
    "DB_AUTH": "auth",
    "DB_SECRET_ARN": "secret_arn",
    "DB_SSLMODE": "sslmode",
    "DB_SSLROOTCERT": "sslrootcert",
    "DB_CONNECT_TIMEOUT_S": "connect_timeout_s",
    "DB_IDLE_DISCARD_S": "idle_discard_s",
    "DB_RETRY_BUDGET_S": "retry_budget_s",
    "DB_RETRIES": "retries",
    "DB_PREPARE_THRESHOLD": "prepare_threshold",
    "HEALTH_ALARM_PERCENT": "health_alarm_percent",
    "AWS_REGION": "region",
    "DB_READ_HOST": "read_host",
    "DB_READ_NAME": "read_dbname",
}
FIELD_TO_ENV = {field: env for env, field in ENV_NAMES.items()}


class DbSettings(BaseModel):
    """Where and how a function connects; defaults suit a pooler endpoint on AWS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str = Field(min_length=1)
    user: str | None = Field(default=None, min_length=1)
    auth: Literal["secret", "iam"] = "secret"
    secret_arn: str | None = None
    sslmode: SslMode = "verify-full"
    sslrootcert: str | None = None
    # libpq treats anything below 2 s as 2 s, so smaller values would only mislead.
    connect_timeout_s: int = Field(default=5, ge=2, le=60)
    # Below the pooler's client idle reaping, so a kept connection is never one the pooler closed.
    idle_discard_s: float = Field(default=240.0, gt=0)
    retry_budget_s: float = Field(default=10.0, ge=0)
    retries: Literal["on", "off"] = "on"
    # psycopg's prepare_threshold, or `off` (None): prepared statements only where the pooler
    # keeps them across server connections (PgBouncer 1.21+ with max_prepared_statements > 0);
    # the deployment derives it from the connection budget. Off unless said, as any pooler allows.
    prepare_threshold: int | None = Field(default=None, ge=0)
    health_alarm_percent: float = Field(default=80.0, gt=0, le=100)
    region: str | None = None
    # The read-only path (Aurora readers): the pooler's read pool or RDS Proxy's read-only
    # endpoint. Absent: read-only transactions run on the write path, still READ ONLY.
    read_host: str | None = Field(default=None, min_length=1)
    read_dbname: str | None = Field(default=None, min_length=1)

    def for_reads(self) -> DbSettings:
        """The same settings aimed at the read-only path (or the write path without one)."""
        return self.model_copy(
            update={"host": self.read_host or self.host, "dbname": self.read_dbname or self.dbname}
        )

    @field_validator("prepare_threshold", mode="before")
    @classmethod
    def _off_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() == "off" else value

    @model_validator(mode="after")
    def _auth_needs_its_inputs(self) -> DbSettings:
        if self.auth == "secret" and not self.secret_arn:
            raise ValueError("DB_AUTH=secret needs DB_SECRET_ARN (the Secrets Manager secret)")
        if self.auth == "iam" and not self.user:
            raise ValueError("DB_AUTH=iam needs DB_USER (the role the IAM token is for)")
        return self


def load_settings(environ: Mapping[str, str] | None = None) -> DbSettings:
    """Read the contract's variables; raise ConfigurationError naming each bad one."""
    env = os.environ if environ is None else environ
    values = {field: env[name] for name, field in ENV_NAMES.items() if env.get(name, "") != ""}
    try:
        return DbSettings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            name = FIELD_TO_ENV.get(field, "environment")
            given = f" (got {values[field]!r})" if field in values else ""
            problems.append(f"{name}: {error['msg']}{given}")
        raise ConfigurationError(
            "function environment is invalid; fix: " + "; ".join(problems)
        ) from exc

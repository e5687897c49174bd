"""Rules on hygiene: no plaintext secrets, idle clients reaped, production databases protected."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from pulumi_policy import PolicyResource
from pydantic import Field, model_validator

from policy.base import (
    PGB,
    PROXY_DEFAULT_IDLE_CLIENT_TIMEOUT_S,
    Finding,
    RuleConfig,
    pgbouncer_containers,
)
from policy.stackview import (
    LAMBDA_FUNCTION,
    RDS_INSTANCE,
    RDS_PROXY,
    StackView,
    as_int,
    label,
)

# -- no plaintext secrets ------------------------------------------------------------------------


class SecretsConfig(RuleConfig):
    allowed_names: list[str] = Field(
        [],
        alias="allowedNames",
        description="Variable names that look secret but hold none (reviewed exceptions).",
    )


_SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|PRIVATE_?KEY|API_?KEY|ACCESS_?KEY|CREDENTIAL|"
    r"(^|_)KEY$|(^|_)PWD$)",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"(-----BEGIN [A-Z ]*PRIVATE KEY-----|://[^/\s:@]+:[^/\s@]+@|(^|\s)password\s*=\s*\S|"
    r"AKIA[0-9A-Z]{16})",
    re.IGNORECASE,
)
_REFERENCE = re.compile(r"^(arn:|/aws/|alias/)")


def _plaintext(name: str, value: str, allowed: set[str]) -> str | None:
    if name in allowed or not value:
        return None
    if _SECRET_VALUE.search(value):
        return "its value is a credential"
    if _SECRET_NAME.search(name) and not _REFERENCE.match(value):
        return "the name says it is secret and the value is not a reference to a secret"
    return None


def check_secrets(view: StackView, config: SecretsConfig) -> Iterator[Finding]:
    allowed = set(config.allowed_names)
    for fn in view.of_type(LAMBDA_FUNCTION):
        for name, value in sorted(view.function_environment(fn).items()):
            why = _plaintext(name, value, allowed)
            if why:
                yield Finding(
                    f"function {label(fn)} has {name} in plain text ({why}): store it in "
                    "Secrets Manager and pass the secret's ARN (e.g. DB_SECRET_ARN).",
                    fn.urn,
                )
    for c in view.containers():
        for name, value in sorted(c.environment.items()):
            why = _plaintext(name, value, allowed)
            if why:
                yield Finding(
                    f"container {c.name!r} of {label(c.task_definition)} has {name} in plain text "
                    f"({why}): move it to the container's `secrets` with valueFrom a Secrets "
                    "Manager ARN.",
                    c.task_definition.urn,
                )


# -- idle client reaping and pool mode -----------------------------------------------------------


class ReapingConfig(RuleConfig):
    max_idle_client_timeout_s: int = Field(
        300,
        ge=1,
        alias="maxIdleClientTimeoutS",
        description="RDS Proxy IdleClientTimeout and PgBouncer client_idle_timeout may not "
        "exceed this: frozen function instances hold connections that long.",
    )


def check_reaping(view: StackView, config: ReapingConfig) -> Iterator[Finding]:
    limit = config.max_idle_client_timeout_s
    for proxy in view.of_type(RDS_PROXY):
        value = as_int(proxy.props.get("idleClientTimeout"))
        value = value if value is not None else PROXY_DEFAULT_IDLE_CLIENT_TIMEOUT_S
        if value > limit:
            yield Finding(
                f"RDS Proxy {label(proxy)} keeps idle clients {value} s, over {limit} s: frozen "
                "function instances would hold their connections; set idle_client_timeout "
                f"to {limit} s or less.",
                proxy.urn,
            )
    for c in pgbouncer_containers(view):
        task = c.task_definition
        variable = f"{PGB}CLIENT_IDLE_TIMEOUT_S"
        value = as_int(c.environment.get(variable))
        if value is None or value <= 0 or value > limit:
            shown = "unset (never reaped)" if not value else f"{value} s"
            yield Finding(
                f"PgBouncer container {c.name!r} of {label(task)} has {variable} {shown}, over "
                f"{limit} s: frozen function instances would hold their connections; set it to "
                f"{limit} s or less.",
                task.urn,
            )
        mode = c.environment.get(f"{PGB}POOL_MODE", "transaction").strip().lower()
        if mode != "transaction":
            yield Finding(
                f"PgBouncer container {c.name!r} of {label(task)} pools in {mode} mode: use "
                "transaction pooling, or each function instance holds a server connection.",
                task.urn,
            )


# -- production safety ---------------------------------------------------------------------------


class ProductionConfig(RuleConfig):
    prod_stack_pattern: str = Field(
        r"^prod",
        alias="prodStackPattern",
        description="Stacks whose name matches this regular expression are production.",
    )
    min_backup_retention_days: int = Field(
        7,
        ge=1,
        le=35,
        alias="minBackupRetentionDays",
        description="Automated backups a production database keeps.",
    )

    @model_validator(mode="after")
    def _pattern(self) -> ProductionConfig:
        try:
            re.compile(self.prod_stack_pattern)
        except re.error as error:
            raise ValueError(f"prodStackPattern is not a regular expression: {error}") from None
        return self


def _is_prod(view: StackView, db: PolicyResource, config: ProductionConfig) -> bool:
    tags = db.props.get("tags") or {}
    if isinstance(tags, Mapping) and tags.get("slotguard:environment") == "prod":
        return True
    return bool(view.stack) and re.search(config.prod_stack_pattern, view.stack) is not None


def check_production(view: StackView, config: ProductionConfig) -> Iterator[Finding]:
    for db in view.of_type(RDS_INSTANCE):
        if not _is_prod(view, db, config):
            continue
        if db.props.get("deletionProtection") is not True:
            yield Finding(
                f"production database {label(db)} has no deletion protection: set "
                "deletion_protection=True.",
                db.urn,
            )
        days = as_int(db.props.get("backupRetentionPeriod")) or 0
        if days < config.min_backup_retention_days:
            yield Finding(
                f"production database {label(db)} keeps {days} days of backups, fewer than "
                f"{config.min_backup_retention_days}: set backup_retention_period.",
                db.urn,
            )
        if db.props.get("skipFinalSnapshot") is True:
            yield Finding(
                f"production database {label(db)} skips its final snapshot: set "
                "skip_final_snapshot=False and a final_snapshot_identifier.",
                db.urn,
            )

"""The `app_user` and migration roles: their secrets and the bootstrap run at deploy time.

The role's timeouts and `CONNECTION LIMIT` live on the role (startup parameters do not survive a
pooler), so they are set by the bootstrap function, which runs inside the VPC as a Lambda
invocation resource. Its `triggers` carry the role settings and a hash of the migrations, so it
runs again exactly when one of them changes, and the application functions wait for it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.budget import Budget
from infra.functions import (
    LOG_RETENTION_DAYS,
    RDS_CA_BUNDLE_PATH,
    CodeSource,
    LambdaFunction,
    LambdaFunctionArgs,
    function_name,
)
from infra.rotation import clone_name
from infra.settings import StackSettings
from pgbouncer import scram

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "functions" / "migrations"
BOOTSTRAP_HANDLER = "functions.bootstrap.handler"
# The bootstrap creates roles and runs migrations once per deploy: a generous timeout. Its
# reserved concurrency (one instance at a time) lives in the budget, which counts it.
BOOTSTRAP_TIMEOUT_S = 300
BOOTSTRAP_MEMORY_MB = 256
# Generated passwords: long and alphanumeric, so they survive any connection-string quoting.
PASSWORD_LENGTH = 40
# The bootstrap's configuration variable (functions/bootstrap.py CONFIG_ENV).
BOOTSTRAP_CONFIG_ENV = "BOOTSTRAP_CONFIG"
# The key of the verifier secret the pooler's tasks get injected.
VERIFIER_KEY = "scram_verifier"


@dataclass
class AppUserArgs:
    settings: StackSettings
    budget: Budget
    code: CodeSource
    database_address: pulumi.Input[str]
    database_port: pulumi.Input[int]
    master_secret_arn: pulumi.Input[str]
    # The instance's identity (RDS's DbiResourceId): a replaced instance is a new database that
    # needs its roles and schema again, so the bootstrap runs again when it changes.
    database_resource_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    bootstrap_sg_id: pulumi.Input[str]
    tags: dict[str, str]
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)


def migrations_hash(directory: Path = MIGRATIONS_DIR) -> str:
    """sha256 over the migration files' names and contents, in name order."""
    digest = hashlib.sha256()
    if directory.is_dir():
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts:
                continue
            digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _secret_json(
    username: str,
    *,
    password: str,
    host: str,
    port: int,
    dbname: str,
    verifier: str | None,
) -> str:
    document: dict[str, Any] = {
        "username": username,
        "password": password,
        "engine": "postgres",
        "host": host,
        "port": int(port),
        "dbname": dbname,
    }
    if verifier is not None:
        document["scram_verifier"] = verifier
    return json.dumps(document, sort_keys=True)


def bootstrap_config(event: dict[str, Any]) -> str:
    """The budget's bootstrap settings as the function reads them from its environment."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"))


def verifier_secret_json(verifier: str | None) -> str:
    """The verifier secret's document: the one key a pooler task reads, nothing else."""
    if not verifier:
        raise ValueError("the app_user verifier secret needs a SCRAM verifier")
    return json.dumps({VERIFIER_KEY: verifier}, sort_keys=True)


def _verifier(password: str, salt_b64: str) -> str:
    return scram.make_verifier(password, base64.b64decode(salt_b64), scram.DEFAULT_ITERATIONS)


class AppUser(pulumi.ComponentResource):
    """Secrets of `app_user` and the migration role, and the bootstrap that creates them."""

    secret_arn: pulumi.Output[str]
    # The standby login's secret (rotated while nobody uses it; RDS Proxy accepts both logins).
    standby_secret_arn: pulumi.Output[str]
    # The clone's SCRAM verifier alone, for the pooler's tasks.
    clone_verifier_secret_arn: pulumi.Output[str]
    clone_verifier_version_id: pulumi.Output[str]
    # The role's SCRAM verifier alone, for the pooler's tasks (never the plaintext password).
    verifier_secret_arn: pulumi.Output[str]
    verifier_version_id: pulumi.Output[str]
    migrator_secret_arn: pulumi.Output[str]
    # Per workload (stack setting `workloads`): its role's secret, and its verifier's secret and
    # version for the pooler's tasks. Empty without workloads.
    workload_secret_arns: dict[str, pulumi.Output[str]]
    workload_verifiers: dict[str, tuple[pulumi.Output[str], pulumi.Output[str]]]
    bootstrap: LambdaFunction
    invocation: aws.lambda_.Invocation

    def __init__(
        self, name: str, args: AppUserArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("slotguard:app_user:AppUser", name, None, opts)
        s, budget = args.settings, args.budget
        child = pulumi.ResourceOptions(parent=self)
        dbname = s.database.name

        def credentials(role: str) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
            """A generated password and its SCRAM verifier (stored salt: stable across runs)."""
            password = random.RandomPassword(
                f"{name}-{role}-password", length=PASSWORD_LENGTH, special=False, opts=child
            )
            # Stored salt: the verifier is the same string on every run, so a redeploy
            # changes neither the secret nor the role.
            salt = random.RandomBytes(f"{name}-{role}-salt", length=scram.SALT_BYTES, opts=child)
            verifier = pulumi.Output.all(password.result, salt.base64).apply(
                lambda parts: _verifier(parts[0], parts[1])
            )
            return password.result, verifier

        def role_secret(
            role: str,
            username: str,
            password: pulumi.Output[str],
            verifier: pulumi.Output[str | None],
            prefix: str,
        ) -> tuple[aws.secretsmanager.Secret, pulumi.Output[str]]:
            # The name and description stay put when the login it holds alternates: a new
            # name_prefix would replace the secret (and its ARN, which the functions hold).
            secret = aws.secretsmanager.Secret(
                f"{name}-{role}-secret",
                name_prefix=f"slotguard/{s.stack}/{prefix}-",
                description=f"{prefix} on the slotguard {s.stack} database (RDS Proxy shape)",
                recovery_window_in_days=30 if s.is_prod else 0,
                tags=args.tags,
                opts=child,
            )
            document = pulumi.Output.all(
                password, args.database_address, args.database_port, verifier
            ).apply(
                lambda parts: _secret_json(
                    username,
                    password=parts[0],
                    host=parts[1],
                    port=parts[2],
                    dbname=dbname,
                    verifier=parts[3],
                )
            )
            version = aws.secretsmanager.SecretVersion(
                f"{name}-{role}-secret-version",
                secret_id=secret.id,
                secret_string=document.apply(pulumi.Output.secret),
                opts=child,
            )
            self._versions.append(version)
            # The ARN handed out carries the version as a dependency: whatever reads the secret
            # (task definition, functions) waits until its value exists, not only the secret.
            return secret, pulumi.Output.all(secret.arn, version.id).apply(lambda p: str(p[0]))

        self._versions: list[aws.secretsmanager.SecretVersion] = []
        # Alternating users (infra/rotation.py): app_user and its clone both log in; the
        # functions' secret names `app_user.current_login`, the standby secret the other one.
        primary = budget.app_user.name
        clone = clone_name(primary)
        logins = {primary: credentials("app"), clone: credentials("app-clone")}
        current, standby = (
            (primary, clone) if s.app_user.current_login == "primary" else (clone, primary)
        )
        app_secret, self.secret_arn = role_secret(
            "app",
            current,
            *logins[current],
            primary,
        )
        standby_secret, self.standby_secret_arn = role_secret(
            "app-standby",
            standby,
            *logins[standby],
            f"{primary}-standby",
        )
        migrator_password = random.RandomPassword(
            f"{name}-migrator-password", length=PASSWORD_LENGTH, special=False, opts=child
        )
        migrator_secret, self.migrator_secret_arn = role_secret(
            "migrator",
            budget.app_user.migration_role,
            migrator_password.result,
            pulumi.Output.from_input(None),
            budget.app_user.migration_role,
        )
        self.verifier_secret_arn, self.verifier_version_id = self._verifier_secret(
            name, args, logins[primary][1]
        )
        self.clone_verifier_secret_arn, self.clone_verifier_version_id = self._verifier_secret(
            name, args, logins[clone][1], key="app-clone", role=clone
        )
        # Each workload's role: its own secret (with its verifier) and verifier secret. New
        # resources only: a stack without workloads creates and changes nothing here.
        self.workload_secret_arns, self.workload_verifiers = {}, {}
        workload_secrets: list[aws.secretsmanager.Secret] = []
        for workload in budget.workloads.values():
            key = f"workload-{workload.name}"
            password, verifier = credentials(key)
            secret, self.workload_secret_arns[workload.name] = role_secret(
                key, workload.role, password, verifier, workload.role
            )
            workload_secrets.append(secret)
            self.workload_verifiers[workload.role] = self._verifier_secret(
                name, args, verifier, key=f"workload-{workload.name}", role=workload.role
            )
        # functions/bootstrap.py reads WORKLOAD_SECRET_ARN_<ROLE>: one ARN each (a reference,
        # as the policy pack wants every secret-looking variable to be).
        workload_environment: dict[str, pulumi.Input[str]] = {
            f"WORKLOAD_SECRET_ARN_{w.role.upper()}": secret.arn
            for w, secret in zip(budget.workloads.values(), workload_secrets, strict=True)
        }

        first = sorted(s.functions.items())[0][1]
        event = budget.bootstrap_event(s.database.name)
        self.bootstrap = LambdaFunction(
            f"{name}-bootstrap",
            LambdaFunctionArgs(
                function_name=function_name(s.stack, "bootstrap"),
                handler=BOOTSTRAP_HANDLER,
                runtime=first.runtime,
                architecture=first.architecture,
                memory_mb=BOOTSTRAP_MEMORY_MB,
                timeout_s=BOOTSTRAP_TIMEOUT_S,
                reserved_concurrency=args.budget.bootstrap_reserved_concurrency,
                code=args.code(first.runtime, first.architecture),
                environment={
                    # The bootstrap alone connects to the database itself (as the master user).
                    "DB_HOST": args.database_address,
                    "DB_PORT": pulumi.Output.from_input(args.database_port).apply(str),
                    "DB_NAME": dbname,
                    "DB_SSLMODE": "verify-full",
                    "DB_SSLROOTCERT": RDS_CA_BUNDLE_PATH,
                    "MASTER_SECRET_ARN": args.master_secret_arn,
                    "APP_USER_SECRET_ARN": app_secret.arn,
                    "APP_USER_STANDBY_SECRET_ARN": standby_secret.arn,
                    "MIGRATOR_SECRET_ARN": migrator_secret.arn,
                    **workload_environment,
                    # The budget's roles, limits and timeouts: the function's own configuration,
                    # never its invocation event (which only triggers a run).
                    BOOTSTRAP_CONFIG_ENV: bootstrap_config(event),
                    "POWERTOOLS_SERVICE_NAME": "bootstrap",
                    "POWERTOOLS_METRICS_NAMESPACE": "slotguard",
                },
                subnet_ids=args.subnet_ids,
                security_group_ids=[args.bootstrap_sg_id],
                statements=[
                    {
                        "Sid": "RoleSecrets",
                        "Effect": "Allow",
                        "Action": "secretsmanager:GetSecretValue",
                        "Resource": [
                            args.master_secret_arn,
                            app_secret.arn,
                            standby_secret.arn,
                            migrator_secret.arn,
                            *[secret.arn for secret in workload_secrets],
                        ],
                    }
                ],
                log_retention_days=LOG_RETENTION_DAYS[s.environment],
                tags=args.tags,
                depends_on=list(args.depends_on),
            ),
            opts=child,
        )
        self.invocation = aws.lambda_.Invocation(
            f"{name}-bootstrap-run",
            function_name=self.bootstrap.function.name,
            # Only a trigger: the numbers are in the function's configuration.
            input=json.dumps({}),
            triggers={
                "roles": json.dumps(event, sort_keys=True),
                "migrations": migrations_hash(),
                "function": self.bootstrap.function.source_code_hash.apply(lambda h: h or ""),
                # A replaced instance or a new password (a new secret version) re-runs it.
                "database": pulumi.Output.from_input(args.database_resource_id).apply(
                    lambda r: r or ""
                ),
                **{
                    f"secret-{index}": version.version_id.apply(lambda v: v or "")
                    for index, version in enumerate(self._versions)
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*args.depends_on, *self._versions, self.bootstrap],
            ),
        )
        self.register_outputs(
            {
                "verifier_secret_arn": self.verifier_secret_arn,
                "secret_arn": self.secret_arn,
                "migrator_secret_arn": self.migrator_secret_arn,
                "bootstrap": self.bootstrap.function.name,
            }
        )

    def _verifier_secret(
        self,
        name: str,
        args: AppUserArgs,
        verifier: pulumi.Output[str | None] | pulumi.Output[str],
        *,
        key: str = "app",
        role: str | None = None,
    ) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        """The SCRAM verifier in a secret of its own: the pooler's execution role reads only this.

        The role's full secret holds the plaintext password, which the pooler never needs (it
        authenticates clients and the server with the verifier, SCRAM pass-through).
        """
        s = args.settings
        # app_user's resources keep their names (`app`); the clone's and a workload's are named
        # after them (`app-clone`, `workload-<name>`).
        role = role or args.budget.app_user.name
        secret = aws.secretsmanager.Secret(
            f"{name}-{key}-verifier-secret",
            name_prefix=f"slotguard/{s.stack}/{role}-verifier-",
            description=f"{role}'s SCRAM verifier, for the pooler's tasks",
            recovery_window_in_days=30 if s.is_prod else 0,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        version = aws.secretsmanager.SecretVersion(
            f"{name}-{key}-verifier-secret-version",
            secret_id=secret.id,
            secret_string=verifier.apply(verifier_secret_json).apply(pulumi.Output.secret),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._versions.append(version)
        return secret.arn, version.version_id

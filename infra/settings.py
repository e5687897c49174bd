"""Typed stack settings: the one input every number of the stack is derived from.

Pure code (no Pulumi engine, no I/O besides reading a stack file on request), so the Pulumi
program, the `slotguard` tool, the policy pack and the tests all load settings the same way.
Every field is documented next to its default with the reason for that default; the README's
settings reference is generated from these descriptions.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from ipaddress import IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PROJECT = "slotguard"
# RDS Proxy's RDS for PostgreSQL major versions ("All available versions" of each), from AWS's
# "Supported Regions and DB engines for Amazon RDS Proxy". The settings refuse `rds-proxy` on
# any other major, and `slotguard preflight` reads the same set, so the two never disagree.
# PostgreSQL's `reserved_connections` (slots for pg_use_reserved_connections) exists from 16.
PG_RESERVED_SINCE = 16
RDS_PROXY_POSTGRES_MAJORS = frozenset({13, 14, 15, 16, 17})
RDS_PROXY_DOC = (
    "https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/"
    "Concepts.RDS_Fea_Regions_DB-eng.Feature.RDSProxy.html"
)
# Lambda's Python runtimes the kit's packaging builder and handlers support.
LAMBDA_RUNTIMES = ("python3.11", "python3.12", "python3.13")


class _Section(BaseModel):
    """Base of every settings section: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


MIN_VPC_PREFIX = 16
MAX_VPC_PREFIX = 25


class NetworkSettings(_Section):
    """Where the stack runs: a new VPC (default) or an existing one."""

    mode: Literal["new-vpc", "existing"] = Field(
        "new-vpc",
        description="`new-vpc` builds a VPC with private subnets only; `existing` uses "
        "`vpc_id` and `subnet_ids` you own. New is the default so a fork deploys with "
        "nothing to prepare.",
    )
    cidr: IPv4Network = Field(
        IPv4Network("10.40.0.0/16"),
        description="CIDR of a new VPC. A /16 leaves room for one /20 private subnet per AZ.",
    )
    availability_zones: int = Field(
        2,
        ge=2,
        le=6,
        description="AZs of a new VPC. RDS subnet groups and a spread pooler need at least two.",
    )
    vpc_id: str | None = Field(
        None,
        pattern=r"^vpc-[0-9a-f]{8,17}$",
        description="Existing VPC (mode `existing` only).",
    )
    subnet_ids: list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")]] = Field(
        default_factory=list,
        description="Existing private subnets in at least two AZs (mode `existing` only).",
    )
    vpc_endpoints: bool = Field(
        True,
        description="VPC endpoints instead of a NAT gateway, only those the pooler kind needs "
        "(Secrets Manager; with PgBouncer also Logs, CloudWatch, ECR and an S3 gateway endpoint "
        "limited to ECR's layer bucket): private subnets stay private and there is no per-GB NAT "
        "charge. In an existing VPC, an endpoint that already exists for a service is reused.",
    )

    @field_validator("cidr", mode="before")
    @classmethod
    def _cidr_text(cls, value: object) -> object:
        # pydantic would read a number (or `true`) as an address: 5 -> 0.0.0.5/32.
        if not isinstance(value, str | IPv4Network):
            raise ValueError("must be a CIDR block written as text, e.g. 10.40.0.0/16")
        return value

    @field_validator("cidr")
    @classmethod
    def _cidr_size(cls, value: IPv4Network) -> IPv4Network:
        # AWS takes VPC blocks from /16 to /28; the private subnets (one per AZ, at most /20 and
        # 3 bits below the VPC's prefix) must still be /28 or larger, hence /25 at most.
        if not MIN_VPC_PREFIX <= value.prefixlen <= MAX_VPC_PREFIX:
            raise ValueError(
                f"prefix /{value.prefixlen} is outside /{MIN_VPC_PREFIX}../{MAX_VPC_PREFIX}: "
                "a VPC block is /16 to /28 on AWS and must hold one /28-or-larger subnet per AZ"
            )
        return value

    @model_validator(mode="after")
    def _mode_fields(self) -> NetworkSettings:
        if self.mode == "existing":
            if self.vpc_id is None:
                raise ValueError("mode `existing` needs `vpc_id`")
            if len(self.subnet_ids) < 2:
                raise ValueError("mode `existing` needs at least two `subnet_ids` in different AZs")
        elif self.vpc_id is not None or self.subnet_ids:
            raise ValueError("`vpc_id` and `subnet_ids` apply only to mode `existing`")
        return self


# Aurora Serverless v2's capacity range: half-ACU steps from 0 (auto-pause) to 256
# (ServerlessV2ScalingConfiguration, RDS API reference; tests/test_infra_aurora.py cites it).
ACU_STEP = 0.5
ACU_MAX = 256.0
AUTO_PAUSE_MIN_S = 300
AUTO_PAUSE_MAX_S = 86_400
SERVERLESS_CLASS = "db.serverless"


class AuroraSettings(_Section):
    """An Aurora PostgreSQL cluster (database.kind `aurora`): a writer and optional readers."""

    instance_class: str = Field(
        SERVERLESS_CLASS,
        pattern=r"^db\.[a-z0-9]+(\.[a-z0-9]+)?$",
        description="Class of every instance of the cluster: `db.serverless` (Serverless v2, "
        "capacity between `min_capacity_acu` and `max_capacity_acu`) or a provisioned class "
        "(`db.r6g.large`). Readers use the writer's class, so every instance has the same "
        "`max_connections` and a failover changes no number of the budget.",
    )
    min_capacity_acu: float = Field(
        0.5,
        ge=0,
        le=ACU_MAX,
        description="Serverless v2 minimum ACUs (half steps). 0 lets the cluster pause when "
        "idle (`seconds_until_auto_pause`); 0 or 0.5 caps `max_connections` at 2,000.",
    )
    max_capacity_acu: float = Field(
        4.0,
        ge=1,
        le=ACU_MAX,
        description="Serverless v2 maximum ACUs (half steps): sets the default "
        "`max_connections` (AWS's table by maximum ACU; between published points the kit takes "
        "the lower one, e.g. 189 for 4 ACUs, so set `max_connections` to use more).",
    )
    seconds_until_auto_pause: int = Field(
        3600,
        ge=AUTO_PAUSE_MIN_S,
        le=AUTO_PAUSE_MAX_S,
        description="Idle seconds before a cluster with `min_capacity_acu` 0 pauses (AWS "
        "allows 300 to 86,400). The pooler's idle server connections must close well before, or "
        "they keep it awake; the budget checks it.",
    )
    readers: int = Field(
        0,
        ge=0,
        le=15,
        description="Reader instances (Aurora allows 15). With one or more, the pooler offers "
        "a read pool on the reader endpoint and functions a read-only path.",
    )
    failover_write_outage_s: int = Field(
        60,
        ge=5,
        le=600,
        description="The write outage a failover is planned for: measure your cluster's (a "
        "test failover) and set it. A function whose connect timeout plus retry budget covers "
        "it rides through; one that does not fails with the helper's clear error, and the "
        "budget says which.",
    )

    @field_validator("min_capacity_acu", "max_capacity_acu")
    @classmethod
    def _half_steps(cls, value: float) -> float:
        if value * 2 != int(value * 2):
            raise ValueError("ACUs come in half steps (0.5, 1, 1.5, ...)")
        return value

    @model_validator(mode="after")
    def _range(self) -> AuroraSettings:
        if self.min_capacity_acu > self.max_capacity_acu:
            raise ValueError(
                f"min_capacity_acu {self.min_capacity_acu:g} exceeds max_capacity_acu "
                f"{self.max_capacity_acu:g}"
            )
        return self

    @property
    def serverless(self) -> bool:
        return self.instance_class == SERVERLESS_CLASS

    @property
    def auto_pause(self) -> bool:
        return self.serverless and self.min_capacity_acu == 0


class ExistingDatabaseSettings(_Section):
    """A database the team already owns (database.kind `existing`): the stack never changes it."""

    instance_identifier: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="The RDS for PostgreSQL instance's identifier (or give "
        "`cluster_identifier`). Endpoint, port and engine version are looked up at preview.",
    )
    cluster_identifier: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="The Aurora PostgreSQL cluster's identifier (or give `instance_identifier`).",
    )
    master_secret_arn: str | None = Field(
        None,
        pattern=r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$",
        description="The master user's secret (RDS-managed or your own, with `username` and "
        "`password`): the bootstrap creates `app_user` and the migrator with it.",
    )
    security_group_id: str | None = Field(
        None,
        pattern=r"^sg-[0-9a-f]{8,17}$",
        description="The database's security group: the stack adds two named ingress rules to "
        "it (pooler and bootstrap to the database port), removed with the stack.",
    )

    @property
    def identifier(self) -> str:
        return self.instance_identifier or self.cluster_identifier or ""

    @property
    def is_cluster(self) -> bool:
        return self.cluster_identifier is not None


DatabaseKind = Literal["rds-instance", "aurora", "existing"]


class DatabaseSettings(_Section):
    """The database: a new RDS instance (default), an Aurora cluster, or one you own."""

    kind: DatabaseKind = Field(
        "rds-instance",
        description="`rds-instance` (a new RDS for PostgreSQL instance), `aurora` (a new Aurora "
        "PostgreSQL cluster, section `aurora`) or `existing` (an instance or cluster you own, "
        "section `existing`; the stack never modifies, replaces or deletes it).",
    )
    engine_version: str = Field(
        "16",
        description="PostgreSQL major version only (`16`): RDS creates the newest minor it "
        "offers and upgrades minors itself (`auto_minor_version_upgrade`), and a pinned minor "
        "would make a later update try to downgrade. The parameter group family (`postgres16`) "
        "follows it; 13 and later support SCRAM and the role settings used.",
    )
    instance_class: str = Field(
        "db.t4g.micro",
        pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$",
        description="RDS instance class. Its memory sets `max_connections` when that is not given.",
    )
    max_connections: int | None = Field(
        None,
        ge=10,
        le=5000,
        description="Explicit `max_connections`. Empty: RDS's formula "
        "`LEAST(DBInstanceClassMemory/9531392, 5000)` on the class's memory. The value is "
        "always written to the parameter group so it never changes under you.",
    )
    reserved_connections: int = Field(
        3,
        ge=1,
        le=20,
        description="`superuser_reserved_connections`: slots only superusers may take (on RDS, "
        "its own agents: the master user is `rds_superuser`, not a superuser). RDS's default "
        "is 3.",
    )
    rds_superuser_reserved_connections: int = Field(
        2,
        ge=0,
        le=20,
        description="`rds.rds_superuser_reserved_connections`: slots RDS keeps for "
        "`rds_superuser` roles (the master user), the margin a human with psql still gets when "
        "ordinary roles are refused. RDS's default is 2; ordinary roles get `max_connections` "
        "less this and `reserved_connections`.",
    )
    pg_reserved_connections: int = Field(
        0,
        ge=0,
        le=20,
        description="PostgreSQL 16's `reserved_connections`: slots for roles granted "
        "`pg_use_reserved_connections` (monitoring agents, say), also kept from ordinary roles. "
        "0 is PostgreSQL's default and leaves it out of the parameter group; 16 and later only.",
    )
    admin_margin: int = Field(
        3,
        ge=1,
        le=100,
        description="Slots kept free for migrations, monitoring and a human with psql; the "
        "pooler never gets them.",
    )
    name: str = Field(
        "app",
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="The application database's name.",
    )
    port: int = Field(5432, ge=1150, le=65535, description="The database port.")
    allocated_storage_gb: int = Field(
        20, ge=20, le=65536, description="gp3 storage; 20 GiB is RDS's minimum."
    )
    multi_az: bool | None = Field(
        None,
        description="Standby in a second AZ. Empty: on for `prod`, off for `dev`.",
    )
    backup_retention_days: int | None = Field(
        None,
        ge=0,
        le=35,
        description="Automated backups. Empty: 7 days for `prod`, 1 for `dev`.",
    )
    reboot_for_parameters: bool | None = Field(
        None,
        description="Reboot the instance during `pulumi up` when a changed `max_connections` "
        "waits for one (pending-reboot), then run the bootstrap again to raise `app_user`'s "
        "limit. Empty: on for `dev`, off for `prod` (reboot in your maintenance window; until "
        "then the limit stays within the running server's).",
    )

    aurora: AuroraSettings = Field(default_factory=AuroraSettings)
    existing: ExistingDatabaseSettings = Field(default_factory=ExistingDatabaseSettings)

    @model_validator(mode="before")
    @classmethod
    def _kind_alias(cls, value: Any) -> Any:
        # `kind: rds` is read as the default `rds-instance`.
        if isinstance(value, dict) and value.get("kind") == "rds":
            return {**value, "kind": "rds-instance"}
        return value

    @model_validator(mode="after")
    def _kind_sections(self) -> DatabaseSettings:
        # A section left at its defaults is no setting (a dump of the settings holds both).
        if self.kind != "aurora" and self.aurora != AuroraSettings():
            raise ValueError("the `aurora` section applies only to kind `aurora`")
        if self.kind != "existing" and self.existing != ExistingDatabaseSettings():
            raise ValueError("the `existing` section applies only to kind `existing`")
        if self.kind == "existing":
            ex = self.existing
            if (ex.instance_identifier is None) == (ex.cluster_identifier is None):
                raise ValueError(
                    "kind `existing` needs exactly one of existing.instance_identifier and "
                    "existing.cluster_identifier"
                )
            missing = [k for k in ("master_secret_arn", "security_group_id") if not getattr(ex, k)]
            if missing:
                raise ValueError(
                    "kind `existing` needs " + " and ".join(f"existing.{k}" for k in missing)
                )
            if self.max_connections is None:
                raise ValueError(
                    "kind `existing` needs max_connections: the value the database's parameter "
                    "group sets (the budget is computed from it; `pulumi preview` and "
                    "`slotguard verify` compare it with the live database)"
                )
        return self

    protect: bool | None = Field(
        None,
        description="Pulumi `protect` on the RDS instance: the engine refuses, at preview too, "
        "any update that would replace or delete it. Empty: on for `prod`, off for `dev` (whose "
        "`pulumi destroy` must go through). Turn it off in one `pulumi up` before a deliberate "
        "replacement or teardown.",
    )
    allow_replacement: bool = Field(
        False,
        description="Let an update replace the instance when a replace-forcing input changes "
        "(`database.name` and the others the README lists). Off: `pulumi preview` compares them "
        "with the running instance and refuses, naming what happens to the data (dev: deleted "
        "without a final snapshot; prod: a failed update with two instances).",
    )
    major_upgrade: Literal["in-place", "blue-green"] | None = Field(
        None,
        description="How a raised `engine_version` reaches the running instance: `in-place` "
        "(RDS upgrades it, offline for the whole upgrade) or `blue-green` (an RDS blue/green "
        "deployment and a switchover). Empty: `in-place` for `dev`, `blue-green` for `prod`. "
        "`slotguard budget` and the preview print the plan.",
    )

    @field_validator("engine_version", mode="before")
    @classmethod
    def _version_text(cls, value: object) -> object:
        # YAML reads an unquoted `16` as a number. Numbers are accepted quoted or not everywhere
        # (`pulumi config set` writes them as text), so a whole number is taken as its text; a
        # YAML float is not, since it has already lost its digits (`16.10` reads as 16.1).
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, float):
            raise ValueError(
                f'write the major version as text, in quotes: engine_version: "{int(value)}" '
                f"(YAML read the unquoted {value!r} as a number)"
            )
        return value

    @field_validator("engine_version")
    @classmethod
    def _major_only(cls, value: str) -> str:
        # The provider keeps a configured prefix while RDS moves the minor (engine_version_actual);
        # a full `16.4` is compared as-is and the next update after an automatic minor upgrade
        # asks RDS for a downgrade, which it refuses.
        if re.fullmatch(r"1[3-9]\.\d+(\.\d+)?", value):
            major = value.split(".", maxsplit=1)[0]
            raise ValueError(
                f"give the major version only ({major!r}): RDS upgrades minor "
                f"versions automatically, and a pinned {value!r} would make a later update try "
                "to downgrade the instance"
            )
        if not re.fullmatch(r"1[3-9]", value):
            raise ValueError('must be a PostgreSQL major version from 13 on, e.g. "16"')
        return value

    @model_validator(mode="after")
    def _pg_reserved(self) -> DatabaseSettings:
        if self.pg_reserved_connections and int(self.engine_version) < PG_RESERVED_SINCE:
            raise ValueError(
                f"pg_reserved_connections {self.pg_reserved_connections} needs PostgreSQL "
                f"{PG_RESERVED_SINCE} or later (engine_version is {self.engine_version}); set it "
                "to 0"
            )
        return self

    @property
    def reserved_total(self) -> int:
        """Every slot ordinary roles can never take (`app_user`, the migrator, monitoring)."""
        return (
            self.reserved_connections
            + self.rds_superuser_reserved_connections
            + self.pg_reserved_connections
        )

    @property
    def engine_major(self) -> int:
        return int(self.engine_version)

    @property
    def parameter_group_family(self) -> str:
        if self.kind == "aurora":
            return f"aurora-postgresql{self.engine_major}"
        return f"postgres{self.engine_major}"


class PgBouncerSettings(_Section):
    """PgBouncer on ECS Fargate behind an internal NLB. Per-process numbers unless stated."""

    version: str = Field(
        "1.24.1",
        pattern=r"^1\.\d+\.\d+$",
        description="The PgBouncer version the image pins; the configuration is rendered for it.",
    )
    tasks: int = Field(
        2,
        ge=1,
        le=20,
        description="Fargate tasks, spread over AZs. Two, so one AZ or task can fail.",
    )
    processes_per_task: int = Field(
        1,
        ge=1,
        le=8,
        description="PgBouncer processes per task sharing the port with `so_reuseport`. "
        "PgBouncer is single-threaded: add processes only for more than one vCPU.",
    )
    pool_size: int | None = Field(
        None,
        ge=1,
        description="`default_pool_size` per process. Empty: the largest that fits the "
        "pooler ceiling after the reserve pool, at the peak of `max_tasks` plus a deploy's "
        "surge, and below the warning alarm.",
    )
    reserve_pool: int = Field(
        1,
        ge=0,
        le=50,
        description="`reserve_pool_size` per process: extra server connections for a pool "
        "whose clients have waited `reserve_pool_timeout_s`. Counted in the ceiling.",
    )
    reserve_pool_timeout_s: float = Field(
        1.0, ge=0, le=60, description="How long a client waits before the reserve pool opens."
    )
    max_client_conn: int = Field(
        5000,
        ge=10,
        le=100_000,
        description="Client connections per process. Clients are cheap (a few kB each); the "
        "budget checks reserved concurrency against all processes' sum.",
    )
    client_headroom_percent: int = Field(
        20,
        ge=0,
        le=90,
        description="Client capacity kept free above the functions' reserved concurrency for "
        "frozen instances' connections not yet reaped.",
    )
    query_wait_timeout_s: int = Field(
        5,
        ge=1,
        le=600,
        description="A client waiting this long for a server connection gets an error, well "
        "before its function times out (PgBouncer's default of 120 s would outlive any function).",
    )
    client_idle_timeout_s: int = Field(
        60,
        ge=5,
        le=340,
        description="Idle client connections are closed after this: it reaps connections of "
        "frozen function instances. Below the NLB's 350 s idle timeout.",
    )
    server_idle_timeout_s: int = Field(
        60, ge=5, le=3600, description="Idle server connections above the minimum are closed."
    )
    server_lifetime_s: int = Field(
        3600, ge=60, le=86400, description="Server connections are recycled after this."
    )
    server_connect_timeout_s: int = Field(
        5, ge=1, le=60, description="Connecting to the database gives up after this."
    )
    tcp_keepalive_idle_s: int = Field(
        60, ge=10, le=300, description="TCP keepalive idle time, below the NLB's 350 s."
    )
    cpu: int = Field(
        256, description="Fargate task CPU units (256 = 0.25 vCPU). Must pair with `memory_mb`."
    )
    memory_mb: int = Field(512, description="Fargate task memory, in MiB.")
    max_prepared_statements: int | None = Field(
        None,
        ge=0,
        le=5000,
        description="`max_prepared_statements` (PgBouncer 1.21+): protocol-level prepared "
        "statements each server connection keeps, so drivers that prepare (psycopg 3, asyncpg, "
        "SQLAlchemy on either) work through transaction pooling. Empty: 200 from 1.21 (PgBouncer's "
        "own default since 1.24: twice the 100 statements psycopg 3 and asyncpg each cache per "
        "connection, so a statement a driver still holds is rarely re-prepared), 0 before. 0 "
        "turns the support off and the functions stop preparing.",
    )
    # -- operations: deploys and scaling (the budget plans them; see the README's deploy plan) --
    max_tasks: int | None = Field(
        None,
        ge=1,
        le=20,
        description="Most tasks ECS target tracking on CPU may run. Empty: `tasks` (no "
        "scaling). Every task's pool is sized so `max_tasks` plus a deploy's surge still fit "
        "the pooler's limit, so a higher maximum means smaller pools at the minimum.",
    )
    deploy_surge_tasks: int = Field(
        1,
        ge=0,
        le=4,
        description="Tasks a rolling deploy starts beside the running ones before it stops any "
        "(`deploymentConfiguration` maximumPercent above 100, minimumHealthyPercent 100), so "
        "capacity never drops during a deploy; the pools are sized for them. 0 stops a task "
        "before starting its replacement: no surge to pay for, one task less during a deploy.",
    )
    cpu_target_percent: int = Field(
        60,
        ge=10,
        le=90,
        description="Average CPU of the service that target tracking keeps "
        "(`ECSServiceAverageCPUUtilization`) when `max_tasks` is above `tasks`. PgBouncer is "
        "single-threaded: 60 % leaves room for a burst while a new task starts.",
    )
    stop_timeout_s: int = Field(
        60,
        ge=10,
        le=120,
        description="ECS `stopTimeout`: seconds between SIGTERM and SIGKILL (Fargate allows at "
        "most 120). The entrypoint's safe shutdown (SIGINT: running transactions finish) gets "
        "this less 5 s; the budget checks the longest transaction fits.",
    )
    deregistration_delay_s: int = Field(
        15,
        ge=0,
        le=3600,
        description="The NLB target group's deregistration delay: a stopping task leaves the "
        "load balancer's rotation this long before ECS sends SIGTERM, so new connections go to "
        "the other tasks. NLB's default of 300 s would make every deploy five minutes longer "
        "per batch; a few health-check intervals are enough for the change to reach every node.",
    )

    @model_validator(mode="after")
    def _scaling_range(self) -> PgBouncerSettings:
        if self.max_tasks is not None and self.max_tasks < self.tasks:
            raise ValueError(
                f"max_tasks {self.max_tasks} is below tasks {self.tasks}: target tracking scales "
                "between tasks (the minimum) and max_tasks"
            )
        return self

    @property
    def scaling_maximum(self) -> int:
        """The most tasks the service may be scaled to (`tasks` when it does not scale)."""
        return self.max_tasks if self.max_tasks is not None else self.tasks


class RdsProxySettings(_Section):
    """RDS Proxy in front of the instance."""

    max_connections_percent: int | None = Field(
        None,
        ge=1,
        le=100,
        description="`MaxConnectionsPercent`. Empty: the largest percentage of "
        "`max_connections` that stays within the pooler ceiling and below the warning alarm "
        "(less `alarms.observer_connections`).",
    )
    max_idle_connections_percent: int | None = Field(
        None,
        ge=0,
        le=100,
        description="`MaxIdleConnectionsPercent`. Empty: half the connections percentage.",
    )
    connection_borrow_timeout_s: int = Field(
        5,
        ge=1,
        le=300,
        description="`ConnectionBorrowTimeout`: a client waiting this long for a database "
        "connection gets an error before its function times out (RDS's default is 120 s).",
    )
    idle_client_timeout_s: int = Field(
        60,
        ge=5,
        le=28800,
        description="`IdleClientTimeout`: reaps frozen instances' connections "
        "(RDS's default of 30 minutes keeps them far too long). At least 5 s so a warm "
        "instance keeps its connection between invocations.",
    )
    iam_auth: bool = Field(
        False, description="Require IAM authentication (functions sign a token) for `app_user`."
    )


class PoolerSettings(_Section):
    """The pooler in front of the database: one switch."""

    kind: Literal["pgbouncer", "rds-proxy"] = Field(
        "pgbouncer",
        description="`pgbouncer` (self-hosted on Fargate: transaction pooling, full control) or "
        "`rds-proxy` (managed; pins sessions on some statements).",
    )
    pgbouncer: PgBouncerSettings = Field(default_factory=PgBouncerSettings)
    rds_proxy: RdsProxySettings = Field(default_factory=RdsProxySettings)

    @model_validator(mode="before")
    @classmethod
    def _kind_shorthand(cls, value: Any) -> Any:
        # `slotguard:pooler: rds-proxy` (what `pulumi new` prompts write) means only the kind.
        return {"kind": value} if isinstance(value, str) else value


class AppUserSettings(_Section):
    """The application's role; its timeouts are set on the role so they survive the pooler."""

    name: str = Field(
        "app_user", pattern=r"^[a-z][a-z0-9_]{0,62}$", description="The login role of functions."
    )
    migration_role: str = Field(
        "app_migrator",
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="The role that owns the schema and runs migrations.",
    )
    schema_name: str = Field(
        "app", pattern=r"^[a-z][a-z0-9_]{0,62}$", description="The application's schema."
    )
    statement_timeout_ms: int = Field(
        5000,
        ge=100,
        le=900_000,
        description="A statement running longer is cancelled, so a slow query cannot hold a "
        "pooled connection.",
    )
    idle_in_transaction_session_timeout_ms: int = Field(
        10_000,
        ge=100,
        le=3_600_000,
        description="A session idle inside a transaction is ended, releasing its locks and its "
        "pooled connection.",
    )
    lock_timeout_ms: int = Field(
        2000,
        ge=10,
        le=900_000,
        description="Waiting for a lock longer than this fails fast instead of queueing.",
    )
    current_login: Literal["primary", "clone"] = Field(
        "primary",
        description="Which of the two logins the functions' secret names: `primary` "
        "(`app_user`) or `clone` (`app_user_clone`, same settings and privileges). A rotation "
        "replaces the other login's password with one `pulumi up`, then switches this with a "
        "second, so no login ever fails (README, 'Rotating app_user's password').",
    )


class FunctionSettings(_Section):
    """One Lambda function of the application."""

    handler: str = Field(
        ...,
        pattern=r"^functions\.[a-z_][a-z0-9_]*\.handler$",
        description="`functions.<module>.handler` in the functions package.",
    )
    runtime: Literal["python3.11", "python3.12", "python3.13"] = Field(
        "python3.12", description="Lambda Python runtime."
    )
    architecture: Literal["arm64", "x86_64"] = Field(
        "arm64", description="arm64 (Graviton) is cheaper per GB-second."
    )
    memory_mb: int = Field(256, ge=128, le=10240, description="Lambda memory, in MB.")
    timeout_s: int = Field(
        15,
        ge=1,
        le=900,
        description="Lambda timeout. Every database wait of the function fits inside it.",
    )
    reserved_concurrency: int | None = Field(
        50,
        ge=1,
        le=10_000,
        description="Reserved concurrency: at most this many instances, so at most this many "
        "client connections. `null` leaves the function unreserved: it then runs in the "
        "account's unreserved pool, shared with every other function of the region, and the "
        "budget bounds its clients by `lambda_concurrency_quota` instead. A new account's quota "
        "is too small to reserve anything (Lambda keeps 100 unreserved). Written out, never "
        "implied: a key left out keeps the default reservation, so no existing stack loses its "
        "bound silently.",
    )
    connect_timeout_s: int = Field(
        3, ge=1, le=30, description="libpq `connect_timeout` for each attempt."
    )
    retry_budget_s: float = Field(
        4.0,
        ge=0,
        le=300,
        description="Time a function may spend retrying connects within one invocation.",
    )
    url: bool = Field(False, description="Expose the function through a Function URL.")
    workload: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]{0,39}$",
        description="The `workloads` entry whose role, timeouts and pool share the function "
        "uses. Empty: the default workload (`app_user` and its settings).",
    )

    @model_validator(mode="after")
    def _packable(self) -> FunctionSettings:
        # psycopg-binary publishes aarch64 wheels only for manylinux_2_28 (glibc 2.28), and
        # python3.11 runs on Amazon Linux 2 (glibc 2.26): no artifact can be built for the pair.
        if self.runtime == "python3.11" and self.architecture == "arm64":
            raise ValueError(
                "runtime python3.11 cannot run psycopg on arm64 (its aarch64 wheels need glibc "
                "2.28; python3.11 runs on Amazon Linux 2 with 2.26): use runtime python3.12 or "
                "later, or architecture x86_64"
            )
        return self


class WorkloadSettings(_Section):
    """A group of functions with its own login role, timeouts and share of the pooler."""

    role: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="The workload's login role. Empty: `<app_user.name>_<workload>`.",
    )
    statement_timeout_ms: int = Field(
        5000,
        ge=100,
        le=900_000,
        description="`statement_timeout` on the workload's role: a report or batch job may run "
        "longer than the API without the API's statements being allowed to.",
    )
    idle_in_transaction_session_timeout_ms: int = Field(
        10_000,
        ge=100,
        le=3_600_000,
        description="`idle_in_transaction_session_timeout` on the workload's role.",
    )
    lock_timeout_ms: int = Field(
        2000, ge=10, le=900_000, description="`lock_timeout` on the workload's role."
    )
    pool_share_percent: int = Field(
        ...,
        ge=1,
        le=99,
        description="Required: the workload's share of each PgBouncer process's pool, in % "
        "(rounded down; at least one connection). A percentage, not a count, so the split "
        "follows the budget when `max_connections`, tasks or processes change; the default "
        "workload keeps the rest. Also sizes the role's `CONNECTION LIMIT`.",
    )


def _default_functions() -> dict[str, FunctionSettings]:
    return {
        "api": FunctionSettings(handler="functions.api.handler", url=True),
        "health": FunctionSettings(handler="functions.health.handler", reserved_concurrency=5),
    }


class AlarmSettings(_Section):
    """CloudWatch alarms on connection use."""

    email: str | None = Field(
        None,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        description="Subscribe this address to the alarm topic (confirm the e-mail AWS sends).",
    )
    warn_percent: int = Field(
        70, ge=10, le=95, description="Database connections warning, % of `max_connections`."
    )
    critical_percent: int = Field(
        80, ge=10, le=99, description="Database connections critical, % of `max_connections`."
    )
    period_s: Literal[10, 30, 60, 300] = Field(
        60, description="Alarm period; 60 s matches RDS's metric resolution."
    )
    evaluation_periods: int = Field(
        2, ge=1, le=10, description="Periods in breach before an alarm fires."
    )
    observer_connections: int = Field(
        2,
        ge=0,
        le=50,
        description="Database connections besides the pooler's in healthy operation "
        "(monitoring agents; on the local target the storm's sampler and the alarm evaluator). "
        "The pooler's planned maximum plus these must stay below the warning threshold, or "
        "every healthy burst raises `db-connections-warn`.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> AlarmSettings:
        if self.warn_percent >= self.critical_percent:
            raise ValueError(
                f"warn_percent {self.warn_percent} must be below critical_percent "
                f"{self.critical_percent}"
            )
        return self


class StackSettings(_Section):
    """A whole stack: what `Pulumi.<stack>.yaml` holds under the `slotguard:` namespace."""

    stack: str = Field("dev", description="The stack's name (set by the loader).")
    region: str | None = Field(None, description="`aws:region` of the stack.")
    environment: Literal["dev", "prod"] = Field(
        "dev",
        description="`prod` turns on deletion protection, final snapshots, longer backups and "
        "Multi-AZ.",
    )
    lambda_concurrency_quota: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="The account's Lambda concurrent executions quota in this region (1,000 "
        "by default; new accounts get less, 10 for some). Reserved concurrency, the bootstrap's "
        "1 included, must leave 100 unreserved; unreserved functions may together reach all of "
        "it, so it bounds their clients. `pulumi preview` also reads the account's real quota.",
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Tags added to every taggable resource."
    )
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    pooler: PoolerSettings = Field(default_factory=PoolerSettings)
    app_user: AppUserSettings = Field(default_factory=AppUserSettings)
    functions: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")], FunctionSettings] = (
        Field(default_factory=_default_functions, min_length=1)
    )
    alarms: AlarmSettings = Field(default_factory=AlarmSettings)
    workloads: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")], WorkloadSettings] = (
        Field(
            default_factory=dict,
            description="Named groups of functions, each with its own login role, timeouts and "
            "share of the pooler's server connections (PgBouncer pools are per user). Empty: one "
            "default workload, `app_user` with its settings and the whole pool.",
        )
    )

    @model_validator(mode="after")
    def _proxy_engine(self) -> StackSettings:
        major = self.database.engine_major
        if self.pooler.kind == "rds-proxy" and major not in RDS_PROXY_POSTGRES_MAJORS:
            supported = ", ".join(map(str, sorted(RDS_PROXY_POSTGRES_MAJORS)))
            raise ValueError(
                f"database.engine_version {major} is not among the RDS for PostgreSQL majors "
                f"RDS Proxy supports ({supported}; {RDS_PROXY_DOC}): choose one of them, or "
                "pooler.kind: pgbouncer"
            )
        return self

    storm_function: str | None = Field(
        None,
        description="The function `slotguard storm`, the benchmarks, the drills' traffic and "
        "`slotguard verify`'s burst invoke unless told otherwise (`--function`), with its "
        "sample event `functions/<module>.event.json`. Empty: the first function of "
        "`functions`. Nothing in the tools depends on a function's name.",
    )

    @model_validator(mode="after")
    def _storm_function_exists(self) -> StackSettings:
        if self.storm_function is not None and self.storm_function not in self.functions:
            close = difflib.get_close_matches(self.storm_function, list(self.functions), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"storm_function {self.storm_function!r} is not a function of this stack; "
                f"{hint}functions: {', '.join(self.functions)}"
            )
        return self

    @property
    def traffic_function(self) -> str:
        """The function the tools burst by default: `storm_function`, else the first one."""
        return self.storm_function or next(iter(self.functions))

    @model_validator(mode="after")
    def _existing_database_network(self) -> StackSettings:
        # A database the team owns lives in its own VPC: the pooler and the functions join it.
        if self.database.kind == "existing" and self.network.mode != "existing":
            raise ValueError(
                "database.kind `existing` needs network.mode `existing` with the database's "
                "vpc_id and subnet_ids, so the pooler and the functions can reach it"
            )
        return self

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def multi_az(self) -> bool:
        return self.database.multi_az if self.database.multi_az is not None else self.is_prod

    @property
    def backup_retention_days(self) -> int:
        if self.database.backup_retention_days is not None:
            return self.database.backup_retention_days
        return 7 if self.is_prod else 1

    @property
    def reboot_for_parameters(self) -> bool:
        if self.database.kind != "rds-instance":
            # Aurora instances and a database the team owns are rebooted by their owners.
            return False
        flag = self.database.reboot_for_parameters
        return flag if flag is not None else not self.is_prod

    @property
    def deletion_protection(self) -> bool:
        return self.is_prod

    @property
    def protect_database(self) -> bool:
        flag = self.database.protect
        return flag if flag is not None else self.is_prod

    @property
    def all_tags(self) -> dict[str, str]:
        return {
            "slotguard:stack": self.stack,
            "slotguard:environment": self.environment,
            **self.tags,
        }


# -- loading -------------------------------------------------------------------------------------


class SettingsError(ValueError):
    """Settings that cannot be loaded; each problem names the setting's full path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid stack settings:\n" + "\n".join(f"  - {p}" for p in problems))


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The settings model that owns the field at `loc` (for suggesting known keys)."""
    model: type[BaseModel] = StackSettings
    index = 0
    while index < len(loc):
        name = loc[index]
        field = model.model_fields.get(str(name))
        if field is None:
            return model if index == len(loc) - 1 else None
        annotation = field.annotation
        if name in ("functions", "workloads"):
            if index + 2 < len(loc):
                model = FunctionSettings if name == "functions" else WorkloadSettings
                index += 2
                continue
            return None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            index += 1
            continue
        return None
    return model


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    path = ".".join(str(part) for part in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        owner = _model_at(loc)
        known = list(owner.model_fields) if owner is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        if close:
            hint = f"; did you mean `{'.'.join(str(p) for p in (*loc[:-1], close[0]))}`?"
        else:
            hint = f"; known keys here: {', '.join(known)}" if known else ""
        return f"{path}: unknown setting{hint}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if (
        error["type"] != "missing"
        and "input" in error
        and not isinstance(error["input"], dict | list)
    ):
        message += f" (got {error['input']!r})"
    return f"{path}: {message}"


def settings_from_mapping(
    raw: Mapping[str, Any], *, stack: str, region: str | None = None
) -> StackSettings:
    """Validate a mapping of `slotguard:` settings (namespace already removed)."""
    data: dict[str, Any] = {}
    for key, value in raw.items():
        parsed = value
        if isinstance(value, str) and value[:1] in "{[":
            try:
                parsed = json.loads(value)  # Pulumi passes structured config as JSON text
            except json.JSONDecodeError:
                parsed = value
        data[key] = parsed
    for reserved in ("stack", "region"):
        if reserved in data:
            raise SettingsError([f"{reserved}: set by the stack itself, remove this key"])
    data["stack"] = stack
    data["region"] = region
    try:
        return StackSettings.model_validate(data)
    except ValidationError as error:
        raise SettingsError([_describe(e) for e in error.errors()]) from None


def settings_from_pulumi_config(config: Mapping[str, Any], *, stack: str) -> StackSettings:
    """Select the `slotguard:` keys (and `aws:region`) of a flat Pulumi config map."""
    prefix = f"{PROJECT}:"
    ours = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    region = config.get("aws:region")
    return settings_from_mapping(ours, stack=stack, region=str(region) if region else None)


def stack_file(stack: str, root: Path | None = None) -> Path:
    """`Pulumi.<stack>.yaml` in the project root."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", stack):
        raise SettingsError([f"stack: {stack!r} is not a valid stack name"])
    return (root or Path(__file__).resolve().parent.parent) / f"Pulumi.{stack}.yaml"


def load_stack(stack: str, root: Path | None = None) -> StackSettings:
    """Load `Pulumi.<stack>.yaml` directly, without the Pulumi engine."""
    path = stack_file(stack, root)
    if not path.exists():
        available = sorted(p.name for p in path.parent.glob("Pulumi.*.yaml"))
        raise SettingsError(
            [f"stack: no file {path.name} in {path.parent} (found: {', '.join(available) or '-'})"]
        )
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SettingsError([f"{path.name}: not valid YAML: {error}"]) from None
    if not isinstance(document, dict):
        raise SettingsError([f"{path.name}: expected a mapping with a `config:` key"])
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise SettingsError([f"{path.name}: `config:` must be a mapping"])
    return settings_from_pulumi_config(config, stack=stack)

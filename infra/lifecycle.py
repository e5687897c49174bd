"""A running database's next change, planned: a major upgrade's path, a replacement refused.

Pure code: it compares the stack's settings with what the deployed instance reports (read at
preview by `infra.deployed`, or nothing for a new stack) and says what `pulumi up` will do to the
running database, so the program, `slotguard budget` and the README speak of the same plan.

Sources of the facts used here (each also pinned by a test):
- Inputs that force a new RDS instance: the `ForceNew: true` arguments of terraform-provider-aws
  `internal/service/rds/instance.go` (the schema pulumi-aws's `rds.Instance` is bridged from), and
  `backup_target` ("Forces new resource", website/docs/r/db_instance.html.markdown).
- "When upgrading the major version of an engine, `allow_major_version_upgrade` must be set to
  `true`" (same provider page).
- Blue/green: "Low-downtime updates ... cannot be used with DB Instances with replicas. Backups
  must be enabled" (same page, "Low-Downtime Updates"); "Blue/green deployments don't support
  managing master user passwords with AWS Secrets Manager" (AWS, "Limitations and considerations
  for Amazon RDS blue/green deployments"); a major upgrade through blue/green replicates
  logically from 16.1 on (AWS, "PostgreSQL replication methods for blue/green deployments").
- PgBouncer's `dns_max_ttl` defaults to 15 s (PgBouncer doc/config.md); the kit leaves it unset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from infra.settings import StackSettings

# The master user the program creates (infra.database.MASTER_USERNAME; repeated here so this
# module stays free of Pulumi imports).
MASTER_USERNAME = "postgres"
ENGINE = "postgres"

# Every argument of aws_db_instance marked ForceNew (a change replaces the instance), with the
# stack setting that drives it in this kit (None: the program never sets it).
REPLACING_INPUTS: dict[str, str | None] = {
    "availability_zone": None,
    "backup_target": None,
    "character_set_name": None,
    "custom_iam_instance_profile": None,
    "db_name": "database.name",
    "engine": None,
    "identifier": None,
    "identifier_prefix": None,
    "kms_key_id": None,
    "nchar_character_set_name": None,
    "restore_to_point_in_time": None,
    "s3_import": None,
    "snapshot_identifier": None,
    "storage_encrypted": None,
    "timezone": None,
    "username": None,
}

# DescribeDBInstances' PendingModifiedValues members (API_PendingModifiedValues) the program
# sets, and the rds.Instance property each one is (what `ignore_changes` names).
PENDING_PROPERTIES: dict[str, str] = {
    "DBInstanceClass": "instanceClass",
    "AllocatedStorage": "allocatedStorage",
    "EngineVersion": "engineVersion",
    "MultiAZ": "multiAz",
    "BackupRetentionPeriod": "backupRetentionPeriod",
    "StorageType": "storageType",
    "CACertificateIdentifier": "caCertIdentifier",
    "Port": "port",
}

# PgBouncer's default DNS cache lifetime (doc/config.md, `dns_max_ttl`, Default: 15.0).
PGBOUNCER_DNS_MAX_TTL_S = 15.0

Path = Literal["none", "in-place", "blue-green"]


@dataclass(frozen=True)
class DeployedDatabase:
    """What RDS reports of the stack's running instance (DescribeDBInstances / rds.getInstance)."""

    identifier: str
    engine_version: str  # the actual version, e.g. "16.10"
    db_name: str
    storage_encrypted: bool
    username: str
    engine: str = ENGINE
    # PendingModifiedValues: what waits for the maintenance window (prod: apply_immediately off).
    pending: dict[str, str] = field(default_factory=dict)

    @property
    def major(self) -> int:
        return int(self.engine_version.split(".", maxsplit=1)[0])


@dataclass(frozen=True)
class Replacement:
    """One replace-forcing input whose value would change."""

    argument: str
    setting: str | None
    deployed: str
    desired: str


@dataclass(frozen=True)
class LifecyclePlan:
    """What the next `pulumi up` does to the running database."""

    stack: str
    path: Path  # how this update carries out a major change ("none": no major change)
    upgrade_path: Path  # how the stack carries out any major change (its setting)
    major_from: int | None
    major_to: int
    allow_major_version_upgrade: bool
    apply_immediately: bool
    blue_green_update: bool
    # Parameter group families the program declares: the desired one, and while the instance
    # still runs the old major, the old one (kept until the instance has left it).
    parameter_group_families: tuple[str, ...]
    replacements: tuple[Replacement, ...]
    data_fate: str
    downtime: str
    poolers: dict[str, str]
    steps: tuple[str, ...]
    refusals: tuple[str, ...]
    pending: dict[str, str]
    protected: bool = False
    pooler_kind: str = "pgbouncer"
    # Properties whose desired value RDS already holds as pending: not re-sent on every update.
    pending_ignores: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        return bool(self.refusals)


def family(major: int) -> str:
    return f"postgres{major}"


def desired_replacing_inputs(settings: StackSettings) -> dict[str, str]:
    """The replace-forcing inputs the program sets, as RDS reports them back."""
    return {
        "db_name": settings.database.name,
        "engine": ENGINE,
        "storage_encrypted": "true",
        "username": MASTER_USERNAME,
    }


def deployed_replacing_inputs(deployed: DeployedDatabase) -> dict[str, str]:
    return {
        "db_name": deployed.db_name,
        "engine": deployed.engine,
        "storage_encrypted": str(deployed.storage_encrypted).lower(),
        "username": deployed.username,
    }


def data_fate(settings: StackSettings) -> str:
    """What a replacement does to the rows, from the stack's own deletion settings."""
    if settings.deletion_protection:
        return (
            "deletion protection is on: Pulumi creates the new, empty instance first, then the "
            "delete of the old one fails, leaving two instances and a failed update; the "
            "application would see an empty database at the new endpoint"
        )
    return (
        "skip_final_snapshot is on (no final snapshot): the old instance and every row in it "
        "are deleted; the new instance starts empty and the bootstrap recreates only the roles "
        "and the schema"
    )


def major_path(settings: StackSettings) -> Path:
    """In place for `dev`, blue/green for `prod` unless the stack says otherwise."""
    chosen = settings.database.major_upgrade
    if chosen is not None:
        return chosen
    return "blue-green" if settings.is_prod else "in-place"


def pooler_effects(settings: StackSettings, path: Path) -> dict[str, str]:
    """What the switch (or the in-place restart) does to each pooler kind and the functions."""
    if path == "blue-green":
        return {
            "rds-proxy": "RDS Proxy follows the switchover itself (no DNS wait): blue turns "
            "read-only, then the proxy drops its client connections when green is promoted; "
            "functions see a closed connection or a read-only error (25006) and reconnect",
            "pgbouncer": "blue terminates PgBouncer's server connections (57P01) and its "
            "endpoint's DNS name moves to green; PgBouncer re-resolves it within dns_max_ttl "
            f"({PGBOUNCER_DNS_MAX_TTL_S:g} s, PgBouncer's default), server_login_retry holds a "
            "pool whose login failed; functions' queries in flight fail and are retried",
        }
    return {
        "rds-proxy": "the proxy's targets are unavailable while the instance upgrades: clients "
        "wait ConnectionBorrowTimeout and get an error; functions return 503 until it is back",
        "pgbouncer": "server logins fail while the instance upgrades (server_login_retry holds "
        "each pool); clients get query_wait_timeout errors; functions return 503 until it is "
        "back; the endpoint does not change",
    }


def _downtime(path: Path, settings: StackSettings) -> str:
    if path == "in-place":
        when = "at once" if not settings.is_prod else "in the next maintenance window"
        return (
            f"the instance is unavailable for the whole upgrade, {when} (RDS stops it, runs "
            "pg_upgrade and restarts it; minutes to tens of minutes with the database's size); "
            "a Multi-AZ standby is upgraded at the same time and does not shorten it"
        )
    if path == "blue-green":
        return (
            "writes stop while blue turns read-only and green is promoted (the switchover, "
            "bounded by its timeout, 300 s by default); reads continue until blue's sessions end"
        )
    return "none"


def plan(settings: StackSettings, deployed: DeployedDatabase | None) -> LifecyclePlan:
    """The next update's plan; `deployed` None is a new stack (nothing to upgrade or replace)."""
    db = settings.database
    major_to = db.engine_major
    major_from = deployed.major if deployed is not None else None
    refusals: list[str] = []
    replacements: list[Replacement] = []
    if deployed is not None:
        desired = desired_replacing_inputs(settings)
        current = deployed_replacing_inputs(deployed)
        for argument, value in desired.items():
            if current.get(argument) != value:
                replacements.append(
                    Replacement(argument, REPLACING_INPUTS.get(argument), current[argument], value)
                )
    fate = data_fate(settings)
    if replacements and not db.allow_replacement:
        changed = ", ".join(
            f"{r.setting or r.argument} {r.deployed!r} -> {r.desired!r}" for r in replacements
        )
        refusals.append(
            f"database: {changed} replaces RDS instance {deployed.identifier if deployed else ''} "
            f"({fate}). Put the setting back, or set database.allow_replacement: true (and "
            "database.protect: false) after taking a snapshot"
        )
    path: Path = "none"
    if major_from is not None and major_to < major_from:
        refusals.append(
            f"database.engine_version: {major_to} is below the running major {major_from}; RDS "
            "cannot downgrade an instance (restore a snapshot into a new stack instead)"
        )
    elif major_from is not None and major_to > major_from:
        path = major_path(settings)
    blue_green = path == "blue-green"
    if blue_green:
        refusals += _blue_green_blockers(settings, major_from, major_to)
    families: tuple[str, ...] = (family(major_to),)
    if major_from is not None and major_from != major_to:
        families = (family(major_to), family(major_from))
    steps = _steps(settings, path, major_from, major_to)
    return LifecyclePlan(
        stack=settings.stack,
        path=path,
        upgrade_path=major_path(settings),
        major_from=major_from,
        major_to=major_to,
        allow_major_version_upgrade=path != "none",
        # A major upgrade in place on dev applies at once like every dev change; prod waits for
        # its maintenance window unless the stack applies changes immediately.
        apply_immediately=not settings.is_prod,
        blue_green_update=blue_green and not refusals,
        parameter_group_families=families,
        replacements=tuple(replacements),
        data_fate=fate,
        downtime=_downtime(path, settings),
        poolers=pooler_effects(settings, path if path != "none" else major_path(settings)),
        steps=steps,
        refusals=tuple(refusals),
        pending=dict(deployed.pending) if deployed is not None else {},
        protected=settings.protect_database,
        pooler_kind=settings.pooler.kind,
        pending_ignores=pending_ignores(settings, deployed.pending if deployed else {}),
    )


def desired_pending_values(settings: StackSettings) -> dict[str, str]:
    """The program's values of the properties RDS may hold as pending, as RDS reports them."""
    return {
        "DBInstanceClass": settings.database.instance_class,
        "AllocatedStorage": str(settings.database.allocated_storage_gb),
        "EngineVersion": settings.database.engine_version,
        "MultiAZ": str(settings.multi_az).lower(),
        "BackupRetentionPeriod": str(settings.backup_retention_days),
        "StorageType": "gp3",
        "Port": str(settings.database.port),
    }


def pending_ignores(settings: StackSettings, pending: dict[str, str]) -> tuple[str, ...]:
    """Properties to leave alone because RDS already holds exactly the desired value pending.

    Without this, every `pulumi up` before the maintenance window sees the old value in the
    instance, shows a diff and sends the same modification again. The engine version pending is
    a full version (17.6) for a configured major (17): the major is compared.
    """
    desired = desired_pending_values(settings)
    ignores = []
    for key, value in pending.items():
        want = desired.get(key)
        if want is None:
            continue
        have = str(value).lower() if key == "MultiAZ" else str(value)
        if key == "EngineVersion":
            have = have.split(".", maxsplit=1)[0]
        if have == want:
            ignores.append(PENDING_PROPERTIES[key])
    return tuple(sorted(ignores))


def _blue_green_blockers(
    settings: StackSettings, major_from: int | None, major_to: int
) -> list[str]:
    """Why RDS would refuse the blue/green deployment the provider would create."""
    blockers = [
        "database.major_upgrade: blue-green: RDS blue/green deployments do not support a master "
        "password managed in Secrets Manager (AWS, 'Limitations and considerations for Amazon "
        "RDS blue/green deployments'), and this kit's master password is (manage_master_user_"
        "password). Follow the README runbook 'Major upgrade through blue/green', or set "
        "database.major_upgrade: in-place and accept the downtime it states"
    ]
    if settings.backup_retention_days == 0:
        blockers.append(
            "database.backup_retention_days: 0, but low-downtime updates need backups enabled "
            "(terraform-provider-aws db_instance docs, 'Low-Downtime Updates')"
        )
    return blockers


def _steps(
    settings: StackSettings, path: Path, major_from: int | None, major_to: int
) -> tuple[str, ...]:
    if path == "none":
        return ()
    old, new = family(major_from or major_to), family(major_to)
    steps = [
        f"1. Pulumi creates parameter group {new} (the budget's values) beside {old}; the "
        f"{old} group stays declared while the instance still runs PostgreSQL {major_from}.",
    ]
    if path == "in-place":
        steps.append(
            f"2. ModifyDBInstance with EngineVersion {major_to}, the {new} group and "
            "AllowMajorVersionUpgrade; "
            + (
                "ApplyImmediately: the upgrade starts now."
                if not settings.is_prod
                else "no ApplyImmediately: RDS holds it as pending until the maintenance "
                "window (`slotguard verify` shows it)."
            )
        )
    else:
        steps.append(
            f"2. The provider creates a blue/green deployment (green on {major_to} with the "
            f"{new} group, logical replication), waits for green, switches over, and deletes "
            "the old blue instance."
        )
    steps.append(
        f"3. A later `pulumi up`, once RDS reports PostgreSQL {major_to}, stops declaring the "
        f"{old} group and Pulumi deletes it."
    )
    steps.append(
        "4. The bootstrap runs again (the instance's resource id or version changed) and "
        "re-applies roles and grants; run `ANALYZE` after a major upgrade (pg_upgrade keeps no "
        "planner statistics)."
    )
    return tuple(steps)


def plan_lines(p: LifecyclePlan) -> list[str]:
    """The plan as the budget report and the preview print it."""
    lines = []
    if p.path == "none":
        current = f"PostgreSQL {p.major_from}" if p.major_from is not None else "no instance yet"
        lines.append(
            f"database lifecycle: {current} -> {p.major_to}: no major change; a major "
            f"upgrade would go {p.upgrade_path} ({_downtime_short(p.upgrade_path)})"
        )
    else:
        lines.append(
            f"database lifecycle: major upgrade {p.major_from} -> {p.major_to} via {p.path}; "
            f"downtime: {p.downtime}"
        )
        lines += [f"  {step}" for step in p.steps]
    lines.append(f"  {p.pooler_kind}: {p.poolers[p.pooler_kind]}")
    for key, value in sorted(p.pending.items()):
        lines.append(f"  pending until the maintenance window: {key} = {value}")
    for refusal in p.refusals:
        lines.append(f"  refused: {refusal}")
    return lines


def _downtime_short(path: Path) -> str:
    return "writes stop for the switchover" if path == "blue-green" else "offline while it upgrades"

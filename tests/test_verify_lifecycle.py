"""`slotguard verify` on a running stack's life: pending modifications, the major, the certificate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slotguard.aws.checks import Check, Status
from tests.aws_stubs import db_instance, stubbed
from tests.test_verify import PGB, outputs, pooler_stubs, settings, verify


def one(checks: list[Check], name: str) -> Check:
    (check,) = [c for c in checks if c.name == name]
    return check


def rds_with(instance: dict[str, Any]) -> Any:
    rds, stub = stubbed("rds")
    response = db_instance("slotguard-t-db", "slotguard-t-params", "in-sync")
    response["DBInstances"][0].update(instance)
    stub.add_response("describe_db_instances", response, {"DBInstanceIdentifier": "slotguard-t-db"})
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeDBParameters.html
    stub.add_response(
        "describe_db_parameters",
        {"Parameters": [{"ParameterName": "max_connections", "ParameterValue": "112"}]},
        {"DBParameterGroupName": "slotguard-t-params", "Source": "user"},
    )
    stub.activate()
    return rds


def test_pending_modifications_are_reported_not_reapplied() -> None:
    # DescribeDBInstances' PendingModifiedValues: "a list of changes to the DB instance that are
    # pending" (EngineVersion, DBInstanceClass, AllocatedStorage, ...;
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_PendingModifiedValues.html).
    # With apply_immediately off (prod) RDS holds them until PreferredMaintenanceWindow.
    rds = rds_with(
        {
            "EngineVersion": "16.10",
            "PreferredMaintenanceWindow": "sun:03:00-sun:03:30",
            "PendingModifiedValues": {"DBInstanceClass": "db.r6g.xlarge", "EngineVersion": "17.6"},
        }
    )
    checks = list(verify(settings(), {"rds": rds}).parameter_group())
    check = one(checks, "pending modifications")
    assert check.status is Status.PASS
    assert "DBInstanceClass = db.r6g.xlarge" in check.found
    assert "EngineVersion = 17.6" in check.found
    assert "sun:03:00-sun:03:30" in check.found
    assert "no need to run `pulumi up` again" in check.found


def test_a_running_major_other_than_the_settings_fails_with_the_plan_command() -> None:
    rds = rds_with({"EngineVersion": "15.8"})
    check = one(list(verify(settings(), {"rds": rds}).parameter_group()), "engine version")
    assert check.failed
    assert "PostgreSQL 15.8 running, database.engine_version 16" in check.found
    assert "slotguard budget --running-major 15" in check.change


def test_nothing_pending_is_said() -> None:
    rds = rds_with({"EngineVersion": "16.10"})
    check = one(list(verify(settings(), {"rds": rds}).parameter_group()), "pending modifications")
    assert check.status is Status.PASS
    assert check.found.startswith("none")


def pooler_checks(not_after: str | None, now: datetime) -> list[Check]:
    clients = pooler_stubs(2, ("healthy", "healthy"))
    extra = {"pooler_certificate_not_after": not_after} if not_after else {}
    v = verify(
        settings(),
        clients,
        outputs(**PGB, target_group_arn="tg", **extra),
        now=lambda: now,
    )
    return list(v.pooler())


def test_certificate_days_left_are_shown() -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC)
    check = one(pooler_checks("2028-12-03T00:00:00Z", now), "pooler certificate")
    assert check.status is Status.PASS
    assert check.found == "730 days left (expires 2028-12-03)"


def test_a_certificate_in_its_renewal_window_fails_with_the_renewal() -> None:
    now = datetime(2028, 11, 20, tzinfo=UTC)
    check = one(pooler_checks("2028-12-03T00:00:00Z", now), "pooler certificate")
    assert check.failed
    assert "13 days left" in check.found
    assert "pulumi up" in check.change


def test_a_stack_without_the_output_skips_the_certificate() -> None:
    check = one(pooler_checks(None, datetime(2026, 12, 4, tzinfo=UTC)), "pooler certificate")
    assert check.status is Status.SKIP

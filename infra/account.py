"""Checks against the account itself, so `pulumi preview` refuses what cannot deploy.

Provider look-ups run during a preview as during an update, so a stack whose reservations exceed
the account's Lambda quota, or whose engine version RDS no longer offers for new instances, stops
at `pulumi preview` with the setting to change, before anything is created.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.budget import BOOTSTRAP_RESERVED_CONCURRENCY, LAMBDA_UNRESERVED_MINIMUM, Budget
from infra.settings import SettingsError, StackSettings

# Service Quotas code of Lambda's "Concurrent executions" quota
# (https://docs.aws.amazon.com/servicequotas/latest/userguide/ and `aws service-quotas
# list-service-quotas --service-code lambda`).
LAMBDA_SERVICE_CODE = "lambda"
LAMBDA_CONCURRENCY_QUOTA_CODE = "L-B99A9384"
ENGINE = "postgres"
AURORA_ENGINE = "aurora-postgresql"
# The provider reports a look-up that matched nothing as an error with this text.
NOT_FOUND = "no matching"


@dataclass(frozen=True)
class AccountFacts:
    """What the look-ups found (for the record and for tests)."""

    lambda_concurrency_quota: int
    engine_version: str


def lambda_quota(parent: pulumi.Resource | None = None) -> int:
    """The account's concurrent executions quota in the stack's region.

    The data source answers the applied value, or the default when it was never raised
    (terraform-provider-aws `service_quota_data_source.go`: "A Service Quota will always have a
    default value, but will only have a current value if it has been set").
    """
    try:
        quota = aws.servicequotas.get_service_quota(
            service_code=LAMBDA_SERVICE_CODE,
            quota_code=LAMBDA_CONCURRENCY_QUOTA_CODE,
            opts=pulumi.InvokeOptions(parent=parent),
        )
    except Exception as error:  # any failure: say what the look-up needs
        raise SettingsError(
            [
                "lambda_concurrency_quota: could not read the account's Lambda concurrent "
                f"executions quota ({LAMBDA_CONCURRENCY_QUOTA_CODE}) from Service Quotas: "
                f"{error}. The deploying identity needs servicequotas:GetServiceQuota"
            ]
        ) from None
    return int(quota.value)


def reserved_elsewhere(settings: StackSettings, parent: pulumi.Resource | None = None) -> int:
    """What the region's other functions reserve (another stack's included).

    Every function of the region is listed (`lambda_.get_functions`) and each one outside this
    stack read for its reservation: `reserved_concurrent_executions`, "-1 if unreserved"
    (pulumi-aws `lambda_.get_function` docstring).
    """
    opts = pulumi.InvokeOptions(parent=parent)
    ours = f"slotguard-{settings.stack}-"
    total = 0
    for name in aws.lambda_.get_functions(opts=opts).function_names:
        if name.startswith(ours):
            continue
        reserved = aws.lambda_.get_function(function_name=name, opts=opts)
        total += max(int(reserved.reserved_concurrent_executions), 0)
    return total


def quota_problems(
    settings: StackSettings, budget: Budget, quota: int, elsewhere: int = 0
) -> list[str]:
    """Lambda refuses a reservation that leaves fewer than 100 executions unreserved.

    `elsewhere` is what other functions of the region already reserve: two stacks in one
    account and region draw on one quota.
    """
    reservable = quota - LAMBDA_UNRESERVED_MINIMUM - elsewhere
    total = budget.reserved_concurrency_total
    # No reservation asks nothing of the quota: unreserved functions run at any quota.
    if total == 0 or total <= reservable:
        return []
    parts = " + ".join(
        f"{f.name} {f.reserved_concurrency}"
        for f in sorted(budget.functions.values(), key=lambda f: f.name)
        if f.reserved_concurrency is not None
    )
    region = settings.region or "the stack's region"
    if reservable < BOOTSTRAP_RESERVED_CONCURRENCY + len(budget.functions):
        advice = (
            "no reservation is possible at that quota: leave the functions unreserved "
            "(functions.<name>.reserved_concurrency: null) or request an increase of Lambda's "
            "'Concurrent executions' (L-B99A9384) in Service Quotas"
        )
    else:
        advice = (
            "lower functions.<name>.reserved_concurrency (largest first) or request an "
            "increase of Lambda's 'Concurrent executions' (L-B99A9384) in Service Quotas"
        )
    others = f", other functions there reserve {elsewhere}" if elsewhere else ""
    return [
        f"functions.reserved_concurrency: the stack reserves {parts} + bootstrap "
        f"{BOOTSTRAP_RESERVED_CONCURRENCY} = {total}, but the account's concurrent executions "
        f"quota in {region} is {quota}{others} and Lambda keeps {LAMBDA_UNRESERVED_MINIMUM} "
        f"unreserved ({max(reservable, 0)} reservable); {advice}, then set "
        "lambda_concurrency_quota to the new quota"
    ]


def engine_version(settings: StackSettings, parent: pulumi.Resource | None = None) -> str:
    """The newest available minor RDS offers for the configured major version.

    `version` may be a partial identifier when `latest` is true, and without `include_all` only
    versions whose status is `available` match (pulumi-aws `rds.get_engine_version` docstring).
    """
    major = settings.database.engine_version
    engine = AURORA_ENGINE if settings.database.kind == "aurora" else ENGINE
    try:
        found = aws.rds.get_engine_version(
            engine=engine,
            version=major,
            latest=True,
            opts=pulumi.InvokeOptions(parent=parent),
        )
    except Exception as error:  # the provider reports "not found" as an invoke error
        if NOT_FOUND not in str(error):
            raise
        region = settings.region or "the stack's region"
        raise SettingsError(
            [
                f"database.engine_version: RDS offers no available PostgreSQL {major} version "
                f"for new instances in {region}; choose a major version RDS lists there "
                f"(aws rds describe-db-engine-versions --engine {engine})"
            ]
        ) from None
    return str(found.version_actual or found.version)


def check_account(
    settings: StackSettings, budget: Budget, parent: pulumi.Resource | None = None
) -> AccountFacts:
    """Both look-ups; every problem found is raised at once, each naming its setting."""
    problems: list[str] = []
    try:
        quota = lambda_quota(parent)
        # Only a stack that reserves competes for the reservable part of the quota.
        elsewhere = reserved_elsewhere(settings, parent) if budget.reserved_concurrency_total else 0
        problems += quota_problems(settings, budget, quota, elsewhere)
    except SettingsError as error:
        problems += error.problems
        quota = 0
    try:
        # An existing database's version is looked up from the database itself.
        version = "" if settings.database.kind == "existing" else engine_version(settings, parent)
    except SettingsError as error:
        problems += error.problems
        version = ""
    if problems:
        raise SettingsError(problems)
    return AccountFacts(lambda_concurrency_quota=quota, engine_version=version)

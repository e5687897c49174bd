"""Facts about real AWS a first `pulumi up` depends on, each with its source.

The program runs offline under Pulumi mocks; `MockAccount` plays the account its look-ups see
(the same look-ups `pulumi preview` makes), so a refusal here is a refusal at preview.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pulumi_aws as aws
import pytest
from typer.testing import CliRunner

from infra import network
from infra.account import LAMBDA_CONCURRENCY_QUOTA_CODE
from infra.budget import (
    BOOTSTRAP_RESERVED_CONCURRENCY,
    LAMBDA_UNRESERVED_MINIMUM,
    BudgetError,
    compute_budget,
)
from infra.database import PROD_LOG_EXPORTS
from infra.offline import ACCOUNT, MockAccount, OfflineRun, run_offline, variant_settings
from infra.packaging import RUNTIME_GLIBC, PackagingError, build_package
from infra.settings import SettingsError, StackSettings, settings_from_mapping

ROOT = Path(__file__).resolve().parent.parent
VPCE = "aws:ec2/vpcEndpoint:VpcEndpoint"
INVOCATION = "aws:lambda/invocation:Invocation"


@cache
def stack(variant: str) -> OfflineRun:
    return run_offline(variant_settings(variant))


def _with(base: str, **changes: Any) -> StackSettings:
    settings = variant_settings(base)
    data = settings.model_dump(mode="json", exclude={"stack", "region"})
    for path, value in changes.items():
        node = data
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return settings_from_mapping(data, stack=base, region=settings.region)


def _source(module: ModuleType) -> str:
    """A provider module's text, docstrings included, whitespace normalised."""
    return " ".join(Path(str(module.__file__)).read_text().split())


# -- 1. engine version ----------------------------------------------------------------------------


def test_engine_version_is_a_major_prefix_the_provider_keeps() -> None:
    # pulumi-aws `rds.Instance.engine_version` docstring: "If `auto_minor_version_upgrade` is
    # enabled, you can provide a prefix of the version such as `8.0` (for `8.0.36`). The actual
    # engine version used is returned in the attribute `engine_version_actual`". The provider
    # keeps a configured prefix when the actual version starts with it plus "."
    # (terraform-provider-aws internal/service/rds/engine_version.go, compareActualEngineVersion),
    # so an automatic minor upgrade never shows up as a diff back to an older minor.
    doc = aws.rds.InstanceArgs.engine_version.__doc__ or ""
    assert "you can provide a prefix of the version" in doc
    assert "engine_version_actual" in doc
    assert StackSettings().database.engine_version == "16"
    for variant in ("dev", "prod"):
        run = stack(variant)
        instance = run.one("aws:rds/instance:Instance")
        assert instance.input("engineVersion") == "16"
        assert instance.input("autoMinorVersionUpgrade") is True


@pytest.mark.parametrize("pinned", ["16.4", "15.8", "16.4.1"])
def test_a_pinned_minor_is_refused_by_name(pinned: str) -> None:
    # AWS stopped creating new instances on old 16.x minors, and a pinned minor under automatic
    # minor upgrades asks for a downgrade on the next update (issue 11, item 1).
    with pytest.raises(SettingsError, match=r"database\.engine_version: .*major version only"):
        settings_from_mapping({"database": {"engine_version": pinned}}, stack="dev")


def test_preview_resolves_the_major_version_rds_offers() -> None:
    # pulumi-aws `rds.get_engine_version` docstring: `version` "can be a partial version
    # identifier ... unless the `latest` parameter is set to `true`", and without `include_all`
    # the "status will always be `available`".
    doc = aws.rds.get_engine_version.__doc__ or ""
    assert "partial version identifier" in doc
    run = run_offline(variant_settings("dev"))
    assert run.settings.database.engine_version == "16"
    with pytest.raises(SettingsError) as refused:
        run_offline(variant_settings("dev"), account=MockAccount(engine_versions={"17": "17.6"}))
    (problem,) = refused.value.problems
    assert problem.startswith("database.engine_version: RDS offers no available PostgreSQL 16")


# -- 2. reserved concurrency vs the account ----------------------------------------------------


def test_every_reservation_counts_the_bootstrap_included() -> None:
    # "Lambda requires at least 100 unreserved concurrency" / reserved concurrency counts every
    # function (https://docs.aws.amazon.com/lambda/latest/dg/configuring-concurrency.html).
    budget = compute_budget(reserving_dev())
    functions = sum(f.reserved_concurrency or 0 for f in budget.functions.values())
    assert budget.reserved_concurrency_total == functions + BOOTSTRAP_RESERVED_CONCURRENCY
    # Reserving like this fits an account with the default quota of 1,000.
    assert budget.reserved_concurrency_total <= 1000 - LAMBDA_UNRESERVED_MINIMUM
    figure = next(f for f in budget.figures if f.key == "lambda.reserved_concurrency_total")
    assert figure.value == budget.reserved_concurrency_total
    assert figure.limit == 1000 - LAMBDA_UNRESERVED_MINIMUM
    # The alternative 895 + 5 + 1 = 901 does not fit 900.
    with pytest.raises(BudgetError, match=r"bootstrap 1 = 901 exceeds the account quota 1000"):
        compute_budget(
            _with(
                "dev",
                functions__api__reserved_concurrency=895,
                functions__health__reserved_concurrency=5,
            )
        )


def reserving_dev() -> StackSettings:
    """The dev example with reservations (api 894, health 5: 900 with the bootstrap's 1)."""
    return _with(
        "dev", functions__api__reserved_concurrency=894, functions__health__reserved_concurrency=5
    )


def test_the_dev_example_reserves_nothing_and_deploys_on_a_new_account() -> None:
    # "New AWS accounts have reduced concurrency and memory quotas" and Lambda keeps 100 of the
    # quota unreserved (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html,
    # https://docs.aws.amazon.com/lambda/latest/dg/configuring-concurrency.html): at a quota of
    # 10 no reservation is possible, so the example leaves every function unreserved, the
    # bootstrap too (its advisory lock keeps two runs apart), and preview passes.
    settings = variant_settings("dev")
    budget = compute_budget(settings)
    assert all(f.reserved_concurrency is None for f in budget.functions.values())
    assert budget.bootstrap_reserved_concurrency is None
    assert budget.reserved_concurrency_total == 0
    run = run_offline(settings, account=MockAccount(lambda_concurrency_quota=10), preview=True)
    functions = run.of_type("aws:lambda/function:Function")
    assert {f.input("reservedConcurrentExecutions") for f in functions} == {-1}
    # The pooler is sized for what the account can run: every unreserved instance at once.
    assert budget.client_demand == settings.lambda_concurrency_quota
    assert budget.pgbouncer is not None
    assert budget.client_demand <= budget.pgbouncer.usable_client_capacity


def test_unreserved_functions_share_the_pool_left_by_reservations() -> None:
    # Reserved functions take their reservation out of the account's pool; the unreserved ones
    # share what is left (quota - reservations, the bootstrap's 1 included).
    settings = _with("dev", functions__health__reserved_concurrency=5)
    budget = compute_budget(settings)
    assert budget.reserved_concurrency_total == 5 + BOOTSTRAP_RESERVED_CONCURRENCY
    assert budget.client_demand == 5 + (1000 - 6)
    assert "unreserved api up to lambda_concurrency_quota 1000 - 6 reserved = 994" in (
        budget.client_demand_text
    )


def test_the_budget_command_shows_the_total() -> None:
    from slotguard.cli import app

    result = CliRunner().invoke(app, ["budget", "--stack", "dev", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert "lambda.reserved_concurrency_total" in result.output


def test_preview_reads_the_account_quota() -> None:
    # The look-up the program makes: Service Quotas' "Concurrent executions" of Lambda,
    # L-B99A9384 (https://docs.aws.amazon.com/general/latest/gr/lambda-service.html); the data
    # source answers the default when the quota was never raised (terraform-provider-aws
    # service_quota_data_source.go: "A Service Quota will always have a default value").
    doc = aws.servicequotas.get_service_quota.__doc__ or ""
    assert "quota_code" in doc
    run = run_offline(reserving_dev(), account=MockAccount(lambda_concurrency_quota=1000))
    assert run.budget.reserved_concurrency_total == 900
    assert LAMBDA_CONCURRENCY_QUOTA_CODE == "L-B99A9384"


@pytest.mark.parametrize(
    ("quota", "advice"),
    [(10, "no reservation is possible"), (950, "lower functions.<name>.reserved_concurrency")],
)
def test_preview_refuses_reservations_the_account_cannot_take(quota: int, advice: str) -> None:
    # New accounts often start at 10 concurrent executions (issue 11, item 2).
    with pytest.raises(SettingsError) as refused:
        run_offline(reserving_dev(), account=MockAccount(lambda_concurrency_quota=quota))
    (problem,) = refused.value.problems
    assert problem.startswith("functions.reserved_concurrency: the stack reserves api 894")
    assert (
        f"bootstrap 1 = 900, but the account's concurrent executions quota in eu-west-1 is {quota}"
        in problem
    )
    assert advice in problem


def test_two_stacks_in_one_region_share_the_quota() -> None:
    # One account's concurrent executions quota covers every function of the region, and a
    # reservation is taken out of it for all (AWS What's New, 2017-11-30, "Set concurrency
    # limits on individual AWS Lambda functions"): with prod's 600 + 5 + 1 reserved, dev's
    # 894 + 5 + 1 no longer fits 1,000 - 100, though each alone does.
    prod = {"slotguard-prod-api": 600, "slotguard-prod-health": 5, "slotguard-prod-bootstrap": 1}
    account = MockAccount(other_functions={**prod, "someone-else": -1})
    with pytest.raises(SettingsError) as refused:
        run_offline(reserving_dev(), account=account)
    (problem,) = refused.value.problems
    assert "other functions there reserve 606" in problem
    assert "(294 reservable)" in problem
    # The dev example reserves nothing, so it deploys beside prod.
    assert run_offline(variant_settings("dev"), account=account).resources


def test_an_unreadable_quota_names_the_permission() -> None:
    denied = "AccessDeniedException: not authorized to perform: servicequotas:GetServiceQuota"
    with pytest.raises(SettingsError) as refused:
        run_offline(variant_settings("dev"), account=MockAccount(quota_error=denied))
    (problem,) = refused.value.problems
    assert problem.startswith("lambda_concurrency_quota: could not read")
    assert problem.endswith("needs servicequotas:GetServiceQuota")


# -- 3. existing-VPC mode -------------------------------------------------------------------------


def _s3_tables(run: OfflineRun) -> list[str]:
    return list(run.one(VPCE, "-vpce-s3").input("routeTableIds"))


def test_subnet_without_association_routes_through_the_main_table() -> None:
    # "A subnet can only be associated with one route table at a time ... If you don't explicitly
    # associate a subnet with a particular route table, the subnet is implicitly associated with
    # the main route table" (https://docs.aws.amazon.com/vpc/latest/userguide/subnet-route-tables.html).
    settings = variant_settings("dev-existing")
    implicit = settings.network.subnet_ids[0]
    account = MockAccount(implicit_subnets=frozenset({implicit}))
    run = run_offline(settings, account=account)
    tables = _s3_tables(run)
    assert account.main_route_table in tables
    # one table for each subnet: the main one, and the other subnet's explicit one
    assert len(tables) == len(set(tables)) == 2


def test_endpoints_the_vpc_has_are_reused_not_duplicated() -> None:
    # A second interface endpoint with private DNS for the same service in one VPC is refused
    # ("conflicting DNS domain"; https://docs.aws.amazon.com/vpc/latest/privatelink/manage-dns-names.html),
    # and a route table holds one route per prefix list.
    settings = variant_settings("dev-existing")
    account = MockAccount(existing_endpoints={"secretsmanager": "vpce-0aaa", "s3": "vpce-0bbb"})
    run = run_offline(settings, account=account)
    created = {r.name for r in run.of_type(VPCE)}
    assert not any(name.endswith(("-vpce-secretsmanager", "-vpce-s3")) for name in created)
    assert any(name.endswith("-vpce-logs") for name in created)
    ingress = run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    admitted = [r for r in ingress if r.name.endswith("-secretsmanager-0")]
    assert {r.input("fromPort") for r in admitted} == {443}
    assert len(admitted) == 3  # functions, bootstrap and pooler tasks
    # The existing S3 endpoint serves the stack's route tables too.
    associations = run.of_type(
        "aws:ec2/vpcEndpointRouteTableAssociation:VpcEndpointRouteTableAssociation"
    )
    assert {a.input("vpcEndpointId") for a in associations} == {"vpce-0bbb"}
    assert len(associations) == 2


def test_a_new_vpc_takes_the_azs_where_every_endpoint_is_offered() -> None:
    # An interface endpoint service is offered in the AZs DescribeVpcEndpointServices lists
    # (ServiceDetail.AvailabilityZones,
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ServiceDetail.html); the
    # provider's `ec2.get_vpc_endpoint_service` answers them as `availability_zones`.
    settings = variant_settings("dev")
    region = settings.region
    account = MockAccount(endpoint_service_zones={"logs": "bcd"})
    run = run_offline(settings, account=account)
    subnets = run.of_type("aws:ec2/subnet:Subnet")
    assert sorted(s.input("availabilityZone") for s in subnets) == [f"{region}b", f"{region}c"]
    # Where fewer AZs than asked offer every endpoint, preview refuses naming the setting.
    with pytest.raises(SettingsError) as refused:
        network.usable_zones(
            [f"{region}a", f"{region}b"], {"logs": {f"{region}b"}, "ecr.api": {"x"}}, 2
        )
    (problem,) = refused.value.problems
    assert problem.startswith("network.availability_zones:")
    assert f"logs is not offered in {region}a" in problem


@pytest.mark.parametrize(
    ("account", "attribute"),
    [
        (MockAccount(vpc_dns_support=False), "enableDnsSupport"),
        (MockAccount(vpc_dns_hostnames=False), "enableDnsHostnames"),
    ],
)
def test_vpc_dns_attributes_are_checked(account: MockAccount, attribute: str) -> None:
    # Private DNS for interface endpoints needs both enableDnsSupport and enableDnsHostnames
    # (https://docs.aws.amazon.com/vpc/latest/privatelink/privatelink-access-aws-services.html).
    with pytest.raises(SettingsError) as refused:
        run_offline(variant_settings("dev-existing"), account=account)
    assert any(p.startswith("network.vpc_id:") and attribute in p for p in refused.value.problems)


# -- 4. python3.11 on arm64 ------------------------------------------------------------------------


def _psycopg_wheels() -> list[str]:
    lock = (ROOT / "uv.lock").read_text()
    block = lock.split('name = "psycopg-binary"\nversion', 1)[1].split("[[package]]", 1)[0]
    return re.findall(r"psycopg_binary-[^\"/]+\.whl", block)


def test_python311_on_arm64_is_refused_by_name() -> None:
    # psycopg-binary publishes aarch64 Linux wheels only for manylinux_2_28 (the file list uv.lock
    # records from PyPI; `pip download --platform manylinux2014_aarch64 --python-version 3.11
    # psycopg-binary` finds none), and python3.11 runs on Amazon Linux 2, glibc 2.26
    # (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html).
    cp311_arm = [
        w for w in _psycopg_wheels() if "cp311" in w and "manylinux" in w and "aarch64" in w
    ]
    assert cp311_arm
    glibc = [tuple(map(int, m)) for w in cp311_arm for m in re.findall(r"manylinux_(\d+)_(\d+)", w)]
    assert min(glibc) > tuple(map(int, RUNTIME_GLIBC["python3.11"].split("_"))) == (2, 17)
    assert min(glibc) > (2, 26)
    with pytest.raises(SettingsError, match=r"functions\.api: runtime python3\.11 cannot run"):
        settings_from_mapping(
            {"functions": {"api": {"handler": "functions.api.handler", "runtime": "python3.11"}}},
            stack="dev",
        )
    with pytest.raises(PackagingError, match="cannot be packaged for arm64"):
        build_package(runtime="python3.11", architecture="arm64")
    x86 = {"handler": "functions.api.handler", "runtime": "python3.11", "architecture": "x86_64"}
    assert settings_from_mapping({"functions": {"api": x86}}, stack="dev")


# -- 13, 14. bootstrap triggers and explicit dependencies ----------------------------------------


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_bootstrap_reruns_for_a_new_instance_or_new_secrets(variant: str) -> None:
    # pulumi-aws `lambda_.Invocation.triggers`: "Map of arbitrary keys and values that, when
    # changed, will trigger a re-invocation". A replaced instance gets a new DbiResourceId
    # (`resource_id`); a new password is a new secret version (`version_id`).
    assert "when changed, will trigger a re-invocation" in _source(aws.lambda_.invocation)
    run = stack(variant)
    invocation = run.one(INVOCATION, "-bootstrap-run")
    triggers = invocation.input("triggers")
    instance = run.one("aws:rds/instance:Instance")
    assert triggers["database"] == instance.outputs["resourceId"] != ""
    versions = run.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    ours = [v for v in versions if invocation.parent and v.parent == invocation.parent]
    assert {triggers[k] for k in triggers if k.startswith("secret-")} == {
        v.outputs["versionId"] for v in ours
    }
    assert set(invocation.property_dependencies["triggers"]) >= {instance.urn} | {
        v.urn for v in ours
    }


@pytest.mark.parametrize("variant", ["dev", "dev-existing", "dev-existing-nat", "prod"])
def test_bootstrap_and_functions_wait_for_endpoints_and_rules(variant: str) -> None:
    run = stack(variant)
    needed = [
        r
        for r in run.resources
        if r.type
        in (
            VPCE,
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
        )
    ]
    assert needed
    waiting = [run.one(INVOCATION, "-bootstrap-run"), *run.of_type("aws:lambda/function:Function")]
    for resource in waiting:
        missing = [n.name for n in needed if n.urn not in resource.dependencies]
        assert not missing, (resource.name, missing)


def test_the_task_definition_waits_for_the_secret_values() -> None:
    run = stack("dev")
    task = run.one("aws:ecs/taskDefinition:TaskDefinition")
    # The task reads the verifier's own secret and the pooler's (TLS) secret, never the role's
    # full secret: it waits for both values, and has no business with the password's.
    versions = {v.name: v for v in run.of_type("aws:secretsmanager/secretVersion:SecretVersion")}
    assert run.depends_on(task, versions["slotguard-dev-app-verifier-secret-version"])
    assert run.depends_on(task, versions["slotguard-dev-secret-version"])
    assert not run.depends_on(task, versions["slotguard-dev-app-secret-version"])


# -- 17, 21. endpoint policies and only the endpoints a pooler kind needs ------------------------


def _policy(record: Any) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(record.input("policy"))
    return policy


@pytest.mark.parametrize("variant", ["dev", "prod", "dev-existing"])
def test_endpoint_policies_are_scoped(variant: str) -> None:
    # Without a policy an endpoint allows full access
    # (https://docs.aws.amazon.com/vpc/latest/privatelink/vpc-endpoints-access.html). ECR needs
    # only `s3:GetObject` on `arn:aws:s3:::prod-<region>-starport-layer-bucket/*` through the S3
    # gateway ("Minimum Amazon S3 bucket permissions for Amazon ECR",
    # https://docs.aws.amazon.com/AmazonECR/latest/userguide/vpc-endpoints.html).
    run = stack(variant)
    region = run.settings.region
    for endpoint in run.of_type(VPCE):
        (statement,) = _policy(endpoint)["Statement"]
        actions = statement["Action"]
        assert actions, endpoint.name
        assert all(":" in a and not a.endswith(":*") for a in actions), endpoint.name
        if endpoint.name.endswith("-vpce-s3"):
            assert actions == ["s3:GetObject"]
            assert statement["Resource"] == [f"arn:*:s3:::prod-{region}-starport-layer-bucket/*"]
        if endpoint.name.endswith("-vpce-secretsmanager"):
            assert all(
                r.split(":secret:")[1] in ("slotguard/*", "rds!db-*") for r in statement["Resource"]
            )
            assert set(actions) == {
                "secretsmanager:GetSecretValue",
                "secretsmanager:DescribeSecret",
            }


@pytest.mark.parametrize("variant", ["dev", "prod", "dev-existing"])
def test_endpoint_policies_admit_only_the_stacks_account(variant: str) -> None:
    # `Principal: *` alone admits any account's credentials through the endpoint. The policy
    # language's `aws:PrincipalAccount` (the caller's account) and `aws:ResourceAccount` (the
    # account owning the resource) limit it to the stack's account (AWS global condition context
    # keys, https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html;
    # https://docs.aws.amazon.com/vpc/latest/privatelink/vpc-endpoints-access.html). The S3
    # gateway's only bucket is ECR's AWS-owned layer bucket, reached with URLs presigned by an
    # ECR account (aws-samples/data-perimeter-policy-examples vpc_endpoint_policies/README.md,
    # "Creation of containers with Amazon ECR images"): no account condition fits it.
    run = stack(variant)
    interface = [e for e in run.of_type(VPCE) if not e.name.endswith("-vpce-s3")]
    assert interface
    for endpoint in interface:
        (statement,) = _policy(endpoint)["Statement"]
        assert statement["Condition"] == {
            "StringEquals": {"aws:PrincipalAccount": ACCOUNT, "aws:ResourceAccount": ACCOUNT}
        }, endpoint.name
        if endpoint.name.endswith("-vpce-secretsmanager"):
            assert all(f":{ACCOUNT}:secret:" in r for r in statement["Resource"])
    for endpoint in run.of_type(VPCE):
        if endpoint.name.endswith("-vpce-s3"):
            (statement,) = _policy(endpoint)["Statement"]
            assert "Condition" not in statement


@pytest.mark.parametrize(
    ("variant", "services", "s3"),
    [
        ("dev", {"secretsmanager", "logs", "monitoring", "ecr.api", "ecr.dkr"}, True),
        ("dev-rds-proxy", {"secretsmanager"}, False),
        ("prod", {"secretsmanager"}, False),
    ],
)
def test_only_the_endpoints_the_pooler_kind_uses(
    variant: str, services: set[str], s3: bool
) -> None:
    # Functions read only their secrets (Lambda ships their logs; metrics leave as log lines);
    # only PgBouncer's Fargate tasks pull images, write awslogs and call PutMetricData.
    run = stack(variant)
    created = {
        r.input("serviceName").split(f".{run.settings.region}.", 1)[1]
        for r in run.of_type(VPCE)
        if r.input("vpcEndpointType") == "Interface"
    }
    assert created == services
    assert any(r.name.endswith("-vpce-s3") for r in run.of_type(VPCE)) is s3


def test_readme_cost_table_counts_the_endpoints_of_each_kind() -> None:
    readme = (ROOT / "README.md").read_text()
    for kind, label in (("pgbouncer", "PgBouncer"), ("rds-proxy", "RDS Proxy")):
        count = len(network.POOLER_ENDPOINTS[kind])
        match = re.search(
            rf"\| {label}: {count} interface endpoints? \([^)]*\) × 2 AZs × \$0\.01 × 730 "
            rf"\(3 AZs: \$([0-9.]+)\) \| \$([0-9.]+) \|",
            readme,
        )
        assert match is not None, label
        assert float(match.group(2)) == pytest.approx(count * 2 * 0.01 * 730)
        assert float(match.group(1)) == pytest.approx(count * 3 * 0.01 * 730)


# -- 18. default security group, log exports -------------------------------------------------------


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_the_new_vpc_default_security_group_has_no_rules(variant: str) -> None:
    # pulumi-aws `ec2.DefaultSecurityGroup`: adopting it "immediately removes all ingress and
    # egress rules"; only the rules given are created (none). Security Hub control EC2.2: "VPC
    # default security groups should not allow inbound or outbound traffic"
    # (https://docs.aws.amazon.com/securityhub/latest/userguide/ec2-controls.html#ec2-2).
    doc = _source(aws.ec2.default_security_group)
    assert "immediately removes all ingress and egress rules" in doc
    run = stack(variant)
    group = run.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert not group.input("ingress")
    assert not group.input("egress")
    assert group.property_dependencies["vpcId"] == (run.one("aws:ec2/vpc:Vpc").urn,)


def test_an_existing_vpc_default_group_is_left_to_its_owner() -> None:
    assert not stack("dev-existing").of_type("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")


def test_prod_exports_the_postgres_logs() -> None:
    # RDS for PostgreSQL publishes the `postgresql` and `upgrade` logs to CloudWatch Logs
    # (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_LogAccess.Concepts.PostgreSQL.html).
    assert PROD_LOG_EXPORTS == ("postgresql", "upgrade")
    prod = stack("prod").one("aws:rds/instance:Instance")
    assert prod.input("enabledCloudwatchLogsExports") == ["postgresql", "upgrade"]
    assert not stack("dev").one("aws:rds/instance:Instance").input("enabledCloudwatchLogsExports")


# -- 20. the final snapshot's name -----------------------------------------------------------------


def test_prod_final_snapshot_name_is_unique_per_instance() -> None:
    # A DB snapshot identifier must be unique in the account and region (CreateDBSnapshot /
    # DeleteDBInstance `FinalDBSnapshotIdentifier`,
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DeleteDBInstance.html): a
    # fixed name collides on the second teardown. The suffix is generated per stack lifetime.
    run = stack("prod")
    instance = run.one("aws:rds/instance:Instance")
    suffix = run.one("random:index/randomId:RandomId")
    name = instance.input("finalSnapshotIdentifier")
    assert name == f"slotguard-prod-final-{suffix.outputs['hex']}"
    assert re.fullmatch(r"slotguard-prod-final-[0-9a-f]{8}", name)
    # 1-255 letters, digits or hyphens; no trailing hyphen, no two in a row.
    assert len(name) <= 255
    assert not name.endswith("-")
    assert "--" not in name
    assert stack("dev").one("aws:rds/instance:Instance").input("skipFinalSnapshot") is True


# -- 8. max_connections waits for a reboot: the bootstrap's re-run path ---------------------------


def test_outputs_carry_the_bootstrap_rerun_after_a_reboot() -> None:
    # Static parameters apply at the next reboot ("pending-reboot",
    # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_WorkingWithParamGroups.html);
    # the bootstrap must run again afterwards to raise app_user's limit (README, "Changing
    # max_connections"); the outputs give the function and its event.
    run = stack("dev")
    bootstrap = run.one("aws:lambda/function:Function", "-bootstrap-function")
    configured = bootstrap.input("environment")["variables"]["BOOTSTRAP_CONFIG"]
    assert json.loads(run.outputs["bootstrap_event"]) == json.loads(configured)
    assert run.outputs["bootstrap_function"] == "slotguard-dev-bootstrap"
    assert run.outputs["app_user_connection_limit"] == run.budget.pooler_ceiling
    readme = (ROOT / "README.md").read_text()
    assert "### Changing `max_connections`" in readme
    assert "pulumi stack output bootstrap_event" in readme


def test_preview_alone_refuses_what_the_account_cannot_take() -> None:
    # Provider look-ups run during `pulumi preview` as during an update (issue 12): the same
    # refusal with the engine in preview mode.
    with pytest.raises(SettingsError, match=r"functions\.reserved_concurrency"):
        run_offline(reserving_dev(), account=MockAccount(lambda_concurrency_quota=10), preview=True)
    assert run_offline(variant_settings("dev-existing"), preview=True).resources

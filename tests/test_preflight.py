"""`slotguard preflight`: each check's pass and its failure, with the message the user sees.

EC2 and STS run against moto (it models them); Lambda's account settings and RDS's engine and
orderable-instance catalogues, which moto does not model for PostgreSQL, are botocore Stubber
responses shaped as the API reference documents them (tests/aws_stubs.py cites each page).
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from infra.budget import compute_budget
from infra.packaging import PackagingError
from infra.settings import SettingsError, StackSettings, settings_from_mapping
from slotguard.aws.checks import Check, Status, run_checks
from slotguard.aws.preflight import Preflight, match_engine_version
from slotguard.aws.tools import PULUMI_MIN_VERSION, Tools, buildx_platforms
from tests.aws_stubs import (
    REGION,
    account_settings,
    aws_client,
    engine_versions,
    function_concurrency,
    orderable,
    stubbed,
)

ROOT = Path(__file__).resolve().parent.parent


def settings(raw: dict[str, Any] | None = None, stack: str = "t") -> StackSettings:
    return settings_from_mapping(raw or {}, stack=stack, region=REGION)


def tools(
    commands: dict[str, subprocess.CompletedProcess[str]] | None = None,
    on_path: tuple[str, ...] = ("pulumi", "docker"),
) -> Tools:
    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return (commands or {})[" ".join(command)]

    return Tools(run=run, which=lambda name: f"/usr/bin/{name}" if name in on_path else None)


def done(stdout: str, code: int = 0, stderr: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], code, stdout, stderr)


def preflight(
    s: StackSettings,
    clients: dict[str, Any] | None = None,
    *,
    region: str | None = REGION,
    **kwargs: Any,
) -> Preflight:
    made = dict(clients or {})

    def client(name: str) -> Any:
        if name not in made:
            made[name] = aws_client(name, region or REGION)
        return made[name]

    kwargs.setdefault("tools", tools())
    return Preflight(settings=s, budget=compute_budget(s), client=client, region=region, **kwargs)


def load_dev() -> StackSettings:
    from infra.settings import load_stack

    return load_stack("dev", ROOT)


def one(checks: list[Check], name: str) -> Check:
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, [c.name for c in checks]
    return found[0]


# -- credentials and region --------------------------------------------------------------------


def test_credentials_pass_with_the_caller_identity(aws: None) -> None:
    check = one(list(preflight(settings()).credentials()), "aws credentials")
    assert check.status is Status.PASS
    assert "account 123456789012" in check.found
    assert REGION in check.found


def test_no_region_fails_naming_the_config_key(aws: None) -> None:
    check = one(list(preflight(settings(), region=None).credentials()), "aws region")
    assert check.failed
    assert "pulumi config set aws:region" in check.change


def test_no_credentials_fail_with_how_to_configure_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    sts = boto3.Session(region_name=REGION).client("sts")
    check = one(list(preflight(settings(), {"sts": sts}).credentials()), "aws credentials")
    assert check.failed
    assert "aws configure" in check.change


# -- the Pulumi CLI ----------------------------------------------------------------------------


def test_pulumi_minimum_is_the_sdk_lower_bound_the_project_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bound = next(d for d in project["dependencies"] if d.startswith("pulumi>="))
    low = bound.removeprefix("pulumi>=").split(",")[0]
    assert tuple(int(p) for p in ([*low.split("."), "0"])[:3]) == PULUMI_MIN_VERSION


def test_pulumi_new_enough_passes() -> None:
    t = tools({"pulumi version": done("v3.205.0\n")})
    check = one(list(preflight(settings(), tools=t).pulumi_cli()), "pulumi cli")
    assert check.status is Status.PASS
    assert "3.205.0" in check.found


def test_pulumi_too_old_fails_with_the_upgrade() -> None:
    t = tools({"pulumi version": done("v3.99.1\n")})
    check = one(list(preflight(settings(), tools=t).pulumi_cli()), "pulumi cli")
    assert check.failed
    assert "3.99.1" in check.found
    assert "3.130.0 or later" in check.change


def test_pulumi_missing_fails_with_the_install_page() -> None:
    check = one(list(preflight(settings(), tools=tools(on_path=())).pulumi_cli()), "pulumi cli")
    assert check.failed
    assert "not on PATH" in check.found
    assert "pulumi.com/docs/install" in check.change


# -- Lambda concurrency ------------------------------------------------------------------------


def lambda_stub(
    quota: int, unreserved: int, existing: dict[str, int] | None = None, stack: str = "t"
) -> Any:
    """Account settings, then one GetFunctionConcurrency per function of the stack."""
    client, stub = stubbed("lambda")
    stub.add_response("get_account_settings", account_settings(quota, unreserved), {})
    for key in ("api", "health", "bootstrap"):
        name = f"slotguard-{stack}-{key}"
        if existing is not None and name in existing:
            stub.add_response(
                "get_function_concurrency",
                function_concurrency(existing[name]),
                {"FunctionName": name},
            )
        else:
            # A function that does not exist yet (ResourceNotFoundException, HTTP 404).
            stub.add_client_error(
                "get_function_concurrency",
                "ResourceNotFoundException",
                f"Function not found: {name}",
                404,
                expected_params={"FunctionName": name},
            )
    stub.activate()
    return client


def test_stack_reservations_leaving_100_unreserved_pass() -> None:
    # defaults: api 50 + health 5 + bootstrap 1 = 56; 156 unreserved leaves exactly 100
    s = settings()
    assert compute_budget(s).reserved_concurrency_total == 56
    checks = list(preflight(s, {"lambda": lambda_stub(1000, 156)}).lambda_concurrency())
    check = one(checks, "lambda unreserved concurrency")
    assert check.status is Status.PASS, check
    assert "leaves 100" in check.found
    assert one(checks, "lambda_concurrency_quota").status is Status.PASS


def test_stack_reservations_leaving_99_fail_naming_the_setting() -> None:
    checks = list(preflight(settings(), {"lambda": lambda_stub(1000, 155)}).lambda_concurrency())
    check = one(checks, "lambda unreserved concurrency")
    assert check.failed
    assert "leaves 99" in check.found
    assert "reserved_concurrency by 1" in check.change
    assert "Service Quotas" in check.change


def test_reservations_the_stack_already_holds_count_as_its_own() -> None:
    # A redeploy: the stack's 56 are already reserved, so only 100 are unreserved now.
    existing = {"slotguard-t-api": 50, "slotguard-t-health": 5, "slotguard-t-bootstrap": 1}
    checks = list(
        preflight(settings(), {"lambda": lambda_stub(1000, 100, existing)}).lambda_concurrency()
    )
    check = one(checks, "lambda unreserved concurrency")
    assert check.status is Status.PASS
    assert "56 of it already in place" in check.found


def test_a_quota_setting_above_the_account_quota_fails() -> None:
    s = settings({"lambda_concurrency_quota": 3000})
    checks = list(preflight(s, {"lambda": lambda_stub(1000, 1000)}).lambda_concurrency())
    check = one(checks, "lambda_concurrency_quota")
    assert check.failed
    assert "set lambda_concurrency_quota: 1000" in check.change


def test_other_stacks_reservations_in_the_region_count() -> None:
    # UnreservedConcurrentExecutions is the quota less every reservation in the region, other
    # stacks' included (https://docs.aws.amazon.com/lambda/latest/api/API_GetAccountSettings.html):
    # a second stack reserving 900 of 1,000 leaves this one's 56 without Lambda's 100.
    checks = list(preflight(settings(), {"lambda": lambda_stub(1000, 100)}).lambda_concurrency())
    check = one(checks, "lambda unreserved concurrency")
    assert check.failed
    assert "900 reserved by other functions" in check.found
    assert "reserved_concurrency: null" in check.change


def test_an_unreserved_stack_passes_on_a_new_account() -> None:
    # "New AWS accounts have reduced concurrency and memory quotas"
    # (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html): at 10 nothing can
    # be reserved, and a stack that reserves nothing needs nothing of the quota.
    s = load_dev()
    assert compute_budget(s).reserved_concurrency_total == 0
    checks = list(preflight(s, {"lambda": lambda_stub(10, 10, stack="dev")}).lambda_concurrency())
    check = one(checks, "lambda unreserved concurrency")
    assert check.status is Status.PASS, check
    assert "reserves nothing" in check.found
    # The setting (1,000) over-sizes the pooler for an account of 10: not a failure.
    assert one(checks, "lambda_concurrency_quota").status is Status.PASS


def test_an_api_error_becomes_a_failed_row_not_a_traceback(aws: None) -> None:
    client, stub = stubbed("lambda")
    stub.add_client_error("get_account_settings", "AccessDeniedException", "not allowed", 403)
    stub.activate()
    p = preflight(settings(), {"lambda": client})
    checks = run_checks(
        [("lambda concurrency", p.lambda_concurrency), ("rds proxy engine", p.rds_proxy_engine)]
    )
    assert one(checks, "rds proxy engine").status is Status.SKIP  # the others still ran
    check = one(checks, "lambda concurrency")
    assert check.failed
    assert "AccessDeniedException" in check.found


# -- RDS ---------------------------------------------------------------------------------------


def rds_stub(
    versions: dict[str, Any], options: dict[str, Any] | None = None, version: str = "16.4"
) -> Any:
    client, stub = stubbed("rds")
    stub.add_response("describe_db_engine_versions", versions, {"Engine": "postgres"})
    if options is not None:
        stub.add_response(
            "describe_orderable_db_instance_options",
            options,
            {"Engine": "postgres", "EngineVersion": version, "DBInstanceClass": "db.t4g.micro"},
        )
    stub.activate()
    return client


ZONES = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]


def test_match_engine_version_takes_a_full_version_or_a_major_prefix() -> None:
    offered = ["16.3", "16.4", "16.10", "17.2"]
    assert match_engine_version("16.4", offered) == "16.4"
    assert match_engine_version("16", offered) == "16.10"  # numeric, not text, order
    assert match_engine_version("16.2", offered) is None
    assert match_engine_version("15", offered) is None


def test_engine_and_class_offered_in_the_stack_azs_pass(aws: None) -> None:
    rds = rds_stub(engine_versions("16.3", "16.4"), orderable("db.t4g.micro", "16.4", ZONES))
    checks = list(preflight(settings(), {"rds": rds}).rds_engine())
    assert one(checks, "rds engine version").status is Status.PASS
    assert one(checks, "rds instance class").status is Status.PASS
    assert one(checks, "rds multi-az").status is Status.SKIP


def test_a_major_version_prefix_resolves_to_the_newest_offered(aws: None) -> None:
    s = settings()
    # `database.engine_version: "16"` as a major-version prefix.
    s = s.model_copy(update={"database": s.database.model_copy(update={"engine_version": "16"})})
    rds = rds_stub(
        engine_versions("16.3", "16.8", "17.2"),
        orderable("db.t4g.micro", "16.8", ZONES),
        version="16.8",
    )
    checks = list(preflight(s, {"rds": rds}).rds_engine())
    assert (
        one(checks, "rds engine version").found == "postgres 16 -> 16.8 offered for new instances"
    )


def test_an_engine_version_not_offered_fails_listing_what_is(aws: None) -> None:
    # The stack's default is the major version 16; this region offers only 15 and 17.
    rds = rds_stub(engine_versions("15.10", "17.2"))
    check = one(list(preflight(settings(), {"rds": rds}).rds_engine()), "rds engine version")
    assert check.failed
    assert "postgres 16 is not offered" in check.found
    assert "offered majors: 15, 17" in check.found
    assert "database.engine_version" in check.change


def test_a_deprecated_version_is_not_offered(aws: None) -> None:
    rds = rds_stub(engine_versions("16.4", status="deprecated"))
    check = one(list(preflight(settings(), {"rds": rds}).rds_engine()), "rds engine version")
    assert check.failed


def test_an_instance_class_not_orderable_fails(aws: None) -> None:
    rds = rds_stub(engine_versions("16.4"), {"OrderableDBInstanceOptions": []})
    check = one(list(preflight(settings(), {"rds": rds}).rds_engine()), "rds instance class")
    assert check.failed
    assert "database.instance_class" in check.change


def test_an_instance_class_missing_from_a_stack_az_fails(aws: None) -> None:
    # The stack's two AZs are eu-west-1a and eu-west-1b (moto's first two available).
    rds = rds_stub(engine_versions("16.4"), orderable("db.t4g.micro", "16.4", ["eu-west-1a"]))
    check = one(list(preflight(settings(), {"rds": rds}).rds_engine()), "rds instance class")
    assert check.failed
    assert "not offered in eu-west-1b" in check.found


def test_multi_az_asked_and_capable_passes_and_incapable_fails(aws: None) -> None:
    s = settings({"database": {"multi_az": True}})
    rds = rds_stub(engine_versions("16.4"), orderable("db.t4g.micro", "16.4", ZONES))
    assert one(list(preflight(s, {"rds": rds}).rds_engine()), "rds multi-az").status is (
        Status.PASS
    )
    rds = rds_stub(
        engine_versions("16.4"), orderable("db.t4g.micro", "16.4", ZONES, multi_az=False)
    )
    check = one(list(preflight(s, {"rds": rds}).rds_engine()), "rds multi-az")
    assert check.failed
    assert "database.multi_az: false" in check.change


def test_rds_proxy_supports_the_engine_major() -> None:
    s = settings({"pooler": "rds-proxy"})
    check = one(list(preflight(s).rds_proxy_engine()), "rds proxy engine")
    assert check.status is Status.PASS
    assert one(list(preflight(settings()).rds_proxy_engine()), "rds proxy engine").status is (
        Status.SKIP
    )


def test_rds_proxy_majors_come_from_one_source_the_settings_enforce() -> None:
    # "Supported Regions and DB engines for Amazon RDS Proxy" (RDS for PostgreSQL: 13 to 17,
    # all available versions of each). The settings accept engine majors up to 19, so a proxy
    # stack on 18 is refused when settings load, with the same set preflight reads.
    for major in (13, 17):
        settings({"pooler": "rds-proxy", "database": {"engine_version": str(major)}})
    with pytest.raises(SettingsError) as error:
        settings({"pooler": "rds-proxy", "database": {"engine_version": "18"}})
    assert "RDS Proxy supports (13, 14, 15, 16, 17" in str(error.value)
    assert "pooler.kind: pgbouncer" in str(error.value)
    settings({"database": {"engine_version": "18"}})  # PgBouncer has no such limit


def test_rds_proxy_refuses_a_major_it_does_not_list() -> None:
    s = settings({"pooler": "rds-proxy"})
    s = s.model_copy(update={"database": s.database.model_copy(update={"engine_version": "12"})})
    check = one(list(preflight(s).rds_proxy_engine()), "rds proxy engine")
    assert check.failed
    assert "pooler.kind: pgbouncer" in check.change
    assert "Concepts.RDS_Fea_Regions_DB-eng.Feature.RDSProxy" in check.found


# -- Fargate -----------------------------------------------------------------------------------


def test_fargate_task_size_and_arm64_pass(aws: None) -> None:
    checks = list(preflight(settings()).fargate())
    assert one(checks, "fargate task size").status is Status.PASS
    assert one(checks, "fargate arm64").status is Status.PASS


def test_fargate_task_size_not_in_the_table_fails(aws: None) -> None:
    # 256 CPU units pair with 512, 1024 or 2048 MiB only (Fargate task size table:
    # https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size)
    s = settings({"pooler": {"kind": "pgbouncer", "pgbouncer": {"cpu": 256, "memory_mb": 4096}}})
    check = one(list(preflight(s).fargate()), "fargate task size")
    assert check.failed
    assert check.change == "change pooler.pgbouncer.memory_mb"


def test_fargate_in_a_region_restricted_to_some_az_ids(aws: None) -> None:
    # us-west-1: Linux on Fargate only in usw1-az1 and usw1-az3
    # (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/AWS_Fargate-Regions.html).
    ec2, stub = stubbed("ec2", "us-west-1")
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeAvailabilityZones.html
    stub.add_response(
        "describe_availability_zones",
        {
            "AvailabilityZones": [
                {"ZoneName": "us-west-1a", "ZoneId": "usw1-az3", "State": "available"},
                {"ZoneName": "us-west-1c", "ZoneId": "usw1-az2", "State": "available"},
            ]
        },
        {"Filters": [{"Name": "state", "Values": ["available"]}]},
    )
    # Every endpoint service offered in both AZs (the new VPC's AZ choice looks them up).
    stub.add_response(
        "describe_vpc_endpoint_services",
        {
            "ServiceDetails": [
                {
                    "ServiceName": f"com.amazonaws.us-west-1.{service}",
                    "AvailabilityZones": ["us-west-1a", "us-west-1c"],
                }
                for service in ("secretsmanager", "logs", "monitoring", "ecr.api", "ecr.dkr")
            ]
        },
    )
    stub.activate()
    s = settings_from_mapping({}, stack="t", region="us-west-1")
    check = one(list(preflight(s, {"ec2": ec2}, region="us-west-1").fargate()), "fargate arm64")
    assert check.failed
    assert "us-west-1c (usw1-az2)" in check.found
    moto_zones = one(list(preflight(s, region="us-west-1").fargate()), "fargate arm64")
    assert moto_zones.status is Status.PASS  # moto's us-west-1 AZs are usw1-az3 and usw1-az1


def test_fargate_checks_skip_for_rds_proxy() -> None:
    checks = list(preflight(settings({"pooler": "rds-proxy"})).fargate())
    assert [c.status for c in checks] == [Status.SKIP]


# -- an existing VPC ---------------------------------------------------------------------------


def vpc(*, zones: tuple[str, ...] = ("eu-west-1a", "eu-west-1b"), dns: bool = True) -> Any:
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc_id = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    if dns:
        ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.9.{i}.0/24", AvailabilityZone=z)["Subnet"][
            "SubnetId"
        ]
        for i, z in enumerate(zones)
    ]
    return ec2, vpc_id, subnets


def existing(vpc_id: str, subnets: list[str], endpoints: bool = True) -> StackSettings:
    return settings(
        {
            "network": {
                "mode": "existing",
                "vpc_id": vpc_id,
                "subnet_ids": subnets,
                "vpc_endpoints": endpoints,
            }
        }
    )


def explicit_table(ec2: Any, vpc_id: str, subnets: list[str]) -> str:
    table = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    for subnet in subnets:
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
    return str(table)


def test_existing_vpc_checks_skip_for_a_new_vpc() -> None:
    assert [c.status for c in preflight(settings()).existing_vpc()] == [Status.SKIP]


def test_an_existing_vpc_ready_for_endpoints_passes(aws: None) -> None:
    ec2, vpc_id, subnets = vpc()
    explicit_table(ec2, vpc_id, subnets)
    checks = list(preflight(existing(vpc_id, subnets)).existing_vpc())
    assert [c.status for c in checks if c.status is not Status.SKIP] == [Status.PASS] * 4, checks
    assert "2 AZs" in one(checks, "subnets").found


def test_dns_hostnames_off_fails_with_the_command_that_turns_it_on(aws: None) -> None:
    ec2, vpc_id, subnets = vpc(dns=False)
    explicit_table(ec2, vpc_id, subnets)
    check = one(list(preflight(existing(vpc_id, subnets)).existing_vpc()), "vpc dns")
    assert check.failed
    assert "enableDnsHostnames False" in check.found
    assert check.change == f"aws ec2 modify-vpc-attribute --vpc-id {vpc_id} --enable-dns-hostnames"
    # Without interface endpoints hostnames are not needed (DNS support still is).
    relaxed = one(list(preflight(existing(vpc_id, subnets, False)).existing_vpc()), "vpc dns")
    assert relaxed.status is Status.PASS


def test_subnets_in_one_az_fail(aws: None) -> None:
    _ec2, vpc_id, subnets = vpc(zones=("eu-west-1a", "eu-west-1a"))
    check = one(list(preflight(existing(vpc_id, subnets)).existing_vpc()), "subnets")
    assert check.failed
    assert "at least two AZs" in check.change


def test_subnets_that_do_not_exist_fail(aws: None) -> None:
    _, vpc_id, subnets = vpc()
    check = one(
        list(preflight(existing(vpc_id, [subnets[0], "subnet-0123456789abcdef0"])).existing_vpc()),
        "subnets",
    )
    assert check.failed
    assert check.change == "fix network.subnet_ids"


def test_subnets_on_the_main_route_table_pass_as_the_program_handles_them(aws: None) -> None:
    # Subnets never explicitly associated use the main route table ("Subnet route tables",
    # https://docs.aws.amazon.com/vpc/latest/userguide/subnet-route-tables.html); the program's
    # plural `get_route_tables` answers an empty list for them, not an error
    # (hashicorp/terraform-provider-aws internal/service/ec2/vpc_route_tables_data_source.go),
    # and it falls back to the VPC's main_route_table_id (infra/network.py read_existing_vpc).
    _, vpc_id, subnets = vpc()
    checks = list(preflight(existing(vpc_id, subnets)).existing_vpc())
    check = one(checks, "route tables")
    assert check.status is Status.PASS, check
    assert "(main, implicit)" in check.found
    assert not [c for c in checks if c.failed], checks


def test_an_existing_private_dns_endpoint_is_reused_not_a_conflict(aws: None) -> None:
    # The program reuses an interface endpoint the VPC already has for a service and admits the
    # stack's groups to it (infra/network.py Network._endpoints, `_admit`): no advice to turn
    # vpc_endpoints off, which would switch the stack to NAT egress.
    _ec2, vpc_id, subnets = vpc()
    _ec2.create_vpc_endpoint(
        VpcId=vpc_id,
        ServiceName=f"com.amazonaws.{REGION}.secretsmanager",
        VpcEndpointType="Interface",
        SubnetIds=subnets,
        PrivateDnsEnabled=True,
    )
    checks = list(preflight(existing(vpc_id, subnets)).existing_vpc())
    check = one(checks, "vpc endpoints")
    assert check.status is Status.PASS, check
    assert "secretsmanager (vpce-" in check.found
    assert "the stack reuses secretsmanager" in check.found
    assert "it creates logs, monitoring, ecr.api, ecr.dkr" in check.found
    assert "vpc_endpoints: false" not in check.change
    # The whole emulated account: an existing VPC on its main route table with an endpoint
    # already present reports no failure.
    assert not [c for c in checks if c.failed], checks


def test_the_whole_preflight_on_an_emulated_existing_vpc_has_no_network_false_failure(
    aws: None,
) -> None:
    # Every check through `run()`, against moto's EC2: subnets on the main route table
    # implicitly and a Secrets Manager endpoint with private DNS already present. The network
    # rows all pass (other rows depend on services moto does not model for PostgreSQL).
    ec2, vpc_id, subnets = vpc()
    ec2.create_vpc_endpoint(
        VpcId=vpc_id,
        ServiceName=f"com.amazonaws.{REGION}.secretsmanager",
        VpcEndpointType="Interface",
        SubnetIds=subnets,
        PrivateDnsEnabled=True,
    )
    checks = preflight(existing(vpc_id, subnets)).run()
    network = {"vpc dns", "subnets", "route tables", "vpc endpoints", "vpc endpoint services"}
    rows = [c for c in checks if c.name in network]
    assert {c.name for c in rows} == network
    assert all(c.status is Status.PASS for c in rows), rows
    assert one(checks, "nat egress").status is Status.SKIP


def test_an_existing_endpoint_without_private_dns_fails_with_the_command(aws: None) -> None:
    # Calls reach an interface endpoint by the service's default name only with private DNS on
    # (CreateVpcEndpoint PrivateDnsEnabled,
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateVpcEndpoint.html).
    ec2, vpc_id, subnets = vpc()
    endpoint = ec2.create_vpc_endpoint(
        VpcId=vpc_id,
        ServiceName=f"com.amazonaws.{REGION}.logs",
        VpcEndpointType="Interface",
        SubnetIds=subnets,
        PrivateDnsEnabled=False,
    )["VpcEndpoint"]["VpcEndpointId"]
    check = one(list(preflight(existing(vpc_id, subnets)).existing_vpc()), "vpc endpoints")
    assert check.failed
    assert "private DNS off" in check.found
    assert f"--vpc-endpoint-id {endpoint} --private-dns-enabled" in check.change


def endpoints_for_all(ec2: Any, vpc_id: str, subnets: list[str], skip: str = "") -> None:
    for service in ("secretsmanager", "logs", "monitoring", "ecr.api", "ecr.dkr"):
        if service != skip:
            ec2.create_vpc_endpoint(
                VpcId=vpc_id,
                ServiceName=f"com.amazonaws.{REGION}.{service}",
                VpcEndpointType="Interface",
                SubnetIds=subnets,
                PrivateDnsEnabled=True,
            )


def test_without_stack_endpoints_the_vpcs_own_are_reused(aws: None) -> None:
    ec2, vpc_id, subnets = vpc()
    endpoints_for_all(ec2, vpc_id, subnets)
    checks = list(preflight(existing(vpc_id, subnets, False)).existing_vpc())
    assert "the stack reuses them" in one(checks, "vpc endpoints").found
    assert one(checks, "nat egress").status is Status.PASS


def test_without_endpoints_or_a_nat_the_apis_are_unreachable(aws: None) -> None:
    ec2, vpc_id, subnets = vpc()
    endpoints_for_all(ec2, vpc_id, subnets, skip="logs")
    check = one(list(preflight(existing(vpc_id, subnets, False)).existing_vpc()), "nat egress")
    assert check.failed
    assert "logs have no endpoint" in check.found
    assert "add a NAT route" in check.change


def nat_gateway(ec2: Any, vpc_id: str) -> str:
    public = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.9.99.0/24")["Subnet"]["SubnetId"]
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=allocation)["NatGateway"]
    return str(nat["NatGatewayId"])


def test_a_nat_route_reaches_the_apis_without_endpoints(aws: None) -> None:
    ec2, vpc_id, subnets = vpc()
    table = explicit_table(ec2, vpc_id, subnets)
    nat = nat_gateway(ec2, vpc_id)
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    check = one(list(preflight(existing(vpc_id, subnets, False)).existing_vpc()), "nat egress")
    assert check.status is Status.PASS, check
    assert nat in check.found


def test_a_nat_instance_route_counts_as_egress_on_the_main_table(aws: None) -> None:
    # A NAT instance is a route to its instance (or its network interface): "NAT instances",
    # https://docs.aws.amazon.com/vpc/latest/userguide/VPC_NAT_Instance.html. The subnets use
    # the main route table implicitly.
    ec2, vpc_id, subnets = vpc()
    main = ec2.describe_route_tables(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "association.main", "Values": ["true"]},
        ]
    )["RouteTables"][0]["RouteTableId"]
    eni = ec2.create_network_interface(SubnetId=subnets[0])["NetworkInterface"][
        "NetworkInterfaceId"
    ]
    ec2.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", NetworkInterfaceId=eni)
    check = one(list(preflight(existing(vpc_id, subnets, False)).existing_vpc()), "nat egress")
    assert check.status is Status.PASS, check
    assert eni in check.found


def test_a_peering_route_is_not_egress(aws: None) -> None:
    # VPC peering does not support edge-to-edge routing through the peer's NAT or gateway
    # ("VPC peering limitations", https://docs.aws.amazon.com/vpc/latest/peering/vpc-peering-basics.html).
    ec2, vpc_id, subnets = vpc()
    table = explicit_table(ec2, vpc_id, subnets)
    peer = ec2.create_vpc(CidrBlock="10.10.0.0/16")["Vpc"]["VpcId"]
    peering = ec2.create_vpc_peering_connection(VpcId=vpc_id, PeerVpcId=peer)[
        "VpcPeeringConnection"
    ]["VpcPeeringConnectionId"]
    ec2.create_route(
        RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", VpcPeeringConnectionId=peering
    )
    check = one(list(preflight(existing(vpc_id, subnets, False)).existing_vpc()), "nat egress")
    assert check.failed
    assert "no 0.0.0.0/0 route to a NAT" in check.found


def test_an_rds_proxy_stack_needs_only_the_secrets_manager_endpoint(aws: None) -> None:
    # RDS Proxy stacks call Secrets Manager alone (infra/network.py POOLER_ENDPOINTS): a VPC
    # with only that endpoint needs no NAT for them, while PgBouncer's stack still does.
    ec2, vpc_id, subnets = vpc()
    explicit_table(ec2, vpc_id, subnets)
    ec2.create_vpc_endpoint(
        VpcId=vpc_id,
        ServiceName=f"com.amazonaws.{REGION}.secretsmanager",
        VpcEndpointType="Interface",
        SubnetIds=subnets,
        PrivateDnsEnabled=True,
    )
    proxy = existing(vpc_id, subnets, False).model_copy(
        update={"pooler": settings({"pooler": "rds-proxy"}).pooler}
    )
    check = one(list(preflight(proxy).existing_vpc()), "nat egress")
    assert check.status is Status.PASS, check
    pgbouncer = one(list(preflight(existing(vpc_id, subnets, False)).existing_vpc()), "nat egress")
    assert pgbouncer.failed
    assert "logs, monitoring, ecr.api, ecr.dkr have no endpoint" in pgbouncer.found


# -- endpoint services, Service Quotas, fixed names -------------------------------------------


def endpoint_services_stub(region: str, offered: dict[str, list[str]]) -> Any:
    ec2, stub = stubbed("ec2", region)
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeVpcEndpointServices.html
    stub.add_response(
        "describe_vpc_endpoint_services",
        {
            "ServiceDetails": [
                {
                    "ServiceName": f"com.amazonaws.{region}.{service}",
                    "ServiceType": [{"ServiceType": "Interface"}],
                    "AvailabilityZones": zones,
                }
                for service, zones in offered.items()
            ]
        },
    )
    stub.add_response(
        "describe_availability_zones",
        {
            "AvailabilityZones": [
                {"ZoneName": f"{region}{x}", "ZoneId": f"z{x}", "State": "available"} for x in "abc"
            ]
        },
        {"Filters": [{"Name": "state", "Values": ["available"]}]},
    )
    stub.activate()
    return ec2


def test_an_endpoint_service_missing_in_an_az_moves_a_new_vpc(aws: None) -> None:
    # Each interface endpoint service lists the AZs it is offered in
    # (DescribeVpcEndpointServices, ServiceDetail.AvailabilityZones:
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ServiceDetail.html). A new VPC
    # takes the first AZs where all are offered, as the program does (infra/network.py).
    r = REGION
    offered = {
        "secretsmanager": [f"{r}a", f"{r}b", f"{r}c"],
        "logs": [f"{r}b", f"{r}c"],
        "monitoring": [f"{r}a", f"{r}b", f"{r}c"],
        "ecr.api": [f"{r}a", f"{r}b", f"{r}c"],
        "ecr.dkr": [f"{r}a", f"{r}b", f"{r}c"],
    }
    pf = preflight(settings(), {"ec2": endpoint_services_stub(r, offered)})
    check = one(list(pf.endpoint_services()), "vpc endpoint services")
    assert check.status is Status.PASS, check
    assert [z.name for z in pf.zones()] == [f"{r}b", f"{r}c"]
    three = settings({"network": {"availability_zones": 3}})
    pf = preflight(three, {"ec2": endpoint_services_stub(r, offered)})
    check = one(list(pf.endpoint_services()), "vpc endpoint services")
    assert check.failed
    assert "network.availability_zones to 2" in check.change


def test_an_endpoint_service_missing_in_an_existing_subnets_az_fails(aws: None) -> None:
    _ec2, vpc_id, subnets = vpc(zones=("eu-west-1a", "eu-west-1b"))
    s = existing(vpc_id, subnets)
    check = one(list(preflight(s).endpoint_services()), "vpc endpoint services")
    assert check.status is Status.PASS, check  # moto offers every service in every AZ
    pf = preflight(s)
    pf._offered = {"secretsmanager": ["eu-west-1b"], "logs": ["eu-west-1a", "eu-west-1b"]}
    check = one(list(pf.endpoint_services()), "vpc endpoint services")
    assert check.failed
    assert "secretsmanager not offered in eu-west-1a" in check.found
    assert "network.subnet_ids" in check.change


def test_service_quotas_permission_is_checked() -> None:
    # The preview reads Lambda's quota with GetServiceQuota (infra/account.py); an identity
    # without servicequotas:GetServiceQuota gets AccessDeniedException
    # (https://docs.aws.amazon.com/servicequotas/2019-06-24/apireference/API_GetServiceQuota.html).
    sq, stub = stubbed("service-quotas")
    stub.add_response(
        "get_service_quota",
        {"Quota": {"ServiceCode": "lambda", "QuotaCode": "L-B99A9384", "Value": 10.0}},
        {"ServiceCode": "lambda", "QuotaCode": "L-B99A9384"},
    )
    stub.add_client_error(
        "get_service_quota", service_error_code="AccessDeniedException", http_status_code=400
    )
    stub.activate()
    pf = preflight(settings(), {"service-quotas": sq})
    allowed = one(list(pf.service_quotas()), "service quotas")
    assert allowed.status is Status.PASS
    assert "10" in allowed.found
    denied = one(list(pf.service_quotas()), "service quotas")
    assert denied.failed
    assert "servicequotas:GetServiceQuota" in denied.change


def test_names_an_earlier_stack_left_are_collisions(aws: None) -> None:
    # Lambda refuses a function name in use (CreateFunction ResourceConflictException) and
    # CloudWatch Logs an existing group (CreateLogGroup ResourceAlreadyExistsException); an
    # alarm of the same name would be overwritten by PutMetricAlarm.
    pf = preflight(settings(stack="t"))
    clean = one(list(pf.name_collisions()), "name collisions")
    assert clean.status is Status.PASS, clean
    logs = aws_client("logs")
    logs.create_log_group(logGroupName="/aws/lambda/slotguard-t-api")
    logs.create_log_group(logGroupName="/aws/lambda/slotguard-tt-api")  # another stack's
    cloudwatch = aws_client("cloudwatch")
    alarm = pf.fixed_names()["alarms"][0]
    cloudwatch.put_metric_alarm(
        AlarmName=alarm,
        MetricName="DatabaseConnections",
        Namespace="AWS/RDS",
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    check = one(list(preflight(settings(stack="t")).name_collisions()), "name collisions")
    assert check.failed
    assert "log groups: /aws/lambda/slotguard-t-api" in check.found
    assert "slotguard-tt-api" not in check.found
    assert f"alarms: {alarm}" in check.found
    deployed = one(
        list(preflight(settings(stack="t"), deployed=True).name_collisions()), "name collisions"
    )
    assert deployed.status is Status.SKIP


# -- the image and the CA bundle ---------------------------------------------------------------

BUILDX_ARM = """Name:          default
Driver:        docker
Nodes:
Name:      default
Endpoint:  default
Status:    running
BuildKit:  v0.16.0
Platforms: linux/amd64, linux/amd64/v2, linux/arm64, linux/386
"""


def test_buildx_platforms_are_parsed() -> None:
    assert "linux/arm64" in buildx_platforms(BUILDX_ARM)


def test_docker_buildx_with_arm64_passes() -> None:
    t = tools({"docker buildx inspect": done(BUILDX_ARM)})
    check = one(list(preflight(settings(), tools=t).image_build()), "pooler image")
    assert check.status is Status.PASS


def test_docker_buildx_without_arm64_fails_with_binfmt_or_a_prebuilt_image() -> None:
    t = tools({"docker buildx inspect": done(BUILDX_ARM.replace(", linux/arm64", ""))})
    check = one(list(preflight(settings(), tools=t).image_build()), "pooler image")
    assert check.failed
    assert "binfmt" in check.change
    assert "pgbouncer:image" in check.change


def test_no_docker_or_no_buildx_fails() -> None:
    check = one(
        list(preflight(settings(), tools=tools(on_path=("pulumi",))).image_build()),
        "pooler image",
    )
    assert check.failed
    assert "docker" in check.found
    t = tools({"docker buildx inspect": done("", 1, "docker: 'buildx' is not a docker command")})
    check = one(list(preflight(settings(), tools=t).image_build()), "pooler image")
    assert check.failed
    assert "buildx" in check.change


def test_a_prebuilt_image_needs_no_docker() -> None:
    p = preflight(settings(), tools=tools(on_path=()), prebuilt_image="123.dkr.ecr/x@sha256:ab")
    check = one(list(p.image_build()), "pooler image")
    assert check.status is Status.PASS
    assert "prebuilt" in check.found
    rds_proxy = list(preflight(settings({"pooler": "rds-proxy"})).image_build())
    assert [c.status for c in rds_proxy] == [Status.SKIP]


def test_the_ca_bundle_obtainable_passes_and_unreachable_fails() -> None:
    check = one(
        list(preflight(settings(), ca_bundle=lambda: "fetched to x").rds_ca_bundle()),
        "rds ca bundle",
    )
    assert check.status is Status.PASS

    def unreachable() -> str:
        raise PackagingError("cannot fetch the RDS CA bundle from https://x (timed out)")

    check = one(list(preflight(settings(), ca_bundle=unreachable).rds_ca_bundle()), "rds ca bundle")
    assert check.failed
    assert "cannot fetch" in check.found


def test_the_default_bundle_look_up_never_needs_the_network_when_saved(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from infra import packaging

    saved = tmp_path / "rds-global-bundle.pem"
    saved.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(packaging, "RDS_CA_BUNDLE", saved)
    check = one(list(preflight(settings()).rds_ca_bundle()), "rds ca bundle")
    assert check.status is Status.PASS
    assert "in the repository" in check.found

    def offline(**_: Any) -> Path:
        raise PackagingError("cannot fetch the RDS CA bundle (no route to host)")

    monkeypatch.setattr(packaging, "RDS_CA_BUNDLE", tmp_path / "absent.pem")
    monkeypatch.setattr(packaging, "fetch_ca_bundle", offline)
    check = one(list(preflight(settings()).rds_ca_bundle()), "rds ca bundle")
    assert check.failed
    assert "no route to host" in check.found


def test_client_errors_are_client_errors() -> None:
    # The generic error row relies on botocore raising ClientError for an API refusal.
    client, stub = stubbed("sts")
    stub.add_client_error("get_caller_identity", "ExpiredToken", "expired", 403)
    stub.activate()
    with pytest.raises(ClientError):
        client.get_caller_identity()


def test_missing_credentials_in_any_check_say_how_to_configure_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    lam: Any = boto3.Session(region_name=REGION).client("lambda")
    p = preflight(settings(), {"lambda": lam})
    check = one(run_checks([("lambda concurrency", p.lambda_concurrency)]), "lambda concurrency")
    assert check.failed
    assert "NoCredentialsError" in check.found
    assert "configure AWS credentials" in check.change

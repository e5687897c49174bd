"""The runner and the pack around the rules: configuration, enforcement levels, the report, the
pack's own gRPC analyzer fed the resources the way the Pulumi engine sends them, and the rules'
readings of resource shapes the kit's program does not use but a fork might."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2  # type: ignore[import-untyped]
from pulumi.runtime.proto import analyzer_pb2
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
)
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from infra.offline import ResourceRecord, reveal, run_offline
from infra.settings import load_stack
from policy.__main__ import policies
from policy.offline import evaluate, load_pack_config, to_policy_resources
from policy.report import PACK_NAME, PACK_VERSION, render
from policy.rules import RULES, RuleConfigError, rule_named
from policy.stackview import StackView

ROOT = Path(__file__).resolve().parent.parent


@cache
def dev_records() -> tuple[ResourceRecord, ...]:
    return tuple(run_offline(load_stack("dev", ROOT)).resources)


def dev_resources() -> list[PolicyResource]:
    return to_policy_resources(list(dev_records()))


# -- the records become linked PolicyResources ---------------------------------------------------


def test_policy_resources_are_linked_like_the_engines():
    resources = dev_resources()
    by_name = {r.name: r for r in resources}
    api = by_name["slotguard-dev-api-function"]
    assert api.parent is not None
    assert api.parent.resource_type == "slotguard:functions:LambdaFunction"
    assert api.parent.name == "slotguard-dev-api"
    env_deps = {d.name for d in api.property_dependencies["environment"]}
    assert "slotguard-dev-nlb" in env_deps  # DB_HOST is the NLB's DNS name
    assert "slotguard-dev-instance" not in env_deps
    # Secrets arrive unwrapped, as a pack sees them; camelCase property names, as the engine's.
    version = by_name["slotguard-dev-app-secret-version"]
    assert json.loads(version.props["secretString"])["username"] == "app_user"
    assert api.props["reservedConcurrentExecutions"] == -1  # the dev example is unreserved


# -- configuration and enforcement levels --------------------------------------------------------


def test_tightened_config_turns_the_dev_stack_red():
    report = evaluate(
        dev_resources(), "dev", {"app-user-timeouts": {"maxStatementTimeoutMs": 1000}}
    )
    assert [v.policy for v in report.violations] == ["app-user-timeouts"]
    assert "5000 ms, above the maximum 1000 ms" in report.violations[0].message
    assert report.exit_code == 2


def test_advisory_level_reports_without_failing():
    config = {"app-user-timeouts": {"enforcementLevel": "advisory", "maxStatementTimeoutMs": 1000}}
    report = evaluate(dev_resources(), "dev", config)
    assert [v.enforcement_level for v in report.violations] == ["advisory"]
    assert report.exit_code == 0
    assert "[advisory]  app-user-timeouts" in render(report)


def test_disabled_policies_do_not_run():
    config = {
        "all": "disabled",
        "connection-budget": {"enforcementLevel": "mandatory", "adminMargin": 10},
    }
    report = evaluate(dev_resources(), "dev", config)
    assert report.policies == ["connection-budget"]
    assert len(report.disabled) == len(RULES) - 1
    # 15 server connections > 25 - 3 superuser - 2 rds_superuser reserved - 10 admin = 10.
    assert [v.policy for v in report.violations] == ["connection-budget"]
    assert "10 the database can give the pooler" in report.violations[0].message


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"no-such-policy": "advisory"}, "no-such-policy"),
        ({"connection-budget": {"adminMargin": -1}}, "adminMargin"),
        ({"connection-budget": {"adminMarjin": 1}}, "adminMarjin"),
        ({"connection-alarms": {"warnPercent": 90, "criticalPercent": 80}}, "warnPercent"),
        ({"production-safety": {"prodStackPattern": "(prod"}}, "prodStackPattern"),
        ({"function-limits": "sometimes"}, "sometimes"),
    ],
)
def test_bad_config_is_refused_naming_the_key(config, names):
    with pytest.raises(RuleConfigError, match=names):
        evaluate([], "dev", config)


def test_config_file_json_and_yaml(scratch_dir):
    (scratch_dir / "policy.json").write_text(json.dumps({"all": "advisory"}))
    (scratch_dir / "policy.yaml").write_text("connection-budget:\n  adminMargin: 5\n")
    assert load_pack_config(scratch_dir / "policy.json") == {"all": "advisory"}
    assert load_pack_config(scratch_dir / "policy.yaml") == {
        "connection-budget": {"adminMargin": 5}
    }
    (scratch_dir / "bad.yaml").write_text("- a list\n")
    with pytest.raises(RuleConfigError, match="mapping of policy names"):
        load_pack_config(scratch_dir / "bad.yaml")


def test_report_json_and_text():
    report = evaluate(dev_resources(), "dev", {"app-user-timeouts": {"maxStatementTimeoutMs": 1}})
    data = report.to_json()
    assert data["ok"] is False
    assert data["pack"] == f"{PACK_NAME}@v{PACK_VERSION}"
    (violation,) = data["violations"]
    assert violation["resource"] == (
        "aws:lambda/invocation:Invocation: slotguard-dev-bootstrap-run"
    )
    text = render(report)
    assert "[mandatory]  app-user-timeouts  (aws:lambda/invocation:Invocation:" in text
    assert violation["urn"] in text


# -- the real pack: its policies through pulumi-policy's analyzer --------------------------------


def _unknown_ids(value: Any) -> Any:
    """What a preview of a new stack sends: ARNs and ids of resources not yet created unknown."""
    if isinstance(value, dict):
        return {k: _unknown_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unknown_ids(v) for v in value]
    if isinstance(value, str) and (value.startswith(("arn:", "sg-")) or value.endswith("-id")):
        return UNKNOWN_STRING_VALUE
    return value


def _analyze_request(
    records: tuple[ResourceRecord, ...], preview: bool = False
) -> analyzer_pb2.AnalyzeStackRequest:
    request = analyzer_pb2.AnalyzeStackRequest()
    for record in records:
        props = struct_pb2.Struct()
        values = reveal(record.inputs)
        json_format.ParseDict(
            json.loads(json.dumps(_unknown_ids(values) if preview else values)), props
        )
        resource = request.resources.add(
            type=record.type,
            urn=record.urn,
            name=record.name,
            parent=record.parent or "",
            dependencies=list(record.dependencies),
        )
        resource.properties.CopyFrom(props)
        for key, urns in record.property_dependencies.items():
            resource.propertyDependencies[key].urns.extend(urns)
    return request


def _analyzer(config: dict[str, dict[str, Any]] | None = None) -> Any:
    # The servicer `PolicyPack` would serve over gRPC to the CLI; driven here without the server.
    servicer: Any = _PolicyAnalyzerServicer(
        PACK_NAME, PACK_VERSION, list(policies()), EnforcementLevel.ADVISORY
    )
    request = analyzer_pb2.ConfigureAnalyzerRequest()
    for name, values in (config or {}).items():
        entry = request.policyConfig[name]
        entry.enforcementLevel = analyzer_pb2.MANDATORY
        entry.properties.update(values)
    servicer.Configure(request, None)
    return servicer


def test_pack_describes_every_rule_as_mandatory_with_its_schema():
    info = _analyzer().GetAnalyzerInfo(None, None)
    assert [p.name for p in info.policies] == [r.name for r in RULES]
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}
    budget = next(p for p in info.policies if p.name == "connection-budget")
    assert budget.configSchema.properties["adminMargin"]["default"] == 3


def test_pack_passes_the_dev_stack_and_reports_a_broken_one():
    clean = _analyzer().AnalyzeStack(_analyze_request(dev_records()), None)
    assert list(clean.diagnostics) == []
    config = {"app-user-timeouts": {"maxStatementTimeoutMs": 1000}}
    broken = _analyzer(config).AnalyzeStack(_analyze_request(dev_records()), None)
    (diagnostic,) = broken.diagnostics
    assert diagnostic.policyName == "app-user-timeouts"
    assert diagnostic.enforcementLevel == analyzer_pb2.MANDATORY
    assert diagnostic.urn.endswith("::slotguard-dev-bootstrap-run")
    assert "above the maximum 1000 ms" in diagnostic.message


def test_pack_runs_in_a_preview_with_unknown_ids():
    # Unknown ARNs and ids do not stop a rule: references come from property dependencies.
    request = _analyze_request(dev_records(), preview=True)
    api = next(r for r in request.resources if r.name.endswith("-api-function"))
    variables = api.properties["environment"]["variables"]
    assert variables["DB_SECRET_ARN"] == UNKNOWN_STRING_VALUE
    assert list(_analyzer().AnalyzeStack(request, None).diagnostics) == []
    config = {"function-limits": {}, "connection-budget": {"adminMargin": 10}}
    (diagnostic,) = _analyzer(config).AnalyzeStack(request, None).diagnostics
    assert diagnostic.policyName == "connection-budget"
    assert "can't run policy" not in diagnostic.message


# -- resource shapes a fork might use -----------------------------------------------------------


def _resource(type_: str, resource_name: str, **props: object) -> PolicyResource:
    options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    urn = f"urn:pulumi:t::p::{type_}::{resource_name}"
    return PolicyResource(type_, props, urn, resource_name, options, None, None, [], {})


def test_inline_and_legacy_security_group_rules():
    fn_sg = _resource("aws:ec2/securityGroup:SecurityGroup", "fn", id="sg-fn")
    db_sg = _resource(
        "aws:ec2/securityGroup:SecurityGroup",
        "db",
        id="sg-db",
        ingress=[
            {"fromPort": 5432, "toPort": 5432, "protocol": "tcp", "securityGroups": ["sg-fn"]}
        ],
    )
    open_rule = _resource(
        "aws:ec2/securityGroupRule:SecurityGroupRule",
        "open",
        type="ingress",
        securityGroupId="sg-db",
        cidrBlocks=["0.0.0.0/0"],
    )
    fn = _resource(
        "aws:lambda/function:Function",
        "api",
        handler="functions.api.handler",
        vpcConfig={"securityGroupIds": ["sg-fn"], "subnetIds": ["subnet-1"]},
    )
    db = _resource("aws:rds/instance:Instance", "db", vpcSecurityGroupIds=["sg-db"])
    view = StackView([fn_sg, db_sg, open_rule, fn, db], stack="t")
    findings = rule_named("no-direct-network-path").run(view)
    assert sorted(f.urn or "" for f in findings) == sorted([db_sg.urn, open_rule.urn])


def test_function_limits_use_lambda_defaults():
    # A function that leaves out timeout and reserved concurrency gets Lambda's 3 s and no bound.
    fn = _resource("aws:lambda/function:Function", "bare", handler="functions.api.handler")
    run = _resource(
        "aws:lambda/invocation:Invocation",
        "boot",
        input=json.dumps({"app_user": {"statement_timeout_ms": 5000}}),
    )
    findings = rule_named("function-limits").run(StackView([fn, run]))
    messages = " | ".join(f.message for f in findings)
    assert "reserved concurrency" not in messages  # unset is unreserved: connection-budget's
    assert "times out after 3 s" in messages
    # Reserved at 0, every invocation is throttled ("A value of `0` disables lambda from being
    # triggered", pulumi-aws lambda_.Function reserved_concurrent_executions docstring).
    zero = _resource(
        "aws:lambda/function:Function",
        "zero",
        handler="functions.api.handler",
        reservedConcurrentExecutions=0,
    )
    findings = rule_named("function-limits").run(StackView([zero, run]))
    assert any("reserved concurrency 0" in f.message for f in findings)


def test_missing_pieces_are_violations_not_silence():
    # No bootstrap invocation, no max_connections pinned, no connection alarms.
    db = _resource("aws:rds/instance:Instance", "db", parameterGroupName="pg")
    group = _resource("aws:rds/parameterGroup:ParameterGroup", "pg", name="pg", parameters=[])
    view = StackView([db, group])
    assert rule_named("app-user-timeouts").run(view)[0].urn is None
    assert "does not pin max_connections" in rule_named("connection-budget").run(view)[0].message
    group.props["parameters"].append({"name": "max_connections", "value": "100"})
    alarms = rule_named("connection-alarms").run(view)
    assert len(alarms) == 2
    assert "70% of max_connections 100 = 70" in alarms[0].message


def test_metric_math_alarms_count():
    # An alarm built from metric queries watches DatabaseConnections as much as a plain one.
    db = _resource("aws:rds/instance:Instance", "db", parameterGroupName="pg")
    group = _resource(
        "aws:rds/parameterGroup:ParameterGroup",
        "pg",
        name="pg",
        parameters=[{"name": "max_connections", "value": "100"}],
    )
    metric = {"namespace": "AWS/RDS", "metricName": "DatabaseConnections"}

    def alarms(*thresholds: int) -> list[PolicyResource]:
        return [
            _resource(
                "aws:cloudwatch/metricAlarm:MetricAlarm",
                f"db-{threshold}",
                threshold=threshold,
                alarmActions=["arn:aws:sns:eu-west-1:123456789012:alarms"],
                metricQueries=[
                    {"id": "m1", "metric": {**metric, "dimensions": {"DBInstanceIdentifier": "db"}}}
                ],
            )
            for threshold in thresholds
        ]

    assert rule_named("connection-alarms").run(StackView([db, group, *alarms(60, 80)])) == []
    (finding,) = rule_named("connection-alarms").run(StackView([db, group, *alarms(60, 81)]))
    assert finding.urn is not None
    assert finding.urn.endswith("::db-81")
    assert "80% of max_connections 100 = 80" in finding.message


def test_docs_name_every_policy_and_setting():
    text = (ROOT / "docs" / "policy.md").read_text()
    for rule in RULES:
        assert f"`{rule.name}`" in text
        for key, schema in rule.schema_properties().items():
            assert f"`{key}`" in text, key
            assert str(schema["default"]).replace("'", '"') in text, (key, schema["default"])

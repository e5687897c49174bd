"""The offline policy runner: the program under mocks, every rule over what it registered.

`pulumi preview --policy-pack policy` needs the Pulumi CLI and an AWS account. This runner gives
the same verdict anywhere: it runs the real program with `infra.offline.run_offline` (Pulumi
mocks), turns each recorded resource into the `pulumi_policy.PolicyResource` a stack policy
receives (inputs with secrets unwrapped, as the engine hands them to a pack; parent, dependencies
and property dependencies linked to resource objects, as `AnalyzeStack` does), and applies every
rule with the pack's configuration and enforcement levels.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
)

from infra.handlers import check_handlers
from infra.offline import ResourceRecord, reveal, run_offline
from infra.settings import load_stack
from policy.report import PolicyReport, Violation
from policy.rules import RULES, Rule, RuleConfigError
from policy.stackview import StackView

RecordsTransform = Callable[[list[ResourceRecord]], list[ResourceRecord]]
PackConfig = Mapping[str, Any]  # Pulumi's policy config: {policy: level | {enforcementLevel, ...}}

_LEVELS = {level.value: level for level in EnforcementLevel}


def to_policy_resources(records: Sequence[ResourceRecord]) -> list[PolicyResource]:
    """`PolicyResource` objects linked to each other like the engine's `AnalyzeStack` request."""
    resources: dict[str, PolicyResource] = {}
    for record in records:
        options = PolicyResourceOptions(
            protect=False,
            ignore_changes=[],
            delete_before_replace=None,
            aliases=[],
            custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
            additional_secret_outputs=[],
            parent=record.parent,
        )
        resources[record.urn] = PolicyResource(
            record.type, reveal(record.inputs), record.urn, record.name, options, None, None, [], {}
        )
    for record in records:
        resource = resources[record.urn]
        resource.parent = resources.get(record.parent) if record.parent else None
        resource.dependencies = [resources[u] for u in record.dependencies if u in resources]
        resource.property_dependencies = {
            key: [resources[u] for u in urns if u in resources]
            for key, urns in record.property_dependencies.items()
        }
    return list(resources.values())


def enforcement_level(rule: Rule[Any], config: PackConfig) -> EnforcementLevel:
    """The rule's level: its own config entry, else the `all` entry, else the rule's default."""
    for key in (rule.name, "all"):
        entry = config.get(key)
        raw = entry.get("enforcementLevel") if isinstance(entry, Mapping) else entry
        if raw is None:
            continue
        level = _LEVELS.get(str(raw))
        if level is None:
            raise RuleConfigError(
                f"policy config `{key}`: enforcementLevel {raw!r} is not one of "
                f"{', '.join(_LEVELS)}"
            )
        # Stack policies cannot remediate; Pulumi treats the level as mandatory.
        return EnforcementLevel.MANDATORY if level is EnforcementLevel.REMEDIATE else level
    return rule.enforcement_level


def _rule_settings(rule: Rule[Any], config: PackConfig) -> Mapping[str, Any]:
    entry = config.get(rule.name)
    return entry if isinstance(entry, Mapping) else {}


def check_config(config: PackConfig, rules: Sequence[Rule[Any]] = RULES) -> None:
    """Refuse unknown policy names and bad values before anything runs."""
    known = {r.name for r in rules}
    for key in config:
        if key != "all" and key not in known:
            raise RuleConfigError(
                f"policy config `{key}`: no such policy (known: {', '.join(sorted(known))})"
            )
    for rule in rules:
        enforcement_level(rule, config)
        rule.config(_rule_settings(rule, config))


def evaluate(
    resources: Sequence[PolicyResource],
    stack: str,
    config: PackConfig | None = None,
    rules: Sequence[Rule[Any]] = RULES,
) -> PolicyReport:
    """Apply every enabled rule to the resources, as the pack does under `pulumi preview`."""
    pack_config: PackConfig = config or {}
    check_config(pack_config, rules)
    view = StackView(resources, stack=stack)
    by_urn = {r.urn: r for r in resources}
    report = PolicyReport(stack=stack, policies=[], resources=len(resources))
    for rule in rules:
        level = enforcement_level(rule, pack_config)
        if level is EnforcementLevel.DISABLED:
            report.disabled.append(rule.name)
            continue
        report.policies.append(rule.name)
        for finding in rule.run(view, _rule_settings(rule, pack_config)):
            target = by_urn.get(finding.urn) if finding.urn else None
            report.violations.append(
                Violation(
                    policy=rule.name,
                    description=rule.description,
                    enforcement_level=level.value,
                    message=finding.message,
                    urn=finding.urn,
                    resource=f"{target.resource_type}: {target.name}" if target else "",
                )
            )
    return report


def load_pack_config(path: Path) -> dict[str, Any]:
    """A policy config file (JSON, or YAML), the format of `pulumi preview --policy-pack-config`."""
    try:
        text = path.read_text()
    except OSError as error:
        raise RuleConfigError(f"policy config file {path}: {error.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise RuleConfigError(f"policy config file {path}: not valid JSON/YAML: {error}") from None
    if not isinstance(data, dict):
        raise RuleConfigError(f"policy config file {path}: expected a mapping of policy names")
    return data


def check_stack(
    stack: str,
    root: Path | None = None,
    config: PackConfig | None = None,
    transform: RecordsTransform | None = None,
) -> PolicyReport:
    """Run the program offline for `Pulumi.<stack>.yaml` and every rule over its resources.

    `transform` edits the recorded resources before the rules see them (how a test breaks the
    stack the way a fork could). Settings and budget errors propagate, as they stop a preview.
    """
    check_config(config or {})
    settings = load_stack(stack, root)
    check_handlers(settings)  # as the program's preview does (infra/__main__.py)
    run = run_offline(settings)
    records = list(run.resources)
    if transform is not None:
        records = transform(records)
    return evaluate(to_policy_resources(records), stack, config)

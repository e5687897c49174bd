"""The CrossGuard pack: `pulumi preview --policy-pack policy` runs this file.

Constructing a `PolicyPack` starts the analyzer's gRPC server and blocks, so this is the only
place it happens; the rules themselves live in `policy.rules` and are tested offline.
"""

from __future__ import annotations

import os
from typing import Any

from pulumi_policy import (
    PolicyPack,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.report import PACK_NAME
from policy.rules import RULES, Rule
from policy.stackview import StackView


def _validation(rule: Rule[Any]) -> Any:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        # The CLI sets PULUMI_STACK for the analyzer; production rules match the stack name.
        view = StackView(args.resources, stack=os.environ.get("PULUMI_STACK", ""))
        for finding in rule.run(view, args.get_config()):
            report_violation(finding.message, finding.urn)

    return validate


def policies() -> list[StackValidationPolicy]:
    """One stack policy per rule, mandatory unless the pack's config says otherwise."""
    return [
        StackValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_validation(rule),
            enforcement_level=rule.enforcement_level,
            config_schema=rule.config_schema(),
        )
        for rule in RULES
    ]


if __name__ == "__main__":
    PolicyPack(name=PACK_NAME, policies=list(policies()))

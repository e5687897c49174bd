"""A policy report shaped like `pulumi preview --policy-pack`'s, for people and for machines."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PACK_NAME = "slotguard"
PACK_VERSION = "0.1.0"
EXIT_CLEAN = 0
EXIT_VIOLATION = 2


@dataclass(frozen=True)
class Violation:
    """One reported violation, with the policy's name, level and the resource it names."""

    policy: str
    description: str
    enforcement_level: str  # "mandatory" or "advisory"
    message: str
    urn: str | None
    resource: str  # `type: name`, as `pulumi preview` prints it; empty for the whole stack


@dataclass
class PolicyReport:
    """Every policy's verdict on one stack."""

    stack: str
    policies: list[str]
    resources: int
    violations: list[Violation] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    pack: str = PACK_NAME
    version: str = PACK_VERSION

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.enforcement_level == "mandatory"]

    @property
    def exit_code(self) -> int:
        """2 when a mandatory policy is violated (the preview would fail), else 0."""
        return EXIT_VIOLATION if self.mandatory else EXIT_CLEAN

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.mandatory,
            "stack": self.stack,
            "pack": f"{self.pack}@v{self.version}",
            "resources": self.resources,
            "policies": self.policies,
            "disabled": self.disabled,
            "violations": [asdict(v) for v in self.violations],
        }


def render(report: PolicyReport) -> str:
    """The report as `pulumi preview` prints policy results: pack, then one block per violation."""
    mark = "❌" if report.mandatory else ("⚠️" if report.violations else "✅")
    lines = [
        "Policies:",
        f"    {mark} {report.pack}@v{report.version} (local: policy)",
    ]
    for v in report.violations:
        target = f"  ({v.resource})" if v.resource else ""
        lines.append(f"        - [{v.enforcement_level}]  {v.policy}{target}")
        lines.append(f"          {v.description}")
        lines.append(f"          {v.message}")
        if v.urn:
            lines.append(f"          urn: {v.urn}")
    passed = len(report.policies) - len({v.policy for v in report.violations})
    summary = (
        f"{len(report.violations)} violation(s) "
        f"({len(report.mandatory)} mandatory) of {len(report.policies)} policies "
        f"over {report.resources} resources of stack '{report.stack}'; {passed} policies pass"
    )
    if report.disabled:
        summary += f"; disabled: {', '.join(report.disabled)}"
    lines += ["", summary]
    return "\n".join(lines)

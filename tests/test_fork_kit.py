"""What a team forking the kit relies on: a licence, the fork guide, a CI that a fork can run."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_licence_is_apache_2_and_the_metadata_says_so() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0"  # PEP 639 SPDX expression
    assert project["license-files"] == ["LICENSE"]
    # PEP 639: a licence expression excludes licence classifiers.
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    assert "## Licence" in contributing
    assert "Apache License 2.0" in contributing


def test_the_readme_links_the_fork_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    assert "(CONTRIBUTING.md#fork-and-deploy)" in readme
    assert re.search(r"^## Fork and deploy$", contributing, re.M)
    for step in (
        "### 1. Fork",
        "Set the stack's variables",
        "Deploy the first time",
        "Run the tests",
    ):
        assert step in contributing, step
    for name in ("CHANGELOG.md", "SECURITY.md"):
        assert (ROOT / name).is_file()
        assert name in contributing


def _referenced(kind: str) -> set[str]:
    return set(re.findall(rf"\b{kind}\.([A-Z][A-Z0-9_]+)", WORKFLOW.read_text()))


def test_every_variable_and_secret_the_workflow_reads_is_documented() -> None:
    header = "\n".join(line for line in WORKFLOW.read_text().splitlines() if line.startswith("#"))
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    names = _referenced("vars") | _referenced("secrets")
    assert {"PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_ACCESS_TOKEN"} <= names
    for name in names:
        assert name in header, f"{name} is not described in the workflow's header comment"
        assert f"`{name}`" in contributing, f"{name} is not in CONTRIBUTING's CI table"


def test_actions_are_pinned_and_checkouts_keep_no_credentials() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = [step for job in workflow["jobs"].values() for step in job.get("steps", [])]
    uses = [step for step in steps if "uses" in step]
    assert uses
    for step in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
        if step["uses"].startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False
    assert workflow["concurrency"]["cancel-in-progress"] is True
    preview = next(s for s in uses if s["uses"].startswith("pulumi/actions@"))
    assert preview["with"]["command"] == "preview"
    assert preview["with"]["policyPacks"] == "policy"
    assert preview["with"]["comment-on-pr"] is True


def test_the_preview_is_gated_on_configuration_and_on_forks() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    assert jobs["preview"]["if"] == "needs.preview-gate.outputs.run == 'true'"
    gate = jobs["preview-gate"]["steps"][0]
    assert "head.repo.full_name" in gate["env"]["HEAD_REPO"]
    assert "GITHUB_STEP_SUMMARY" in gate["run"]  # the reason is shown, not just a grey job


def test_the_development_python_is_supported_and_what_the_linters_target() -> None:
    pinned = (ROOT / ".python-version").read_text().strip()
    data = pyproject()
    assert pinned in SpecifierSet(data["project"]["requires-python"])
    assert data["tool"]["mypy"]["python_version"] == pinned
    assert data["tool"]["ruff"]["target-version"] == "py" + pinned.replace(".", "")
    listed = {c.rsplit(" ", 1)[-1] for c in data["project"]["classifiers"] if ":: 3." in c}
    assert pinned in listed

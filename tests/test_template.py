"""`pulumi new <fork-url>`: the template section makes a stack file a team can read and deploy.

What `pulumi new` does with the template section, as pulumi/pulumi implements it
(pkg/cmd/pulumi/project/newcmd/config.go: resolveTemplateConfig, encryptTemplateConfig,
SaveConfig; documented at https://www.pulumi.com/docs/iac/guides/building-extending/creating-templates/):
- it copies the template's files, the example `Pulumi.<stack>.yaml` files included;
- each `template.config` key is prompted for, with the entry's `default` as the default (a new
  stack has no previous deployment whose value would be preferred); the answer is saved as a plain
  string value (`config.NewValue`), an empty answer is not saved;
- SaveConfig loads the stack's file (the copied example when the stack has its name) and
  overwrites each answered key (`maps.Copy(ps.Config, c)`), editing the YAML in place
  (sdk/go/common/encoding/marshal.go: `yamlutil.Edit` on the file's raw bytes).
So a prompt for a key the example holds as a mapping (`slotguard:pooler`) would replace the
mapping with a string; no prompt may target such a key.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.budget import BudgetError, compute_budget
from infra.offline import run_offline
from infra.settings import StackSettings, load_stack

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("dev", "prod")


def template() -> dict[str, Any]:
    section = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["template"]
    assert isinstance(section, dict)
    return section


def pulumi_new(target: Path, stack: str, answers: dict[str, str] | None = None) -> Path:
    """Emulate `pulumi new` into `target` for `stack`: copy, prompt (defaults or answers), save."""
    for name in ["Pulumi.yaml", *(f"Pulumi.{s}.yaml" for s in EXAMPLES)]:
        shutil.copy(ROOT / name, target / name)
    values = {key: str(entry["default"]) for key, entry in template()["config"].items()}
    values.update(answers or {})
    path = target / f"Pulumi.{stack}.yaml"
    document = yaml.safe_load(path.read_text()) if path.exists() else {}
    config = document.setdefault("config", {})
    config.update({key: value for key, value in values.items() if value != ""})
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_the_template_has_a_display_name_and_a_quickstart() -> None:
    section = template()
    assert section["displayName"].startswith("slotguard")
    quickstart = section["quickstart"]
    for needed in ("linux/arm64", "Concurrent executions", "quota - 100", "CONTRIBUTING.md"):
        assert needed in quickstart, needed


def test_the_template_prompts_for_the_lambda_concurrency_quota() -> None:
    entry = template()["config"]["slotguard:lambda_concurrency_quota"]
    # AWS's default concurrent-executions quota is 1,000 per region:
    # https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html (new accounts
    # start lower, which is why the quickstart asks for the account's own figure)
    assert entry["default"] == "1000"
    assert "Service Quotas" in entry["description"]


@pytest.mark.parametrize("stack", EXAMPLES)
def test_no_prompt_replaces_a_structured_setting_of_an_example(stack: str) -> None:
    example = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    for key in template()["config"]:
        assert not isinstance(example.get(key), dict | list), (
            f"the prompt for {key} would replace {stack}'s structured {key} with a string"
        )


def test_a_new_stack_from_the_defaults_is_deployable(tmp_path: Path) -> None:
    path = pulumi_new(tmp_path, "team")
    written = yaml.safe_load(path.read_text())["config"]
    assert all(isinstance(v, str) for v in written.values())  # one readable line per answer
    settings = load_stack("team", root=tmp_path)
    assert (settings.region, settings.environment, settings.lambda_concurrency_quota) == (
        "eu-west-1",
        "dev",
        1000,
    )
    budget = compute_budget(settings)
    assert budget.reserved_concurrency_total + 100 <= settings.lambda_concurrency_quota
    assert budget.pooler_kind == "pgbouncer"
    run = run_offline(settings)
    assert run.outputs["pooler_kind"] == "pgbouncer"


def _without_answers(settings: StackSettings) -> dict[str, Any]:
    data = settings.model_dump()
    for key in ("region", "environment", "lambda_concurrency_quota"):
        data.pop(key)
    return data


@pytest.mark.parametrize("stack", EXAMPLES)
def test_an_example_stack_keeps_its_structure_through_pulumi_new(
    tmp_path: Path, stack: str
) -> None:
    original = load_stack(stack)
    answers = {
        "aws:region": "eu-central-1",
        "slotguard:environment": original.environment,
        "slotguard:lambda_concurrency_quota": str(original.lambda_concurrency_quota),
    }
    pulumi_new(tmp_path, stack, answers)
    settings = load_stack(stack, root=tmp_path)
    assert settings.region == "eu-central-1"
    assert _without_answers(settings) == _without_answers(original)
    assert compute_budget(settings).pooler_kind == original.pooler.kind


def test_the_example_deploys_at_the_default_quota_and_a_smaller_one_is_named(
    tmp_path: Path,
) -> None:
    """`pulumi new` from the dev example holds at the prompt's default quota (1,000) and at a
    new account's 10 (it reserves nothing); reservations too large for a quota are refused
    before anything deploys, naming the setting."""
    pulumi_new(tmp_path, "dev")
    settings = load_stack("dev", root=tmp_path)
    assert settings.lambda_concurrency_quota == 1000
    budget = compute_budget(settings)
    assert budget.reserved_concurrency_total == 0
    compute_budget(settings.model_copy(update={"lambda_concurrency_quota": 10}))
    api = settings.functions["api"].model_copy(update={"reserved_concurrency": 900})
    reserving = settings.model_copy(
        update={"functions": {**settings.functions, "api": api}, "lambda_concurrency_quota": 1000}
    )
    with pytest.raises(BudgetError) as raised:
        compute_budget(reserving)
    assert any(v.setting == "lambda_concurrency_quota" for v in raised.value.violations)

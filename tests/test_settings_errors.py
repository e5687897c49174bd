"""Settings errors that say the fix: quoting, one cause reported once, a pool the kit can derive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.budget import BudgetError, compute_budget
from infra.settings import FunctionSettings, SettingsError, settings_from_mapping
from slotguard.settings_reference import render

ROOT = Path(__file__).resolve().parent.parent


def dev(**changes: Any) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    raw = {k.removeprefix("slotguard:"): v for k, v in config.items() if k.startswith("slotguard:")}
    for path, value in changes.items():
        section, key = path.split("__")
        raw.setdefault(section, {})[key] = value
    return raw


def test_numbers_are_taken_quoted_or_not_alike() -> None:
    # YAML reads `engine_version: 16` as a number and `reserved_concurrency: "200"` as text;
    # `pulumi config set` writes every value as text. Both spellings give the same settings.
    bare = settings_from_mapping(dev(database__engine_version=16), stack="dev")
    quoted = settings_from_mapping(dev(database__engine_version="16"), stack="dev")
    assert bare.database.engine_version == quoted.database.engine_version == "16"
    assert (
        FunctionSettings(
            handler="functions.api.handler",
            reserved_concurrency="200",
        ).reserved_concurrency
        == 200
    )


def test_a_float_engine_version_says_to_quote_it() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping(dev(database__engine_version=16.0), stack="dev")
    (problem,) = caught.value.problems
    assert problem.startswith("database.engine_version: ")
    assert 'in quotes: engine_version: "16"' in problem


def test_an_instance_class_typo_is_reported_once_with_the_class_it_meant() -> None:
    settings = settings_from_mapping(dev(database__instance_class="db.t4g.medum"), stack="dev")
    settings = settings.model_copy(
        update={"database": settings.database.model_copy(update={"max_connections": None})}
    )
    with pytest.raises(BudgetError) as caught:
        compute_budget(settings)
    (violation,) = caught.value.violations
    text = str(violation)
    assert "db.t4g.medum is not in the kit's memory table" in text
    assert "did you mean db.t4g.medium?" in text
    assert "database.instance_class" in text


def test_a_pool_too_big_suggests_letting_the_kit_derive_it() -> None:
    raw = dev()
    raw["pooler"]["pgbouncer"]["pool_size"] = 40
    with pytest.raises(BudgetError) as caught:
        compute_budget(settings_from_mapping(raw, stack="dev"))
    messages = [str(v) for v in caught.value.violations if v.setting.endswith("pool_size")]
    assert messages, caught.value.violations
    raw["pooler"]["pgbouncer"].pop("pool_size")
    derived = compute_budget(settings_from_mapping(raw, stack="dev")).pgbouncer
    assert derived is not None
    expected = (
        "remove pooler.pgbouncer.pool_size and the kit derives the largest that fits "
        f"({derived.pool_size} per process)"
    )
    assert expected in messages[0]


def test_the_reference_calls_no_defaulted_setting_required() -> None:
    for row in render().splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        setting, default, description = cells[0], cells[1], cells[2]
        if default != "required":
            assert "Required" not in description, f"{setting} has default {default}"

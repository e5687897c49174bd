"""Stack settings: defaults, validation errors that name the setting, and the stack files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import (
    SettingsError,
    StackSettings,
    load_stack,
    settings_from_mapping,
    settings_from_pulumi_config,
)

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_load_and_cover_every_section():
    settings = settings_from_mapping({}, stack="s")
    assert settings.pooler.kind == "pgbouncer"
    assert set(settings.functions) == {"api", "health"}
    assert settings.network.mode == "new-vpc"
    assert settings.is_prod is False
    assert settings.backup_retention_days == 1


def test_prod_turns_on_protection_backups_and_multi_az():
    settings = settings_from_mapping({"environment": "prod"}, stack="p")
    assert settings.deletion_protection
    assert settings.multi_az
    assert settings.backup_retention_days == 7


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"database": {"max_conections": 25}},
            "database.max_conections: unknown setting; did you mean `database.max_connections`?",
        ),
        ({"databse": {}}, "databse: unknown setting; did you mean `database`?"),
        (
            {"pooler": {"pgbouncer": {"pool_sise": 3}}},
            "did you mean `pooler.pgbouncer.pool_size`?",
        ),
        (
            {"functions": {"api": {"handler": "functions.api.handler", "timout_s": 3}}},
            "did you mean `functions.api.timeout_s`?",
        ),
    ],
)
def test_unknown_key_suggests_the_nearest_known_one(raw, expected):
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping(raw, stack="s")
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"database": {"max_connections": "lots"}}, "database.max_connections"),
        ({"database": {"max_connections": 3}}, "database.max_connections"),
        (
            {"functions": {"api": {"handler": "functions.api.handler", "timeout_s": 901}}},
            "functions.api.timeout_s",
        ),
        ({"functions": {"api": {"handler": "api.handler"}}}, "functions.api.handler"),
        ({"pooler": {"kind": "pgpool"}}, "pooler.kind"),
        ({"network": {"mode": "existing"}}, "network"),
        ({"alarms": {"warn_percent": 90, "critical_percent": 80}}, "alarms"),
        ({"environment": "staging"}, "environment"),
    ],
)
def test_wrong_type_or_range_names_the_full_path(raw, path):
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping(raw, stack="s")
    assert any(problem.startswith(f"{path}:") for problem in caught.value.problems), (
        caught.value.problems
    )


def test_pulumi_config_values_arrive_as_json_text():
    config = {
        "aws:region": "eu-west-1",
        "slotguard:database": '{"max_connections": 40}',
        "slotguard:environment": "prod",
        "other:thing": "ignored",
    }
    settings = settings_from_pulumi_config(config, stack="x")
    assert settings.database.max_connections == 40
    assert settings.region == "eu-west-1"
    assert settings.is_prod


def test_pooler_kind_shorthand_from_template_prompt():
    settings = settings_from_pulumi_config({"slotguard:pooler": "rds-proxy"}, stack="x")
    assert settings.pooler.kind == "rds-proxy"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_shipped_stacks_load(stack):
    settings = load_stack(stack)
    assert isinstance(settings, StackSettings)
    assert settings.stack == stack


def test_dev_stack_is_the_small_plan():
    assert load_stack("dev").database.max_connections == 25


def test_missing_stack_file_lists_the_available_ones():
    with pytest.raises(SettingsError, match=r"Pulumi\.nope\.yaml.*Pulumi\.dev\.yaml"):
        load_stack("nope")


def test_every_setting_documents_its_default():
    """Every field carries a description: the settings reference is generated from them."""

    def walk(model: Any, prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                missing += walk(annotation, f"{prefix}{name}.")
            elif not field.description and name not in {"network", "database"}:
                missing.append(prefix + name)
        return missing

    from infra.settings import FunctionSettings

    undocumented = [
        path
        for path in walk(StackSettings, "") + walk(FunctionSettings, "functions.*.")
        if path not in {"pooler.pgbouncer", "pooler.rds_proxy", "functions"}
    ]
    assert undocumented == []


def test_bad_yaml_is_a_settings_error(tmp_path):
    (tmp_path / "Pulumi.bad.yaml").write_text("config: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_stack("bad", root=tmp_path)


def test_stack_file_round_trip(tmp_path):
    document = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    document["config"]["slotguard:database"]["max_connections"] = 60
    (tmp_path / "Pulumi.copy.yaml").write_text(yaml.safe_dump(document))
    assert load_stack("copy", root=tmp_path).database.max_connections == 60

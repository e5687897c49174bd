"""Fuzzing the settings loader and the budget: every input loads or gets an error naming a
setting; none ends in a traceback."""

from __future__ import annotations

import string
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from infra.budget import BudgetError, compute_budget
from infra.settings import (
    FunctionSettings,
    SettingsError,
    StackSettings,
    load_stack,
    settings_from_mapping,
)
from slotguard.cli import app

KNOWN_TOP = [k for k in StackSettings.model_fields if k not in {"stack", "region"}]
KNOWN_KEYS = sorted(
    {name for model in (StackSettings, FunctionSettings) for name in model.model_fields}
    | {
        name
        for field in StackSettings.model_fields.values()
        if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields")
        for name in field.annotation.model_fields
    }
    | {"pgbouncer", "rds_proxy", "kind", "pool_size", "max_connections", "handler"}
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=20),
    st.sampled_from(["pgbouncer", "rds-proxy", "functions.api.handler", "prod", "16.4", "{", "[]"]),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(string.ascii_lowercase + "_-", max_size=12))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
documents = st.dictionaries(st.one_of(st.sampled_from(KNOWN_TOP), keys), values, max_size=6)


def _paths_named(problems: list[str]) -> bool:
    return all(
        ":" in problem and problem.split(":", 1)[0].strip() and "Traceback" not in problem
        for problem in problems
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_mapping_loads_or_names_a_setting(raw):
    try:
        loaded = settings_from_mapping(raw, stack="fuzz")
    except SettingsError as error:
        assert error.problems
        assert _paths_named(error.problems), error.problems
        return
    try:
        compute_budget(loaded)
    except BudgetError as error:
        assert error.violations
        assert all(v.setting and v.message for v in error.violations)


yaml_texts = st.one_of(
    st.text(max_size=200),
    documents.map(
        lambda d: yaml.safe_dump({"config": {f"slotguard:{k}": v for k, v in d.items()}})
    ),
    documents.map(lambda d: yaml.safe_dump({"config": d})),
    documents.map(yaml.safe_dump),
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=yaml_texts)
def test_any_stack_file_loads_or_names_a_setting(tmp_path_factory, text):
    root: Path = tmp_path_factory.mktemp("stack")
    (root / "Pulumi.fuzz.yaml").write_text(text)
    try:
        load_stack("fuzz", root=root)
    except SettingsError as error:
        assert _paths_named(error.problems), error.problems


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=yaml_texts)
def test_cli_answers_0_or_2_never_a_traceback(tmp_path_factory, text):
    root: Path = tmp_path_factory.mktemp("cli")
    (root / "Pulumi.fuzz.yaml").write_text(text)
    result = CliRunner().invoke(app, ["budget", "--stack", "fuzz", "--project-dir", str(root)])
    assert result.exit_code in (0, 2), (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)

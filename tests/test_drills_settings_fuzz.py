"""Bad input, second sweep: the shipped stack files with one setting mutated at a time.

`tests/test_fuzz_settings.py` fuzzes free-form documents, which rarely get past the loader, so the
budget's arithmetic is seldom reached. Starting from the real example stacks and changing one leaf
(a wrong type, a boundary number, a huge or negative value, a missing key) keeps every other
setting valid, so each mutation lands on one check of the loader or the budget. Every outcome must
be a loaded stack with a budget, or an error whose every problem names the setting to change.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.budget import BudgetError, compute_budget
from infra.settings import SettingsError, load_stack

KIT_ROOT = Path(__file__).resolve().parents[1]
STACK_FILES = sorted(KIT_ROOT.glob("Pulumi.*.yaml"))
DOCUMENTS = {p.name: yaml.safe_load(p.read_text()) for p in STACK_FILES if p.name != "Pulumi.yaml"}


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        found = [path] if path else []
        for key, value in node.items():
            found += _leaves(value, (*path, key))
        return found
    if isinstance(node, list):
        return [path] + [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))]
    return [path]


PATHS = [(name, path) for name, doc in DOCUMENTS.items() for path in _leaves(doc) if path]

boundary_numbers = st.sampled_from(
    [0, 1, -1, 2, 3, 5, 9, 10, 59, 60, 349, 350, 351, 900, 901, 1024, 5000, 5001, 10**6, 2**31]
)
replacements = st.one_of(
    boundary_numbers,
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["pgbouncer", "rds-proxy", "db.t4g.micro", "db.r6g.large", "16.4", "1e3"]),
    st.lists(st.integers(0, 10), max_size=2),
    st.dictionaries(st.sampled_from(["x", "pool_size", "tasks"]), st.integers(-5, 50), max_size=2),
)
DELETE = object()


def _mutate(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    mutated = copy.deepcopy(document)
    node = mutated
    for part in path[:-1]:
        node = node[part]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return mutated


def _names_a_setting(problem: str) -> bool:
    head = problem.split(":", 1)[0].strip()
    return ":" in problem and bool(head) and "Traceback" not in problem


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(target=st.sampled_from(PATHS), value=st.one_of(replacements, st.just(DELETE)))
def test_one_mutated_setting_loads_or_names_what_to_change(
    target: tuple[str, tuple[Any, ...]], value: Any
) -> None:
    name, path = target
    document = _mutate(DOCUMENTS[name], path, value)
    root = Path(tempfile.mkdtemp(prefix="slotguard-fuzz-"))
    stack = name.removeprefix("Pulumi.").removesuffix(".yaml")
    (root / name).write_text(yaml.safe_dump(document))
    try:
        loaded = load_stack(stack, root=root)
    except SettingsError as error:
        assert error.problems
        assert all(_names_a_setting(p) for p in error.problems), error.problems
        return
    try:
        budget = compute_budget(loaded)
    except BudgetError as error:
        assert error.violations
        assert all(v.setting and v.message for v in error.violations), error.violations
        return
    # Accepted: the budget's own invariants hold for what it accepted.
    assert budget.pooler_ceiling <= budget.max_connections
    assert budget.app_user.connection_limit <= budget.pooler_ceiling


def test_the_shipped_stacks_load_unchanged() -> None:
    assert DOCUMENTS
    for name in DOCUMENTS:
        stack = name.removeprefix("Pulumi.").removesuffix(".yaml")
        compute_budget(load_stack(stack, root=KIT_ROOT))


def _with_cidr(value: Any) -> Path:
    document = _mutate(
        DOCUMENTS["Pulumi.prod.yaml"], ("config", "slotguard:network", "cidr"), value
    )
    root = Path(tempfile.mkdtemp(prefix="slotguard-cidr-"))
    (root / "Pulumi.prod.yaml").write_text(yaml.safe_dump(document))
    return root


def test_a_cidr_that_is_not_text_or_not_a_vpc_size_names_network_cidr() -> None:
    # Found by the sweep above: `cidr: true` loaded as 0.0.0.1/32 and `cidr: 5` as 0.0.0.5/32.
    for bad in (True, 5, 167772160, "10.0.0.0/8", "10.0.0.0/27"):
        try:
            load_stack("prod", root=_with_cidr(bad))
        except SettingsError as error:
            assert any(p.startswith("network.cidr:") for p in error.problems), error.problems
        else:
            raise AssertionError(f"cidr {bad!r} must be refused")
    assert str(load_stack("prod", root=_with_cidr("10.60.0.0/25")).network.cidr) == "10.60.0.0/25"

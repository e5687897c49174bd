"""Figures the docs and the example stacks quote agree with the budget that computes them.

docs/functions.md's example is generated (`make docs`); the stack files' comments are prose, so
each figure they quote is read back here and compared with the budget of that stack.
"""

from __future__ import annotations

import re
from pathlib import Path

from infra.budget import BOOTSTRAP_RESERVED_CONCURRENCY, compute_budget, reserved_total
from infra.settings import StackSettings, load_stack
from slotguard.docs_figures import (
    END,
    README_END,
    README_START,
    START,
    render,
    render_broken_pool,
)

ROOT = Path(__file__).resolve().parent.parent


def _flat(text: str) -> str:
    return " ".join(text.replace("#", " ").split())


def _assert_reservations_quoted(settings: StackSettings, text: str, *, prefix: str) -> None:
    """A stack that reserves is quoted with its sum; one that reserves nothing says `null`."""
    reserved = {n: f.reserved_concurrency for n, f in settings.functions.items()}
    if all(r is None for r in reserved.values()):
        assert "reserved_concurrency: null" in text
        return
    parts = " + ".join(f"{n} {r}" for n, r in reserved.items() if r is not None)
    total = reserved_total(list(reserved.values()))
    assert f"{prefix}{parts} + bootstrap {BOOTSTRAP_RESERVED_CONCURRENCY} = {total}" in text


def test_functions_page_example_is_generated_from_the_budget() -> None:
    page = (ROOT / "docs" / "functions.md").read_text()
    block = page.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == render().strip(), "docs/functions.md is stale: run `make docs`"


def test_the_dev_stack_comments_match_its_budget() -> None:
    settings = load_stack("dev", ROOT)
    budget = compute_budget(settings)
    text = _flat((ROOT / "Pulumi.dev.yaml").read_text())
    db = settings.database
    m, admin = budget.max_connections, budget.admin_margin
    assert db.reserved_connections + db.rds_superuser_reserved_connections == (
        budget.reserved_connections
    )
    assert (
        f"{m} slots: {db.reserved_connections} superuser + "
        f"{db.rds_superuser_reserved_connections} rds_superuser reserved, {admin} admin, "
        f"{budget.pooler_ceiling} for the pooler" in text
    )
    pb = budget.pgbouncer
    assert pb is not None
    peak = pb.deploy.peak_tasks
    per_process = pb.pool_size + pb.reserve_pool
    assert f"{peak} x ({pb.pool_size} + {pb.reserve_pool} reserve) = {peak * per_process}" in text
    warn = budget.alarms.db_connections_warn
    assert f"{settings.alarms.warn_percent}% of {m} = {warn}" in text
    assert f"{pb.processes} x {per_process} = {budget.pooler_server_connections}" in text
    _assert_reservations_quoted(settings, text, prefix="")


def test_the_prod_stack_comments_match_its_budget() -> None:
    budget = compute_budget(load_stack("prod", ROOT))
    text = _flat((ROOT / "Pulumi.prod.yaml").read_text())
    proxy = budget.rds_proxy
    assert proxy is not None
    m = budget.max_connections
    assert f"max_connections derived by RDS's formula ({m})" in text
    found = re.search(r"\((\d+)% of (\d+) = (\d+) < (\d+)% = (\d+) less", text)
    assert found is not None
    percent, of, proxy_connections, _, warn = map(int, found.groups())
    assert (percent, of) == (proxy.max_connections_percent, m)
    assert proxy_connections == proxy.proxy_connections
    assert warn == budget.alarms.db_connections_warn


def test_the_readme_quotes_the_dev_budget() -> None:
    settings = load_stack("dev", ROOT)
    budget = compute_budget(settings)
    pb = budget.pgbouncer
    assert pb is not None
    d = pb.deploy
    per_task = pb.server_connections_per_task
    text = _flat((ROOT / "README.md").read_text())
    _assert_reservations_quoted(settings, text, prefix="reserves ")
    assert (
        f"at most {d.peak_tasks} tasks x {per_task} = {d.server_connections_peak} server "
        f"connections, within the {budget.pooler_limit}"
    ) in text
    assert f"(and the ceiling of {budget.pooler_ceiling})" in text
    assert f"{pb.processes} x {per_task} = {budget.pooler_server_connections} in steady" in text
    assert f"A deploy takes at most {d.deploy_worst_s} s" in text
    readme = (ROOT / "README.md").read_text()
    block = readme.split(README_START, 1)[1].split(README_END, 1)[0].strip()
    assert block == render_broken_pool().strip(), "README.md is stale: run `make docs`"

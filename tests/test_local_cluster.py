"""The local target renders an Aurora stack's pooler like the ECS task: read pool and failover."""

from __future__ import annotations

from infra.budget import compute_budget
from infra.budget_cluster import pgbouncer_fields
from infra.settings import load_stack
from pgbouncer.config import ReadTarget
from slotguard.local.cluster import pgbouncer_cluster_fields


def test_aurora_stack_gets_the_read_pool_and_failover_settings() -> None:
    budget = compute_budget(load_stack("aurora"))
    fields = pgbouncer_cluster_fields(budget, reader_port=6543)
    read = fields["read_database"]
    assert isinstance(read, ReadTarget)
    assert budget.read_pool is not None
    assert (read.alias, read.port, read.pool_size, read.max_db_connections) == (
        "app_ro",
        6543,
        budget.read_pool.pool_size,
        budget.read_pool.max_db_connections,
    )
    assert fields["writer_guard"] is True
    # The same numbers the ECS task is given.
    task = pgbouncer_fields(budget.read_pool, budget.failover)
    assert str(fields["dns_max_ttl_s"]) == task["DNS_MAX_TTL_S"]
    assert str(fields["server_check_delay_s"]) == task["SERVER_CHECK_DELAY_S"]


def test_instance_and_existing_stacks_render_as_before() -> None:
    for stack in ("dev", "prod", "existing"):
        budget = compute_budget(load_stack(stack))
        assert pgbouncer_cluster_fields(budget, reader_port=1) == {}
        assert pgbouncer_fields(budget.read_pool, budget.failover) == {}

"""The local target's rendering of an Aurora stack's pooler: the read pool and failover settings.

The same numbers the ECS task gets (infra/budget_cluster.py `pgbouncer_fields`), as
`PgBouncerSettings` fields. The read pool points at `reader_port`: the local server itself
(a plain single server rehearses the pooled read-only connection), or a streaming replica where
the local target runs one.
"""

from __future__ import annotations

from infra.budget import Budget
from pgbouncer.config import ReadTarget

LOCALHOST = "127.0.0.1"


def pgbouncer_cluster_fields(budget: Budget, *, reader_port: int) -> dict[str, object]:
    """Extra `PgBouncerSettings` fields for an Aurora budget; empty for the other kinds."""
    fields: dict[str, object] = {}
    fo, rp = budget.failover, budget.read_pool
    if fo is not None:
        fields["writer_guard"] = True
        fields["dns_max_ttl_s"] = fo.dns_max_ttl_s
        fields["server_check_delay_s"] = fo.server_check_delay_s
    if rp is not None and rp.max_db_connections is not None and rp.pool_size is not None:
        fields["read_database"] = ReadTarget(
            host=LOCALHOST,
            port=reader_port,
            alias=rp.database_alias,
            pool_size=rp.pool_size,
            max_db_connections=rp.max_db_connections,
        )
    return fields

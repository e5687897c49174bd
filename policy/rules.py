"""The pack's rules in report order: the one list the CrossGuard pack and the offline runner use.

The rules themselves live by subject in `policy.connectivity`, `policy.capacity` and
`policy.hygiene`; `policy.base` holds what they share.
"""

from __future__ import annotations

from typing import Any

from policy.base import Finding, Rule, RuleConfigError
from policy.capacity import (
    AlarmsConfig,
    AppUserConfig,
    BudgetConfig,
    FunctionsConfig,
    check_alarms,
    check_app_user,
    check_budget,
    check_functions,
)
from policy.connectivity import (
    NetworkConfig,
    ThroughPoolerConfig,
    TlsConfig,
    check_database_tls,
    check_network,
    check_through_pooler,
)
from policy.databases import (
    AuroraConfig,
    ExistingDatabaseConfig,
    check_aurora,
    check_existing_untouched,
)
from policy.hygiene import (
    ProductionConfig,
    ReapingConfig,
    SecretsConfig,
    check_production,
    check_reaping,
    check_secrets,
)

__all__ = ["RULES", "Finding", "Rule", "RuleConfigError", "config_json_schema", "rule_named"]


# -- the pack's rules, in report order -----------------------------------------------------------

RULES: tuple[Rule[Any], ...] = (
    Rule(
        "functions-through-pooler",
        "Functions connect through the pooler: no function's configuration depends on the "
        "database instance's endpoint.",
        ThroughPoolerConfig,
        check_through_pooler,
    ),
    Rule(
        "no-direct-network-path",
        "No security-group path from the functions to the database, and no ingress from 0.0.0.0/0.",
        NetworkConfig,
        check_network,
    ),
    Rule(
        "database-private-tls",
        "The database is private, encrypted and forces TLS; the pooler requires TLS.",
        TlsConfig,
        check_database_tls,
    ),
    Rule(
        "connection-budget",
        "Pooler server connections fit max_connections minus reserved slots and the admin "
        "margin; the pooler's client capacity covers the functions' reserved concurrency, and the "
        "account's whole concurrency where a function is unreserved.",
        BudgetConfig,
        check_budget,
    ),
    Rule(
        "app-user-timeouts",
        "The application role is created with a bounded statement_timeout and an "
        "idle-in-transaction timeout.",
        AppUserConfig,
        check_app_user,
    ),
    Rule(
        "connection-alarms",
        "Database-connection alarms exist at or below the configured percentages, and every "
        "alarm has an action on a topic CloudWatch can publish to.",
        AlarmsConfig,
        check_alarms,
    ),
    Rule(
        "function-limits",
        "No function is reserved at 0, and every function's timeout exceeds the statement "
        "timeout plus the pooler's queue wait (unreserved functions are bounded by "
        "connection-budget).",
        FunctionsConfig,
        check_functions,
    ),
    Rule(
        "no-plaintext-secrets",
        "No plaintext secrets in function environments or task definitions.",
        SecretsConfig,
        check_secrets,
    ),
    Rule(
        "idle-client-reaping",
        "RDS Proxy's idle client timeout and PgBouncer's client_idle_timeout reap frozen "
        "instances; PgBouncer pools transactions.",
        ReapingConfig,
        check_reaping,
    ),
    Rule(
        "production-safety",
        "Production databases have deletion protection, backups and a final snapshot.",
        ProductionConfig,
        check_production,
    ),
    Rule(
        "aurora-cluster",
        "Aurora clusters are encrypted and force TLS, their instances are private, and "
        "production clusters have deletion protection, backups and a final snapshot.",
        AuroraConfig,
        check_aurora,
    ),
    Rule(
        "existing-database-untouched",
        "A stack around an existing database declares no RDS instance, cluster, parameter "
        "group or other RDS resource that could modify, replace or delete it.",
        ExistingDatabaseConfig,
        check_existing_untouched,
    ),
)


def rule_named(name: str) -> Rule[Any]:
    for rule in RULES:
        if rule.name == name:
            return rule
    raise KeyError(f"no policy named {name!r} (known: {', '.join(r.name for r in RULES)})")


def config_json_schema() -> dict[str, Any]:
    """Every rule's config schema, keyed by policy name."""
    return {r.name: r.schema_properties() for r in RULES}

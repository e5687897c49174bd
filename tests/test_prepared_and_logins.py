"""Prepared statements where the pooler keeps them, and the cold burst's login time.

The budget derives `max_prepared_statements` and tells the functions (`DB_PREPARE_THRESHOLD`)
whether to prepare; the helper prepares through PgBouncer 1.21+ and fails the way the driver suite
shows when the pooler does not keep them. The budget also shows how long the largest cold burst
takes to log in at the measured rate, and warns with the arithmetic where that is longer than a
function's connect window.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from functions.config import ConfigurationError, load_settings
from functions.credentials import SecretCredentials
from functions.db import Database
from functions.errors import DatabaseUnavailableError
from infra.budget import DEFAULT_MAX_PREPARED_STATEMENTS, BudgetError, compute_budget
from infra.pooler_logins import MEASURED_LOGINS_PER_CPU_SECOND, admission, vcpu_per_process
from infra.settings import settings_from_mapping
from slotguard.cli import app
from tests.fixtures_functions import FakeLambdaContext, make_stack

ROOT = Path(__file__).resolve().parent.parent

BASE: dict[str, Any] = {
    "database": {"max_connections": 25},
    "pooler": {"kind": "pgbouncer", "pgbouncer": {"tasks": 2, "pool_size": 4}},
    "functions": {
        "api": {"handler": "functions.api.handler", "reserved_concurrency": 300},
    },
}


def budget_with(**pgbouncer: Any):
    raw = copy.deepcopy(BASE)
    raw["pooler"]["pgbouncer"].update(pgbouncer)
    return compute_budget(settings_from_mapping(raw, stack="t"))


# -- max_prepared_statements and the functions' threshold -----------------------------------------


def test_pgbouncer_1_21_and_later_keep_200_prepared_statements_and_functions_prepare():
    b = budget_with(version="1.24.1")
    assert b.pgbouncer is not None
    assert b.pgbouncer.max_prepared_statements == DEFAULT_MAX_PREPARED_STATEMENTS == 200
    assert b.function_environment("api")["DB_PREPARE_THRESHOLD"] == "5"
    older = budget_with(version="1.21.0").pgbouncer
    assert older is not None
    assert older.max_prepared_statements == 200


def test_older_pgbouncer_gets_none_and_functions_do_not_prepare():
    b = budget_with(version="1.18.0")
    assert b.pgbouncer is not None
    assert b.pgbouncer.max_prepared_statements == 0
    assert b.function_environment("api")["DB_PREPARE_THRESHOLD"] == "off"


def test_turning_it_off_turns_the_functions_off():
    b = budget_with(max_prepared_statements=0)
    assert b.function_environment("api")["DB_PREPARE_THRESHOLD"] == "off"


def test_asking_an_old_pgbouncer_for_prepared_statements_names_the_setting():
    with pytest.raises(BudgetError, match=r"pooler\.pgbouncer\.max_prepared_statements: 50 needs"):
        budget_with(version="1.18.0", max_prepared_statements=50)


def test_rds_proxy_functions_never_prepare():
    # RDS Proxy's documented pinning conditions include prepared statements:
    # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy-pinning.html
    raw = copy.deepcopy(BASE)
    raw["pooler"] = {"kind": "rds-proxy"}
    b = compute_budget(settings_from_mapping(raw, stack="t"))
    assert b.function_environment("api")["DB_PREPARE_THRESHOLD"] == "off"


def test_the_image_gets_the_budgets_number():
    """The task definition the program renders carries the budget's number to the image."""
    import json

    from infra.offline import run_offline

    settings = settings_from_mapping(BASE, stack="t")
    b = compute_budget(settings)
    assert b.pgbouncer is not None
    run = run_offline(settings)
    (container,) = json.loads(
        run.one("aws:ecs/taskDefinition:TaskDefinition").input("containerDefinitions")
    )
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["PGBOUNCER_MAX_PREPARED_STATEMENTS"] == str(b.pgbouncer.max_prepared_statements)
    assert b.pgbouncer.max_prepared_statements == DEFAULT_MAX_PREPARED_STATEMENTS


@pytest.mark.parametrize(
    ("value", "expected"), [("off", None), ("OFF", None), ("5", 5), ("0", 0), (None, None)]
)
def test_the_threshold_is_read_from_the_environment(value, expected):
    env = {"DB_HOST": "h", "DB_NAME": "app", "DB_SECRET_ARN": "arn:x"}
    if value is not None:
        env["DB_PREPARE_THRESHOLD"] = value
    assert load_settings(env).prepare_threshold == expected


def test_a_bad_threshold_is_named():
    env = {"DB_HOST": "h", "DB_NAME": "app", "DB_SECRET_ARN": "arn:x", "DB_PREPARE_THRESHOLD": "x"}
    with pytest.raises(ConfigurationError, match="DB_PREPARE_THRESHOLD"):
        load_settings(env)


# -- the helper through a real PgBouncer -----------------------------------------------------------


def _helpers(stack, aws_env, threshold: str, count: int = 2) -> list[Database]:
    arn = aws_env.put_secret(stack.secret_value())
    settings = load_settings(stack.env(secret_arn=arn, DB_PREPARE_THRESHOLD=threshold))
    return [
        Database(settings, SecretCredentials(arn, settings.user), f"fn-prep-{threshold}-{i}")
        for i in range(count)
    ]


def _run(helpers: list[Database], rounds: int = 12) -> None:
    for i in range(rounds):
        for db in helpers:
            with db.transaction(FakeLambdaContext(db.application_name)) as conn:
                row = conn.execute("select %s::int * 2 as twice", (i,)).fetchone()
                assert row == {"twice": 2 * i}


@pytest.mark.integration
def test_the_helper_prepares_through_pgbouncer_that_keeps_them(
    postgres_factory, pgbouncer_factory, aws_env
):
    stack = make_stack(
        postgres_factory, pgbouncer_factory, max_connections=20, pool_size=1,
        max_prepared_statements=DEFAULT_MAX_PREPARED_STATEMENTS,
    )  # fmt: skip
    helpers = _helpers(stack, aws_env, "5")
    _run(helpers)  # two clients, one server connection, each prepares the same statement name
    clients = {
        str(r["application_name"]): r
        for r in stack.bouncer.show("CLIENTS")
        if str(r.get("application_name", "")).startswith("fn-prep-")
    }
    assert len(clients) == 2
    # PgBouncer counts the statements it tracks for each client (SHOW CLIENTS, 1.21+).
    assert all(int(str(r["prepared_statements"])) >= 1 for r in clients.values()), clients
    for db in helpers:
        db.close()


@pytest.mark.integration
def test_the_helper_would_break_where_the_pooler_does_not_keep_them(functions_stack, aws_env):
    # functions_stack's pooler runs with max_prepared_statements = 0: what "only there" avoids.
    helpers = _helpers(functions_stack, aws_env, "5")
    # psycopg prepares the helper's own BEGIN too, so the collision may surface there.
    with pytest.raises((psycopg.errors.DuplicatePreparedStatement, DatabaseUnavailableError)) as e:
        _run(helpers)
    assert 'prepared statement "_pg3_' in str(e.value)
    for db in helpers:
        db.close()
    _run(_helpers(functions_stack, aws_env, "off"))  # the budget's "off" works there


# -- the cold burst's login time -----------------------------------------------------------------


def test_a_process_gets_its_share_of_the_task_and_at_most_one_vcpu():
    assert vcpu_per_process(256, 1) == 0.25
    assert vcpu_per_process(1024, 2) == 0.5
    assert vcpu_per_process(4096, 2) == 1.0  # single-threaded: one core at most


def test_admission_time_is_the_burst_over_every_process_rate():
    a = admission(1000, tasks=2, processes_per_task=1, task_cpu_units=256)
    rate = MEASURED_LOGINS_PER_CPU_SECOND * 0.25
    assert a.logins_per_second_per_process == rate
    assert a.seconds == pytest.approx(1000 / (2 * rate))


def test_the_budget_shows_the_admission_time_and_stays_quiet_when_it_fits():
    b = budget_with()
    assert b.pgbouncer is not None
    assert b.pgbouncer.cold_burst_clients == 300
    assert b.pgbouncer.cold_burst_admission_s == pytest.approx(
        300 / (2 * MEASURED_LOGINS_PER_CPU_SECOND * 0.25)
    )
    assert not b.warnings
    assert any(f.key == "pgbouncer.cold_burst_admission" for f in b.figures)


def test_a_burst_longer_than_the_connect_window_is_warned_with_the_arithmetic():
    raw = copy.deepcopy(BASE)
    raw["lambda_concurrency_quota"] = 10_000
    raw["functions"]["api"]["reserved_concurrency"] = 4000
    raw["functions"]["api"].update(connect_timeout_s=3, retry_budget_s=4)
    b = compute_budget(settings_from_mapping(raw, stack="t"))
    assert b.pgbouncer is not None
    seconds = 4000 / (2 * MEASURED_LOGINS_PER_CPU_SECOND * 0.25)
    assert seconds > 7
    (warning,) = b.warnings
    assert warning.startswith("functions.api: a cold burst takes 4000 cold instances / (2 ")
    assert f"= {seconds:.1f} s" in warning
    assert "connect timeout 3 s + retry budget 4 s = 7 s" in warning
    assert "pooler.pgbouncer.cpu" in warning
    # A bigger task admits it in time, and the warning goes away.
    raw["pooler"]["pgbouncer"]["cpu"] = 1024
    raw["pooler"]["pgbouncer"]["memory_mb"] = 2048
    assert not compute_budget(settings_from_mapping(raw, stack="t")).warnings


def test_slotguard_budget_prints_the_warning(tmp_path):
    document = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    config = document["config"]
    config["slotguard:lambda_concurrency_quota"] = 10_000
    config["slotguard:functions"] = {  # the kit's own handler: a fork may remove the API
        "api": {"handler": "functions.health.handler", "reserved_concurrency": 4000}
    }
    (tmp_path / "Pulumi.big.yaml").write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(app, ["budget", "--stack", "big", "--project-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    text = re.sub(r"\s+", " ", result.output)
    assert "pgbouncer.cold_burst_admission" in text
    assert "warning: functions.api: a cold burst takes 4000 cold instances" in text

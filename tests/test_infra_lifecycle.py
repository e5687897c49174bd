"""A running stack's next change: major upgrades, replacements refused, protection (offline).

The program reads the running instance from RDS at preview (`infra.deployed`); here the offline
account plays that instance (`MockAccount.database`) and the real program runs under mocks.
"""

from __future__ import annotations

import inspect
from typing import Any

import pulumi_aws as aws
import pytest

from infra import lifecycle
from infra.lifecycle import DeployedDatabase, plan
from infra.offline import MockAccount, OfflineRun, run_offline, variant_settings
from infra.settings import SettingsError, StackSettings

INSTANCE = "aws:rds/instance:Instance"
GROUP = "aws:rds/parameterGroup:ParameterGroup"


def with_database(settings: StackSettings, **changes: Any) -> StackSettings:
    return settings.model_copy(update={"database": settings.database.model_copy(update=changes)})


def running(settings: StackSettings, version: str = "16.10", **changes: Any) -> DeployedDatabase:
    fields: dict[str, Any] = {
        "identifier": f"slotguard-{settings.stack}-instance-abc1234",
        "engine_version": version,
        "db_name": "app",
        "storage_encrypted": True,
        "username": "postgres",
        **changes,
    }
    return DeployedDatabase(**fields)


def deploy(settings: StackSettings, deployed: DeployedDatabase | None) -> OfflineRun:
    return run_offline(settings, account=MockAccount(database=deployed))


# -- facts the plan relies on -------------------------------------------------------------------


def test_replace_forcing_inputs_are_the_providers_force_new_arguments() -> None:
    # terraform-provider-aws internal/service/rds/instance.go, ResourceInstance schema: the
    # arguments with `ForceNew: true` (availability_zone, character_set_name,
    # custom_iam_instance_profile, db_name, engine, identifier, identifier_prefix, kms_key_id,
    # nchar_character_set_name, restore_to_point_in_time, s3_import's fields, snapshot_identifier,
    # storage_encrypted, timezone, username; `name`, its deprecated alias of db_name, is gone from
    # pulumi-aws 7), and website/docs/r/db_instance.html.markdown: "`backup_target` - (Optional,
    # Forces new resource)". engine_version, instance_class, db_subnet_group_name and
    # parameter_group_name are not ForceNew: they modify in place.
    assert set(lifecycle.REPLACING_INPUTS) == {
        "availability_zone",
        "backup_target",
        "character_set_name",
        "custom_iam_instance_profile",
        "db_name",
        "engine",
        "identifier",
        "identifier_prefix",
        "kms_key_id",
        "nchar_character_set_name",
        "restore_to_point_in_time",
        "s3_import",
        "snapshot_identifier",
        "storage_encrypted",
        "timezone",
        "username",
    }
    for argument in lifecycle.REPLACING_INPUTS:
        assert argument in inspect.signature(aws.rds.Instance._internal_init).parameters


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_every_replace_forcing_input_the_program_sets_is_compared(variant: str) -> None:
    """A replace-forcing argument the program renders but the guard ignores would slip by."""
    run = run_offline(variant_settings(variant))
    instance = run.one(INSTANCE)
    camel = {
        "".join(w.capitalize() if i else w for i, w in enumerate(a.split("_"))): a
        for a in lifecycle.REPLACING_INPUTS
    }
    rendered = {camel[k] for k in instance.inputs if k in camel}
    assert rendered == set(lifecycle.desired_replacing_inputs(run.settings))


def test_blue_green_update_is_a_block_with_enabled() -> None:
    # pulumi-aws rds.Instance: "blue_green_update: Enables low-downtime updates using RDS
    # Blue/Green deployments"; InstanceBlueGreenUpdateArgs(enabled): "Enables low-downtime
    # updates when `true`. Default is `false`."
    assert "blue_green_update" in inspect.signature(aws.rds.Instance._internal_init).parameters
    assert list(inspect.signature(aws.rds.InstanceBlueGreenUpdateArgs).parameters) == ["enabled"]
    assert (
        "allow_major_version_upgrade"
        in inspect.signature(aws.rds.Instance._internal_init).parameters
    )


def test_pgbouncer_dns_cache_default_is_what_the_plan_states() -> None:
    # PgBouncer doc/config.md, dns_max_ttl: "How long DNS lookups can be cached. The actual DNS
    # TTL is ignored. Default: 15.0". The kit's rendered configuration leaves it unset.
    from pgbouncer.config import render_ini

    assert lifecycle.PGBOUNCER_DNS_MAX_TTL_S == 15.0
    assert "dns_max_ttl" not in inspect.getsource(render_ini)


# -- protection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "protected"), [("dev", False), ("prod", True)])
def test_database_protected_by_default_in_prod_only(variant: str, protected: bool) -> None:
    # Pulumi refuses to replace or delete a protected resource, at preview too:
    # pulumi/pulumi#8810 ("Don't allow protected resources to be replaced") and #15969 (preview
    # shows the diff and errors "unable to replace resource ... marked for protection").
    run = run_offline(variant_settings(variant))
    assert run.one(INSTANCE).options["protect"] is protected
    assert run.outputs["database_lifecycle"]["protected"] is protected


def test_dev_can_protect_its_database() -> None:
    run = run_offline(with_database(variant_settings("dev"), protect=True))
    assert run.one(INSTANCE).options["protect"] is True


# -- replacement refused -------------------------------------------------------------------------


def test_dev_renaming_the_database_is_refused_naming_the_data_loss() -> None:
    settings = with_database(variant_settings("dev"), name="shop")
    with pytest.raises(SettingsError) as error:
        deploy(settings, running(settings))
    message = str(error.value)
    assert "database.name 'app' -> 'shop'" in message
    assert "no final snapshot" in message
    assert "every row" in message
    assert "database.allow_replacement" in message


def test_prod_renaming_the_database_is_refused_naming_the_two_instances() -> None:
    settings = with_database(variant_settings("prod"), name="shop")
    with pytest.raises(SettingsError, match="two instances"):
        deploy(settings, running(settings))


def test_an_unencrypted_or_renamed_master_instance_is_a_replacement_too() -> None:
    settings = variant_settings("dev")
    refused = plan(settings, running(settings, storage_encrypted=False, username="admin"))
    assert {r.argument for r in refused.replacements} == {"storage_encrypted", "username"}
    assert refused.refused


def test_an_allowed_replacement_renders() -> None:
    settings = with_database(variant_settings("dev"), name="shop", allow_replacement=True)
    run = deploy(settings, running(settings))
    assert run.one(INSTANCE).input("dbName") == "shop"


def test_an_unchanged_running_stack_renders_as_before() -> None:
    settings = variant_settings("prod")
    run = deploy(settings, running(settings))
    instance = run.one(INSTANCE)
    assert instance.input("allowMajorVersionUpgrade") is None
    assert instance.input("applyImmediately") is False
    assert [g.input("family") for g in run.of_type(GROUP)] == ["postgres16"]


# -- major upgrades ------------------------------------------------------------------------------


def test_dev_major_upgrade_goes_in_place_with_both_parameter_groups() -> None:
    settings = with_database(variant_settings("dev"), engine_version="17")
    run = deploy(settings, running(settings, "16.10"))
    families = sorted(g.input("family") for g in run.of_type(GROUP))
    assert families == ["postgres16", "postgres17"]
    instance = run.one(INSTANCE)
    # provider docs: "When upgrading the major version of an engine,
    # `allow_major_version_upgrade` must be set to `true`."
    assert instance.input("allowMajorVersionUpgrade") is True
    assert instance.input("applyImmediately") is True
    assert instance.input("engineVersion") == "17"
    assert instance.input("blueGreenUpdate") is None
    new_group = run.named("slotguard-dev-params-postgres17")
    old_group = run.named("slotguard-dev-params-postgres16")
    assert run.depends_on(instance, new_group)
    assert not run.depends_on(instance, old_group)
    assert run.outputs["database_lifecycle"]["path"] == "in-place"


def test_after_the_upgrade_the_old_group_is_no_longer_declared() -> None:
    settings = with_database(variant_settings("dev"), engine_version="17")
    run = deploy(settings, running(settings, "17.6"))
    assert [g.input("family") for g in run.of_type(GROUP)] == ["postgres17"]
    assert run.one(INSTANCE).input("allowMajorVersionUpgrade") is None


def test_prod_blue_green_is_refused_while_rds_manages_the_master_password() -> None:
    # AWS, "Limitations and considerations for Amazon RDS blue/green deployments": "Blue/green
    # deployments don't support managing master user passwords with AWS Secrets Manager."
    settings = with_database(variant_settings("prod"), engine_version="17")
    with pytest.raises(SettingsError, match="master password managed in Secrets Manager"):
        deploy(settings, running(settings))


def test_prod_in_place_upgrade_waits_for_the_maintenance_window() -> None:
    settings = with_database(
        variant_settings("prod"), engine_version="17", major_upgrade="in-place"
    )
    run = deploy(settings, running(settings))
    instance = run.one(INSTANCE)
    assert instance.input("allowMajorVersionUpgrade") is True
    assert instance.input("applyImmediately") is False
    assert sorted(g.input("family") for g in run.of_type(GROUP)) == ["postgres16", "postgres17"]


def test_blue_green_renders_when_nothing_blocks_it() -> None:
    settings = with_database(
        variant_settings("dev"), engine_version="17", major_upgrade="blue-green"
    )
    p = plan(settings, running(settings))
    assert p.path == "blue-green"
    assert p.refused
    assert any("Secrets Manager" in r for r in p.refusals)
    assert "57P01" in p.poolers["pgbouncer"]
    assert "dns_max_ttl" in p.poolers["pgbouncer"]
    assert "drops its client connections" in p.poolers["rds-proxy"]


def test_a_lower_major_is_refused() -> None:
    settings = with_database(variant_settings("dev"), engine_version="15")
    with pytest.raises(SettingsError, match="cannot downgrade"):
        deploy(settings, running(settings, "16.10"))


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_both_example_stacks_state_their_upgrade_path(variant: str) -> None:
    settings = variant_settings(variant)
    p = plan(settings, None)
    lines = lifecycle.plan_lines(p)
    expected = "in-place" if variant == "dev" else "blue-green"
    assert p.upgrade_path == expected
    assert f"would go {expected}" in lines[0]
    upgrade = plan(with_database(settings, engine_version="17"), running(settings))
    assert upgrade.path == expected
    assert upgrade.downtime != "none"
    assert any("postgres17" in step for step in upgrade.steps)


# -- the bootstrap's configuration ---------------------------------------------------------------


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_bootstrap_configuration_fits_lambdas_environment_limit(variant: str) -> None:
    # AWS Lambda quotas ("Lambda quotas", Function configuration): environment variables total
    # 4 KB per function ("The total size of all environment variables doesn't exceed 4 KB").
    run = run_offline(variant_settings(variant))
    function = run.one("aws:lambda/function:Function", "-bootstrap-function")
    variables = function.input("environment")["variables"]
    size = sum(len(k) + len(str(v)) for k, v in variables.items())
    assert size <= 4096, size
    invocation = run.one("aws:lambda/invocation:Invocation", "-bootstrap-run")
    assert invocation.input("input") == "{}"


# -- pending modifications (prod: apply_immediately off) ---------------------------------------


def test_a_change_rds_holds_pending_is_not_resent_and_is_said() -> None:
    # With apply_immediately false RDS holds a modification until the maintenance window and
    # reports it in DescribeDBInstances' PendingModifiedValues
    # (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_PendingModifiedValues.html);
    # the instance still reads the old class, so without ignore_changes every `pulumi up` diffs.
    settings = with_database(variant_settings("prod"), instance_class="db.r6g.xlarge")
    deployed = running(settings, pending={"DBInstanceClass": "db.r6g.xlarge"})
    run = deploy(settings, deployed)
    instance = run.one(INSTANCE)
    assert instance.options["ignore_changes"] == ["instanceClass"]
    lines = lifecycle.plan_lines(plan(settings, deployed))
    assert "  pending until the maintenance window: DBInstanceClass = db.r6g.xlarge" in lines


def test_a_pending_value_other_than_the_settings_is_sent_again() -> None:
    """Settings changed again after the first request: the new value must reach RDS."""
    settings = with_database(variant_settings("prod"), instance_class="db.r6g.2xlarge")
    deployed = running(settings, pending={"DBInstanceClass": "db.r6g.xlarge"})
    assert deploy(settings, deployed).one(INSTANCE).options["ignore_changes"] == []


def test_a_pending_major_upgrade_compares_the_major() -> None:
    settings = with_database(
        variant_settings("prod"), engine_version="17", major_upgrade="in-place"
    )
    deployed = running(settings, "16.10", pending={"EngineVersion": "17.6"})
    assert plan(settings, deployed).pending_ignores == ("engineVersion",)


def test_readme_lists_every_replace_forcing_input() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("**Changes that replace the database.**", 1)[1].split("**Major", 1)[0]
    for argument in lifecycle.REPLACING_INPUTS:
        assert f"`{argument}`" in section, argument


def test_preview_alone_refuses_a_replacement() -> None:
    # The running instance is read with provider look-ups, which run at `pulumi preview` as at
    # an update: the refusal comes before anything changes.
    settings = with_database(variant_settings("dev"), name="shop")
    with pytest.raises(SettingsError, match=r"database\.name"):
        run_offline(settings, account=MockAccount(database=running(settings)), preview=True)

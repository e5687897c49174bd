"""The program's entry point under mocks: it deploys an example stack, and bad settings stop it.

Some tests run the real `infra/__main__.py` with a Pulumi config map, as `pulumi preview` would;
the others reach the checks only the resources make (Fargate sizes, the network, names).
A refused setting always comes back as an error naming the setting.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import config as pulumi_config

from infra.budget import BudgetError
from infra.offline import RecordingMonitor, mocked, offline_code, run_offline, variant_settings
from infra.settings import SettingsError, settings_from_mapping

MAIN = Path(__file__).resolve().parent.parent / "infra" / "__main__.py"


def run_main(config: dict[str, Any], stack: str = "dev") -> RecordingMonitor:
    """`infra/__main__.py` under mocks with this flat Pulumi config map."""
    with mocked(stack) as monitor:
        pulumi_config.set_all_config(
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
        )
        try:
            pulumi.runtime.test(lambda: runpy.run_path(str(MAIN)) and None)()  # type: ignore[no-untyped-call]
        finally:
            pulumi_config.set_all_config({})
    return monitor


def test_budget_error_stops_the_program_with_the_arithmetic() -> None:
    config = {
        "aws:region": "eu-west-1",
        "slotguard:database": {"max_connections": 25},
        "slotguard:pooler": {"kind": "pgbouncer", "pgbouncer": {"pool_size": 12}},
    }
    with pytest.raises(BudgetError) as caught:
        run_main(config)
    message = str(caught.value)
    assert "pooler.pgbouncer.pool_size" in message
    # Counted at a deploy's peak: 2 tasks plus 1 surge task.
    assert "3 tasks at the peak" in message
    assert "x 1 processes x (12 pool + 1 reserve) = 39" in message


def test_unknown_setting_stops_the_program_naming_it() -> None:
    config = {"aws:region": "eu-west-1", "slotguard:databse": {"max_connections": 25}}
    with pytest.raises(SettingsError) as caught:
        run_main(config)
    assert "databse: unknown setting" in str(caught.value)


def test_pooler_shorthand_from_pulumi_new_is_accepted() -> None:
    # What `pulumi new` writes for the template's prompt: a plain string.
    settings = settings_from_mapping({"pooler": "rds-proxy"}, stack="dev")
    run = run_offline(settings)
    assert run.of_type("aws:rds/proxy:Proxy")


def test_invalid_fargate_size_names_the_setting() -> None:
    base = variant_settings("dev")
    pooler = base.pooler.model_copy(
        update={"pgbouncer": base.pooler.pgbouncer.model_copy(update={"memory_mb": 4096})}
    )
    with pytest.raises(SettingsError) as caught:
        run_offline(base.model_copy(update={"pooler": pooler}))
    assert "pooler.pgbouncer.memory_mb: 4096 MiB does not pair with 256 CPU units" in str(
        caught.value
    )


def test_new_vpc_without_endpoints_is_refused() -> None:
    base = variant_settings("prod")
    network = base.network.model_copy(update={"vpc_endpoints": False})
    with pytest.raises(SettingsError) as caught:
        run_offline(base.model_copy(update={"network": network}))
    assert "network.vpc_endpoints" in str(caught.value)


def test_too_few_availability_zones_in_the_region_is_refused() -> None:
    from infra.network import usable_zones

    zones = ["eu-west-1a", "eu-west-1b"]
    assert usable_zones(zones, {}, 2) == zones
    with pytest.raises(SettingsError, match=r"network\.availability_zones: 3 AZs asked for"):
        usable_zones(zones, {}, 3)


@pytest.mark.parametrize("stack", ["Prod", "dev_1", "dev--a", "dev-", "9dev", "x" * 31])
def test_stack_names_aws_refuses_are_refused_first(stack: str) -> None:
    settings = variant_settings("dev").model_copy(update={"stack": stack})
    with pytest.raises(SettingsError, match="lower-case letters, digits and single hyphens"):
        run_offline(settings)


def test_pooler_shape_problems_name_their_settings() -> None:
    base = variant_settings("prod-pgbouncer")
    pgbouncer = base.pooler.pgbouncer.model_copy(update={"tasks": 1, "processes_per_task": 2})
    settings = base.model_copy(
        update={"pooler": base.pooler.model_copy(update={"pgbouncer": pgbouncer})}
    )
    with pytest.raises(SettingsError) as caught:
        run_offline(settings)
    problems = caught.value.problems
    assert any(
        p.startswith("pooler.pgbouncer.tasks: a prod stack runs at least 2") for p in problems
    )
    assert any(
        p.startswith("pooler.pgbouncer.processes_per_task: 2 single-threaded") for p in problems
    )
    # A dev stack may run a single task.
    dev = variant_settings("dev")
    one = dev.pooler.pgbouncer.model_copy(update={"tasks": 1})
    run = run_offline(
        dev.model_copy(update={"pooler": dev.pooler.model_copy(update={"pgbouncer": one})})
    )
    assert run.one("aws:ecs/service:Service").input("desiredCount") == 1
    # Its deploy starts the new task first (200 %), so the single task is never gone.
    assert run.one("aws:ecs/service:Service").input("deploymentMinimumHealthyPercent") == 100
    assert run.one("aws:ecs/service:Service").input("deploymentMaximumPercent") == 200


def test_main_deploys_the_example_stack_with_the_packaged_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The whole entry point: Pulumi config -> settings -> budget -> packaged code -> stack."""
    from infra import packaging

    archive = tmp_path / "functions.zip"
    archive.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    built: list[tuple[str, str]] = []

    def build_package(runtime: str, architecture: str, **_: object) -> packaging.BuiltPackage:
        built.append((runtime, architecture))
        return packaging.BuiltPackage(
            path=archive, sha256="ab" * 32, input_hash="offline", cached=True
        )

    monkeypatch.setattr(packaging, "build_package", build_package)
    document = yaml.safe_load((MAIN.parent.parent / "Pulumi.dev.yaml").read_text())
    monitor = run_main(document["config"], stack="dev")
    (image,) = [r for r in monitor.records if r.type == "docker:index/image:Image"]
    assert image.inputs["build"]["args"] == {
        "PGBOUNCER_UPSTREAM_VERSION": variant_settings("dev").pooler.pgbouncer.version,
    }
    assert image.inputs["build"]["dockerfile"].endswith("pgbouncer/Dockerfile")
    functions = [r for r in monitor.records if r.type == "aws:lambda/function:Function"]
    assert len(functions) == 3  # api, health and the bootstrap
    assert set(built) == {("python3.12", "arm64")}
    for function in functions:
        assert function.inputs["code"] == {"path": str(archive)}
        assert (
            function.inputs["sourceCodeHash"]
            == packaging.BuiltPackage(archive, "ab" * 32, "offline", True).sha256_b64
        )


def test_the_image_build_argument_is_one_the_dockerfile_declares() -> None:
    dockerfile = (MAIN.parent.parent / "pgbouncer" / "Dockerfile").read_text()
    assert "ARG PGBOUNCER_UPSTREAM_VERSION=" in dockerfile


def test_a_prebuilt_pooler_image_needs_no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    from infra import program

    monkeypatch.setattr(program, "packaged_code", offline_code)
    document = yaml.safe_load((MAIN.parent.parent / "Pulumi.dev.yaml").read_text())
    uri = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pgbouncer:1.24.1"
    monitor = run_main({**document["config"], "pgbouncer:image": uri}, stack="dev")
    assert not [r for r in monitor.records if r.type == "docker:index/image:Image"]
    (task,) = [r for r in monitor.records if r.type == "aws:ecs/taskDefinition:TaskDefinition"]
    assert json.loads(task.inputs["containerDefinitions"])[0]["image"] == uri

"""The project file, the injectable artifacts and the deploy guide's arithmetic."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from infra.offline import offline_artifacts, run_offline, variant_settings
from infra.pooler_pgbouncer import PrebuiltImage

ROOT = Path(__file__).resolve().parent.parent


def test_pulumi_project_runs_the_program_with_uv() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "slotguard"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "uv"}}
    assert project["main"] == "infra/"
    assert (ROOT / project["main"] / "__main__.py").is_file()


def test_a_prebuilt_image_replaces_the_docker_build() -> None:
    uri = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pgbouncer@sha256:" + "ab" * 32
    run = run_offline(variant_settings("dev"), artifacts=offline_artifacts(PrebuiltImage(uri)))
    assert not run.of_type("docker:index/image:Image")
    task = run.one("aws:ecs/taskDefinition:TaskDefinition")
    (container,) = json.loads(task.input("containerDefinitions"))
    assert container["image"] == uri
    built = run_offline(variant_settings("dev"))
    image = built.one("docker:index/image:Image")
    assert image.input("build")["platform"] == "linux/arm64"
    (container,) = json.loads(
        built.one("aws:ecs/taskDefinition:TaskDefinition").input("containerDefinitions")
    )
    assert container["image"] == image.outputs["repoDigest"]


def _dollars(text: str, label: str) -> float:
    match = re.search(rf"\|\s*{re.escape(label)}[^|]*\|\s*\$([0-9.,]+)", text)
    assert match is not None, label
    return float(match.group(1).replace(",", ""))


def test_deploy_guide_cost_arithmetic_matches_the_dev_example() -> None:
    guide = (ROOT / "README.md").read_text()
    for heading in (
        "### Prerequisites",
        "pulumi stack init",
        "### Outputs",
        "### Teardown",
        "us-east-1",
    ):
        assert heading in guide
    pb = variant_settings("dev").pooler.pgbouncer
    hours = 730
    vcpu_hour, gb_hour = 0.03238, 0.00356
    fargate = pb.tasks * (pb.cpu / 1024 * vcpu_hour + pb.memory_mb / 1024 * gb_hour) * hours
    assert abs(_dollars(guide, f"{pb.tasks} Fargate tasks") - fargate) < 0.01
    nlb = 0.0225 * hours + 0.006 * hours
    assert abs(_dollars(guide, "NLB") - nlb) < 0.01
    proxy = 2 * 0.015 * hours
    assert abs(_dollars(guide, "Proxy: 2 vCPUs") - proxy) < 0.01

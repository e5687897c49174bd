"""A prebuilt pooler image (`pgbouncer:image`): where the tasks pull it from, and its platform.

The tasks run in private subnets whose only way out is the VPC endpoints, ECR's among them, so
an image must live in ECR (the execution role is granted pull on that very repository), unless
the subnets have a route to a public registry (an existing VPC behind a NAT). The tasks run on
Graviton (linux/arm64), so the image must offer that platform; `pulumi preview` looks it up.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.settings import SettingsError

# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag][@sha256:digest]
# https://docs.aws.amazon.com/AmazonECR/latest/userguide/docker-pull-ecr-image.html
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)"
    r"\.amazonaws\.com(?:\.cn)?/(?P<repository>[a-z0-9](?:[a-z0-9._/-]*[a-z0-9])?)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
TASK_PLATFORM = ("linux", "arm64")
# What BatchGetImage may answer with: a multi-platform index or one platform's manifest.
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


@dataclass(frozen=True)
class EcrImage:
    account: str
    region: str
    repository: str
    tag: str | None
    digest: str | None

    def repository_arn(self, partition: str = "aws") -> str:
        return f"arn:{partition}:ecr:{self.region}:{self.account}:repository/{self.repository}"

    @property
    def image_id(self) -> dict[str, str]:
        return {"imageDigest": self.digest} if self.digest else {"imageTag": self.tag or "latest"}


def image_reference(uri: str, *, public_route: bool = False) -> EcrImage | None:
    """The ECR image `uri` names; None for another registry when the tasks can reach it."""
    found = ECR_IMAGE.fullmatch(uri.strip())
    if found is not None:
        return EcrImage(
            found["account"], found["region"], found["repository"], found["tag"], found["digest"]
        )
    if public_route:
        return None
    raise SettingsError(
        [
            f"pgbouncer:image: {uri!r} is not an ECR image "
            "(<account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@digest]); the pooler's "
            "tasks reach registries only through the VPC's ECR endpoints. Push the image to ECR, "
            "or unset pgbouncer:image to build it; with an existing VPC whose subnets route to the "
            "internet, set pgbouncer:publicRegistryRoute true"
        ]
    )


def platforms_of(
    manifest: dict[str, Any], fetch_config: Callable[[str], dict[str, Any]]
) -> set[tuple[str, str]]:
    """(os, architecture) pairs an image manifest or index offers."""
    media_type = str(manifest.get("mediaType", ""))
    if media_type in INDEX_TYPES or "manifests" in manifest:
        return {
            (str(m["platform"].get("os", "")), str(m["platform"].get("architecture", "")))
            for m in manifest.get("manifests", [])
            if isinstance(m.get("platform"), dict)
        }
    config = fetch_config(str(manifest["config"]["digest"]))
    return {(str(config.get("os", "")), str(config.get("architecture", "")))}


def _download(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - ECR's https URL
        body: dict[str, Any] = json.loads(response.read())
        return body


def image_platforms(
    image: EcrImage, ecr: Any, download: Callable[[str], dict[str, Any]] = _download
) -> set[tuple[str, str]]:
    """Ask ECR for the image's manifest (and, for one platform, its config blob)."""
    answer = ecr.batch_get_image(
        registryId=image.account,
        repositoryName=image.repository,
        imageIds=[image.image_id],
        acceptedMediaTypes=[*INDEX_TYPES, *MANIFEST_TYPES],
    )
    images = answer.get("images", [])
    if not images:
        reasons = "; ".join(f.get("failureReason", "") for f in answer.get("failures", []))
        raise SettingsError(
            [
                f"pgbouncer:image: ECR has no image {image.image_id} in {image.repository} "
                f"({reasons})"
            ]
        )
    manifest = json.loads(images[0]["imageManifest"])

    def fetch_config(digest: str) -> dict[str, Any]:
        url = ecr.get_download_url_for_layer(
            registryId=image.account, repositoryName=image.repository, layerDigest=digest
        )["downloadUrl"]
        return download(str(url))

    return platforms_of(manifest, fetch_config)


def check_platform(uri: str, platforms: set[tuple[str, str]]) -> None:
    """Refuse an image the ARM64 Fargate tasks cannot run."""
    if TASK_PLATFORM not in platforms:
        offered = ", ".join(sorted(f"{o}/{a}" for o, a in platforms)) or "none"
        raise SettingsError(
            [
                f"pgbouncer:image: {uri} offers {offered}, not linux/arm64, which the pooler's "
                "Fargate tasks run on (Graviton); build it with --platform linux/arm64"
            ]
        )

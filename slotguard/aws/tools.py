"""The machine's own tools a deploy needs: the Pulumi CLI and Docker with BuildKit."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]
Which = Callable[[str], str | None]

# The oldest Pulumi CLI the kit accepts: the lower bound of the `pulumi` SDK in pyproject.toml
# (an engine older than the SDK that drives it lacks what the SDK asks of it; pulumi/pulumi#6419).
PULUMI_MIN_VERSION = (3, 130, 0)
# The platform the pooler image is built for: the ECS task runs on ARM64 (Graviton).
IMAGE_PLATFORM = "linux/arm64"
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def run_tool(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return subprocess.CompletedProcess(command, 127, "", str(error))


@dataclass(frozen=True)
class Tools:
    """How the checks reach the machine's tools (tests replace both)."""

    run: Runner = run_tool
    which: Which = shutil.which


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = _VERSION.search(text)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def buildx_platforms(text: str) -> list[str]:
    """The platforms `docker buildx inspect` lists for its builder's nodes."""
    platforms: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "platforms":
            platforms += [p.strip().rstrip("*") for p in value.split(",") if p.strip()]
    return platforms

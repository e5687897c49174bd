"""A deployed stack's outputs: `pulumi stack output --json`, or the same JSON saved to a file."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slotguard.aws.checks import CheckError

Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


class OutputsError(CheckError):
    """The outputs cannot be read, or lack one a check needs; the message says what to do."""


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)


def read_outputs(
    stack: str,
    *,
    outputs_file: Path | None = None,
    which: Callable[[str], str | None] = shutil.which,
    runner: Runner = _run,
) -> dict[str, Any]:
    """The stack's outputs as a dict, from `outputs_file` when given, else from the Pulumi CLI."""
    if outputs_file is not None:
        try:
            text = outputs_file.read_text()
        except OSError as error:
            raise OutputsError(f"--outputs {outputs_file}: {error.strerror}") from None
        return parse_outputs(text, source=str(outputs_file))
    if which("pulumi") is None:
        raise OutputsError(
            "the Pulumi CLI is not installed here, so the stack's outputs cannot be read; "
            "install it (https://www.pulumi.com/docs/install/), or save "
            f"`pulumi stack output --json --show-secrets --stack {stack}` from a machine that "
            "has it and pass that file with --outputs FILE"
        )
    command = ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack]
    result = runner(command)
    if result.returncode != 0:
        raise OutputsError(f"`{' '.join(command)}` failed: {result.stderr.strip()[:500]}")
    return parse_outputs(result.stdout, source="pulumi stack output")


def parse_outputs(text: str, *, source: str) -> dict[str, Any]:
    try:
        outputs = json.loads(text)
    except ValueError as error:
        raise OutputsError(f"{source}: not JSON ({error})") from None
    if not isinstance(outputs, dict):
        raise OutputsError(f"{source}: expected a JSON object of stack outputs")
    return outputs


def require(outputs: dict[str, Any], key: str) -> Any:
    """An output the check needs; a stack deployed before it was exported gets a clear error."""
    value = outputs.get(key)
    if value is None:
        raise OutputsError(
            f"the stack has no output `{key}`",
            "deploy with this version of the kit (`pulumi up`), then verify again",
        )
    return value

"""The Lambda API's read-only function calls: ListFunctions, GetFunction, GetFunctionConfiguration.

Tools and scripts look a function up before invoking it (`aws lambda get-function`, boto3's
`list_functions` paginator), so the runtime answers these with the fields Lambda returns, built
from the function's spec. The shapes follow the Lambda API reference
(https://docs.aws.amazon.com/lambda/latest/api/API_GetFunctionConfiguration.html,
https://docs.aws.amazon.com/lambda/latest/api/API_GetFunction.html,
https://docs.aws.amazon.com/lambda/latest/api/API_ListFunctions.html) and botocore's service
model (`botocore/data/lambda/2015-03-31/service-2.json`: `FunctionConfiguration`,
`GetFunctionResponse`, `ListFunctionsResponse`). What has no local meaning is given the value a
plain zip function on AWS has (no VPC, no layers, tracing PassThrough, 512 MB of /tmp).
"""

from __future__ import annotations

import base64
import hashlib
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slotguard.local.runtime.spec import FunctionSpec, RuntimeSettings

# ListFunctions "returns a maximum of 50 items in each response, even if you set the number
# higher" (API_ListFunctions.html, MaxItems); MaxItems itself is 1..10000 (service-2.json).
MAX_LIST_ITEMS = 50
MAX_ITEMS_LIMIT = 10000
# A zip function's /tmp when not configured: 512 MB (EphemeralStorage, API reference).
DEFAULT_EPHEMERAL_MB = 512
# Lambda's `Architecture` enum is x86_64 | arm64 (service-2.json); the machine calls arm64 aarch64.
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


class BadParameterError(ValueError):
    """A request parameter Lambda would refuse with InvalidParameterValueException."""


@dataclass(frozen=True)
class Registered:
    """A served function and when it was registered (its `LastModified`)."""

    spec: FunctionSpec
    settings: RuntimeSettings
    registered_at: datetime
    revision_id: str


def last_modified(moment: datetime) -> str:
    """Lambda's timestamp format, ISO 8601 with milliseconds: 2019-09-23T18:32:33.857+0000."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}+0000"
    )


def _code_digest(spec: FunctionSpec) -> tuple[int, str]:
    """Size and base64 SHA-256 of the package's files (Lambda digests the zip it was given)."""
    root = spec.code_dir / spec.package
    digest = hashlib.sha256()
    size = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and _is_code(p)):
        data = path.read_bytes()
        digest.update(str(path.relative_to(root)).encode() + b"\0" + data)
        size += len(data)
    return size, base64.b64encode(digest.digest()).decode()


def _is_code(path: Path) -> bool:
    return "__pycache__" not in path.parts and path.suffix != ".pyc"


def function_configuration(function: Registered) -> dict[str, Any]:
    """`FunctionConfiguration`: what GetFunctionConfiguration returns and ListFunctions lists."""
    spec, settings = function.spec, function.settings
    size, sha256 = _code_digest(spec)
    machine = platform.machine().lower()
    return {
        "FunctionName": spec.name,
        "FunctionArn": settings.function_arn(spec.name),
        # The interpreter that actually runs the code here, named as Lambda names runtimes.
        "Runtime": f"python{sys.version_info.major}.{sys.version_info.minor}",
        "Role": f"arn:aws:iam::{settings.account_id}:role/{spec.name}-local",
        "Handler": spec.handler,
        "CodeSize": size,
        "Description": "",
        "Timeout": spec.timeout_s,
        "MemorySize": spec.memory_mb,
        "LastModified": last_modified(function.registered_at),
        "CodeSha256": sha256,
        "Version": "$LATEST",
        "Environment": {"Variables": dict(spec.environment)},
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": function.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [ARCHITECTURES.get(machine, machine)],
        "EphemeralStorage": {"Size": DEFAULT_EPHEMERAL_MB},
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{spec.name}"},
    }


def get_function(function: Registered) -> dict[str, Any]:
    """`GetFunctionResponse`: the configuration, where the code is, and reserved concurrency."""
    document: dict[str, Any] = {
        "Configuration": function_configuration(function),
        # On AWS a presigned S3 URL of the zip; here the package directory the worker loads.
        "Code": {
            "RepositoryType": "S3",
            "Location": (function.spec.code_dir / function.spec.package).as_uri(),
        },
        "Tags": {},
    }
    # Concurrency appears only when a reservation is set (API_GetFunction.html).
    if function.spec.reserved_concurrency is not None:
        document["Concurrency"] = {
            "ReservedConcurrentExecutions": function.spec.reserved_concurrency
        }
    return document


def list_functions(
    functions: list[Registered], *, marker: str | None, max_items: str | None
) -> dict[str, Any]:
    """`ListFunctionsResponse`: one page of functions by name; `NextMarker` when more follow.

    The marker is the name the next page starts at: opaque to callers, as Lambda's is.
    """
    limit = MAX_LIST_ITEMS
    if max_items is not None:
        try:
            asked = int(max_items)
        except ValueError:
            raise BadParameterError(f"MaxItems must be a number, got {max_items!r}") from None
        if not 1 <= asked <= MAX_ITEMS_LIMIT:
            raise BadParameterError(f"MaxItems must be between 1 and {MAX_ITEMS_LIMIT}")
        limit = min(asked, MAX_LIST_ITEMS)
    ordered = sorted(functions, key=lambda f: f.spec.name)
    start = 0
    if marker:
        names = [f.spec.name for f in ordered]
        if marker not in names:
            raise BadParameterError(f"Marker {marker!r} is not one this endpoint returned")
        start = names.index(marker)
    page = ordered[start : start + limit]
    document: dict[str, Any] = {"Functions": [function_configuration(f) for f in page]}
    if start + limit < len(ordered):
        document["NextMarker"] = ordered[start + limit].spec.name
    return document

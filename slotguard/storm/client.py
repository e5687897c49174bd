"""The boto3 Lambda client a storm fires through: one pooled connection per caller, no retries.

botocore would otherwise retry throttles and hide them; a storm must count every 429.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config


def lambda_client(
    *,
    endpoint_url: str | None = None,
    region_name: str = "us-east-1",
    pool_size: int = 10,
    read_timeout_s: float = 960.0,
) -> Any:
    """A Lambda client for the local runtime (`endpoint_url`) or AWS (None: normal credentials).

    `read_timeout_s` outlasts Lambda's 900 s maximum so the platform's own timeout is what shows.
    """
    options: dict[str, Any] = {
        "max_pool_connections": max(1, pool_size),
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "read_timeout": read_timeout_s,
        "connect_timeout": 10,
        "tcp_keepalive": True,
    }
    kwargs: dict[str, Any] = {"region_name": region_name}
    if endpoint_url is not None:
        kwargs["endpoint_url"] = endpoint_url
        # The local runtime checks no signature: skipping SigV4 saves about a third of the
        # client's CPU per call, which on 2 shared cores is the storm's own bottleneck.
        options["signature_version"] = UNSIGNED
    return boto3.client("lambda", config=Config(**options), **kwargs)

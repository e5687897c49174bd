"""AWS's own limits on the resources the stack declares, read from botocore's service models.

Enumerations and ranges come from the API models botocore ships (the same ones the AWS CLI
validates against), so they follow AWS rather than a list typed here. Fargate's CPU/memory pairs
are not part of any API model, so that one table is written out below from AWS's documentation.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import botocore.session

# Fargate task sizes, from "Task CPU and memory" in the Amazon ECS developer guide
# (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size):
# CPU units -> the memory values (MiB) a task of that size may have.
FARGATE_TASK_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}


@cache
def _model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def enum(service: str, shape: str) -> frozenset[str]:
    """The allowed values of an enumerated shape, e.g. `enum("lambda", "Runtime")`."""
    values = getattr(_model(service).shape_for(shape), "enum", None)
    if not values:
        raise KeyError(f"{service} shape {shape} has no enumeration")
    return frozenset(values)


def int_range(service: str, shape: str) -> tuple[int, int | None]:
    """`(min, max)` of an integer shape, e.g. `int_range("lambda", "MemorySize")`.

    The maximum is None where the model states none (CloudWatch's `Period`, for instance).
    """
    metadata = _model(service).shape_for(shape).metadata
    high = metadata.get("max")
    return int(metadata.get("min", 0)), int(high) if high is not None else None


def fargate_pair_valid(cpu: int, memory_mb: int) -> bool:
    return memory_mb in FARGATE_TASK_SIZES.get(cpu, ())


def fargate_pair_problem(cpu: int, memory_mb: int) -> str | None:
    """None for a valid pair, else what to change, naming the settings."""
    if cpu not in FARGATE_TASK_SIZES:
        sizes = ", ".join(str(c) for c in FARGATE_TASK_SIZES)
        return f"pooler.pgbouncer.cpu: Fargate has no task size of {cpu} CPU units (use {sizes})"
    if not fargate_pair_valid(cpu, memory_mb):
        allowed = FARGATE_TASK_SIZES[cpu]
        return (
            f"pooler.pgbouncer.memory_mb: {memory_mb} MiB does not pair with {cpu} CPU units on "
            f"Fargate (allowed: {allowed[0]}..{allowed[-1]} MiB: {', '.join(map(str, allowed))})"
        )
    return None


def cloudwatch_period_valid(period_s: int) -> bool:
    """CloudWatch alarm periods: 10, 30 or a multiple of 60 seconds (PutMetricAlarm docs)."""
    low, _ = int_range("cloudwatch", "Period")
    return period_s >= low and (period_s in (10, 30) or period_s % 60 == 0)


# CloudWatch Logs retention values, from PutRetentionPolicy's `retentionInDays` in the CloudWatch
# Logs API reference (the model types it as a plain integer, so the list is written here once).
LOG_RETENTION_DAYS = frozenset(
    {
        1,
        3,
        5,
        7,
        14,
        30,
        60,
        90,
        120,
        150,
        180,
        365,
        400,
        545,
        731,
        1096,
        1827,
        2192,
        2557,
        2922,
        3288,
        3653,
    }
)

"""The stack's running RDS instance, read from the account at preview (before anything changes).

The program needs the previous values of the replace-forcing inputs and the running major to plan
an update (`infra.lifecycle`). Pulumi gives a program no access to its own state, so it asks RDS:
the instance carrying the stack's `slotguard:stack` tag and the program's name prefix
(`rds.getInstances` with `tags`, then `rds.getInstance`). A new stack finds none.
"""

from __future__ import annotations

from collections.abc import Callable

import pulumi
import pulumi_aws as aws

from infra.lifecycle import DeployedDatabase
from infra.settings import StackSettings

STACK_TAG = "slotguard:stack"
# identifier -> DescribeDBInstances' PendingModifiedValues (the data source does not expose them).
PendingReader = Callable[[str], dict[str, str]]


def instance_prefix(stack: str) -> str:
    """The identifier Pulumi auto-names the instance with (its logical name and a suffix)."""
    return f"slotguard-{stack}-instance-"


def deployed_database(
    settings: StackSettings,
    parent: pulumi.Resource | None = None,
    read_pending: PendingReader | None = None,
) -> DeployedDatabase | None:
    """The running instance of this stack, or None (a new stack, or none tagged as ours)."""
    found = aws.rds.get_instances(
        tags={STACK_TAG: settings.stack}, opts=pulumi.InvokeOptions(parent=parent)
    )
    ours = sorted(
        i
        for i in (found.instance_identifiers or [])
        if i.startswith(instance_prefix(settings.stack))
    )
    if not ours:
        return None
    if len(ours) > 1:
        # A replacement left two instances behind (deletion protection): say so, plan none.
        pulumi.log.warn(
            f"database: {len(ours)} instances carry {STACK_TAG}={settings.stack} "
            f"({', '.join(ours)}); a replacement did not finish. Delete the one the stack "
            "no longer uses."
        )
    instance = aws.rds.get_instance(
        db_instance_identifier=ours[0], opts=pulumi.InvokeOptions(parent=parent)
    )
    return DeployedDatabase(
        identifier=ours[0],
        engine_version=str(instance.engine_version),
        db_name=str(instance.db_name or ""),
        storage_encrypted=bool(instance.storage_encrypted),
        username=str(instance.master_username or ""),
        engine=str(instance.engine or "postgres"),
        pending=read_pending(ours[0]) if read_pending is not None else {},
    )


def boto3_pending(region: str | None) -> PendingReader:
    """PendingModifiedValues from RDS itself (at preview and update; imported lazily)."""

    def read(identifier: str) -> dict[str, str]:
        import boto3  # noqa: PLC0415
        import botocore.exceptions  # noqa: PLC0415

        try:
            found = boto3.client("rds", region_name=region).describe_db_instances(
                DBInstanceIdentifier=identifier
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            pulumi.log.warn(f"cannot read {identifier}'s pending modifications: {error}")
            return {}
        values = found["DBInstances"][0].get("PendingModifiedValues") or {}
        return {k: str(v) for k, v in values.items() if isinstance(v, str | int | bool)}

    return read

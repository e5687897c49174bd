"""The stack's running RDS instance, read from the account at preview (before anything changes).

The program needs the previous values of the replace-forcing inputs and the running major to plan
an update (`infra.lifecycle`). Pulumi gives a program no access to its own state, so it asks RDS:
the instance carrying the stack's `slotguard:stack` tag and the program's name prefix
(`rds.getInstances` with `tags`, then `rds.getInstance`). A new stack finds none.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.lifecycle import DeployedDatabase
from infra.settings import StackSettings

STACK_TAG = "slotguard:stack"


def instance_prefix(stack: str) -> str:
    """The identifier Pulumi auto-names the instance with (its logical name and a suffix)."""
    return f"slotguard-{stack}-instance-"


def deployed_database(
    settings: StackSettings, parent: pulumi.Resource | None = None
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
    )

"""Reboot the database when its parameter group waits for one, then run the bootstrap again.

`max_connections` is a static parameter: RDS applies a change only at the next reboot and reports
the instance's parameter group as `pending-reboot` until then (DBParameterGroupStatus
`ParameterApplyStatus`: `applying`, `pending-reboot` or `in-sync`,
https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DBParameterGroupStatus.html).
Where the stack's setting allows it, this step reboots during `pulumi up` and then invokes the
bootstrap function once more with the deployment's event, which raises `app_user`'s limit to what
the restarted server gives. The first
bootstrap run (before this step) already lowered it on a decrease, so there is no moment at
which the pooler may open more than the running server allows.

The step runs on the deploying machine with boto3 (a Pulumi dynamic resource): the same
credentials the deployment uses (the AWS_* environment or profile), in the stack's region.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

PENDING_REBOOT = "pending-reboot"
APPLYING = "applying"
AVAILABLE = "available"
# A db.t4g.micro reboots in a few minutes; Multi-AZ fails over. Give up well after that.
TIMEOUT_S = 1800.0
POLL_S = 15.0


class RebootError(RuntimeError):
    """The instance did not come back in sync in time."""


def _state(client: Any, identifier: str) -> tuple[str, set[str]]:
    (instance,) = client.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
    groups = {str(g["ParameterApplyStatus"]) for g in instance.get("DBParameterGroups", [])}
    return str(instance["DBInstanceStatus"]), groups


def _wait(
    client: Any,
    identifier: str,
    done: Callable[[str, set[str]], bool],
    *,
    timeout_s: float,
    poll_s: float,
    sleep: Callable[[float], None],
) -> set[str]:
    waited = 0.0
    while True:
        status, groups = _state(client, identifier)
        if done(status, groups):
            return groups
        if waited >= timeout_s:
            raise RebootError(
                f"database {identifier}: still {status} with parameters {sorted(groups)} after "
                f"{timeout_s:.0f} s"
            )
        sleep(poll_s)
        waited += poll_s


def apply_pending_reboot(
    client: Any,
    identifier: str,
    *,
    timeout_s: float = TIMEOUT_S,
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Reboot `identifier` if a parameter change waits for it; True when it rebooted.

    RDS first reports a changed group as `applying`, so that settles before the decision.
    """
    groups = _wait(
        client,
        identifier,
        lambda status, groups: status == AVAILABLE and APPLYING not in groups,
        timeout_s=timeout_s,
        poll_s=poll_s,
        sleep=sleep,
    )
    if PENDING_REBOOT not in groups:
        return False
    client.reboot_db_instance(DBInstanceIdentifier=identifier)
    _wait(
        client,
        identifier,
        lambda status, groups: status == AVAILABLE and groups <= {"in-sync"},
        timeout_s=timeout_s,
        poll_s=poll_s,
        sleep=sleep,
    )
    return True


def rerun_bootstrap(client: Any, function: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """Invoke the bootstrap synchronously; its report, or an error naming the function's."""
    answer = client.invoke(
        FunctionName=function,
        InvocationType="RequestResponse",
        Payload=json.dumps(dict(event), sort_keys=True).encode(),
    )
    body = answer["Payload"].read()
    if answer.get("FunctionError"):
        raise RebootError(f"bootstrap {function} failed after the reboot: {body.decode()[:500]}")
    report: dict[str, Any] = json.loads(body or b"{}")
    return report


class _Provider(ResourceProvider):
    """Creates and updates run the check; nothing to delete (a reboot leaves nothing behind)."""

    def _run(self, props: Mapping[str, Any]) -> dict[str, Any]:
        region = str(props.get("region") or "") or None
        rds = boto3.client("rds", region_name=region)
        rebooted = apply_pending_reboot(rds, str(props["identifier"]))
        limit = None
        if rebooted:
            report = rerun_bootstrap(
                boto3.client("lambda", region_name=region),
                str(props["function"]),
                json.loads(str(props["event"])),
            )
            limit = report.get("connection_limit")
        return {**props, "rebooted": rebooted, "connection_limit": limit}

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=str(props["identifier"]), outs=self._run(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("identifier", "parameters", "region", "function", "event")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._run(news))


class PendingReboot(pulumi.dynamic.Resource):
    """Reboots the instance when its parameters wait for it; `rebooted` says whether it did."""

    rebooted: pulumi.Output[bool]

    def __init__(
        self,
        name: str,
        *,
        identifier: pulumi.Input[str],
        parameters: str,
        region: str,
        function: pulumi.Input[str],
        event: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "identifier": identifier,
            "parameters": parameters,
            "region": region,
            "function": function,
            "event": event,
            "rebooted": None,
            "connection_limit": None,
        }
        super().__init__(_Provider(), name, props, opts)


def parameters_digest(parameters: Mapping[str, str]) -> str:
    """The parameter group's values, hashed: the step runs again exactly when they change."""
    return hashlib.sha256(json.dumps(dict(parameters), sort_keys=True).encode()).hexdigest()


@dataclass
class ParameterRebootArgs:
    identifier: pulumi.Input[str]
    parameters: Mapping[str, str]
    region: str
    bootstrap_function: pulumi.Input[str]
    bootstrap_event: Mapping[str, Any]
    depends_on: list[pulumi.Resource]


def parameter_reboot(
    name: str, args: ParameterRebootArgs, opts: pulumi.ResourceOptions | None = None
) -> PendingReboot:
    """The reboot step, after the first bootstrap run and the parameter group change."""
    return PendingReboot(
        f"{name}-parameter-reboot",
        identifier=args.identifier,
        parameters=parameters_digest(args.parameters),
        region=args.region,
        function=args.bootstrap_function,
        event=json.dumps(dict(args.bootstrap_event), sort_keys=True),
        opts=pulumi.ResourceOptions.merge(
            opts or pulumi.ResourceOptions(), pulumi.ResourceOptions(depends_on=args.depends_on)
        ),
    )

"""Run the real program offline under Pulumi mocks and record every resource it registers.

This is what `pulumi preview` would see, without an engine, a cloud account or Docker: the same
`build_stack`, the same resource options, the same inputs. Each registered resource becomes a
typed `ResourceRecord` (resolved inputs with secrets marked, parent, dependency URNs), which the
tests and the policy pack check, and which a command-line tool can print.

The records come from the mock resource monitor itself: it receives exactly the RegisterResource
request the engine would, including the URNs of explicit `depends_on` and of every Output an
input was computed from, so nothing has to be reconstructed from resource options.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings

from infra.budget import Budget, compute_budget
from infra.functions import FunctionCode
from infra.lifecycle import DeployedDatabase
from infra.pooler_pgbouncer import DockerBuild, ImageSource
from infra.program import Artifacts, build_stack
from infra.settings import (
    PROJECT,
    SettingsError,
    StackSettings,
    load_stack,
    settings_from_mapping,
    stack_file,
)

ACCOUNT = "123456789012"
DEFAULT_REGION = "eu-west-1"


@dataclass(frozen=True)
class Secret:
    """An input Pulumi holds as a secret (encrypted in state, masked in output)."""

    value: Any

    def __repr__(self) -> str:
        return "Secret(***)"


@dataclass(frozen=True)
class ResourceRecord:
    """One registered resource, as `pulumi preview --policy-pack` would show it to a policy."""

    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    parent: str | None
    dependencies: tuple[str, ...]
    property_dependencies: dict[str, tuple[str, ...]]
    custom: bool
    provider: str | None = None
    # What the mocked provider answered (ids, ARNs, endpoints): plausible, not real.
    outputs: dict[str, Any] = field(default_factory=dict)
    # Resource options as the engine receives them (protect, ignore_changes, ...).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_component(self) -> bool:
        return not self.custom

    def input(self, key: str, default: Any = None) -> Any:
        """An input with secrets unwrapped (for assertions on values)."""
        return reveal(self.inputs.get(key, default))


@dataclass
class OfflineRun:
    """Every resource the program registered, and the stack outputs."""

    settings: StackSettings
    budget: Budget
    resources: list[ResourceRecord]
    outputs: dict[str, Any]
    seconds: float = 0.0
    by_urn: dict[str, ResourceRecord] = field(init=False)

    def __post_init__(self) -> None:
        self.by_urn = {r.urn: r for r in self.resources}

    def of_type(self, type_: str) -> list[ResourceRecord]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name_suffix: str = "") -> ResourceRecord:
        """The single resource of a type (whose name ends with `name_suffix`)."""
        found = [r for r in self.of_type(type_) if r.name.endswith(name_suffix)]
        if len(found) != 1:
            names = [r.name for r in self.of_type(type_)]
            raise LookupError(f"{len(found)} {type_} named *{name_suffix}; have {names}")
        return found[0]

    def named(self, name: str) -> ResourceRecord:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise LookupError(f"{len(found)} resources named {name}")
        return found[0]

    def depends_on(self, resource: ResourceRecord, target: ResourceRecord) -> bool:
        """Whether `resource` waits for `target`, directly or through other resources."""
        seen: set[str] = set()
        stack = list(resource.dependencies)
        while stack:
            urn = stack.pop()
            if urn == target.urn:
                return True
            if urn in seen:
                continue
            seen.add(urn)
            dependency = self.by_urn.get(urn)
            if dependency is not None:
                stack.extend(dependency.dependencies)
                if dependency.is_component:
                    stack.extend(r.urn for r in self.children(dependency))
        return False

    def children(self, component: ResourceRecord) -> Iterator[ResourceRecord]:
        for record in self.resources:
            if record.parent == component.urn:
                yield record


def reveal(value: Any) -> Any:
    """`value` with every `Secret` replaced by what it holds."""
    if isinstance(value, Secret):
        return reveal(value.value)
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """RPC values -> plain Python, secrets as `Secret`, assets and archives described.

    Numbers cross the RPC boundary as doubles; whole ones come back as `int`.
    """
    result: Any = value
    if rpc.is_rpc_secret(value):
        result = Secret(_plain(rpc.unwrap_rpc_secret(value)))
    elif isinstance(value, dict):
        result = {k: _plain(v) for k, v in value.items()}
    elif isinstance(value, list):
        result = [_plain(v) for v in value]
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    elif isinstance(value, pulumi.AssetArchive):
        result = {"archive": {k: _plain(v) for k, v in value.assets.items()}}
    elif isinstance(value, pulumi.FileArchive | pulumi.FileAsset):
        result = {"path": value.path}
    elif isinstance(value, pulumi.StringAsset):
        result = {"text": value.text}
    return result


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class MockAccount:
    """The account the offline run's look-ups see (a fresh account with AWS's defaults).

    Tests vary it to see the program refuse what a real account would not take.
    """

    lambda_concurrency_quota: float = 1000.0
    # major version -> the newest available minor RDS offers for new instances
    engine_versions: Mapping[str, str] = field(
        default_factory=lambda: {"14": "14.19", "15": "15.14", "16": "16.10", "17": "17.6"}
    )
    vpc_dns_support: bool = True
    vpc_dns_hostnames: bool = True
    # subnets with no explicit route table association (they use the main route table)
    implicit_subnets: frozenset[str] = frozenset()
    main_route_table: str = "rtb-0main0000000000"
    # service (e.g. "secretsmanager", "s3") -> endpoint id the VPC already has
    existing_endpoints: Mapping[str, str] = field(default_factory=dict)
    # what Service Quotas answers instead of the quota (e.g. an access-denied message)
    quota_error: str | None = None
    # interface endpoint service (e.g. "logs") -> the AZ letters it is offered in (else all)
    endpoint_service_zones: Mapping[str, str] = field(default_factory=dict)
    # other Lambda functions in the region -> their reserved concurrency (-1: unreserved)
    other_functions: Mapping[str, int] = field(default_factory=dict)
    # the stack's running RDS instance (None: a new stack, nothing deployed yet)
    database: DeployedDatabase | None = None
    # A database the team owns (database.kind `existing`): what getInstance/getCluster answer
    # for any identifier not listed in `missing_databases`.
    existing_engine_version: str = "16.10"
    existing_port: int = 5432
    existing_security_groups: tuple[str, ...] = ("sg-0e1d2c3b4a5f60718",)
    existing_cluster_members: tuple[str, ...] = ("orders-1", "orders-2")
    missing_databases: frozenset[str] = frozenset()


class OfflineMocks(pulumi_mocks.Mocks):
    """Plausible provider answers: ids, ARNs, endpoints and the invokes the program makes."""

    def __init__(self, region: str, account: MockAccount | None = None) -> None:
        self.region = region
        self.account = account if account is not None else MockAccount()
        self.invokes: list[tuple[str, dict[str, Any]]] = []

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{ACCOUNT}:{resource}"

    def new_resource(
        self, args: pulumi_mocks.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        short = _digest(args.typ, args.name)[:17]
        name = str(args.inputs.get("name") or args.name)
        autonamed = args.typ in _AUTONAMED and not args.inputs.get("name")
        prefix = args.inputs.get("namePrefix")
        if autonamed:
            # What Pulumi's auto-naming does: the logical name and a random suffix.
            name = f"{args.name}-{short[:7]}"
        elif prefix and not args.inputs.get("name"):
            # `name_prefix`: the provider appends 26 generated characters.
            name = f"{prefix}{_digest('prefix', args.typ, args.name)[:26]}"
        answer = _ANSWERS.get(args.typ)
        if answer is None and args.typ.startswith("tls:index/"):
            answer = _tls
        rid, extra = (
            answer(self, args, name, short) if answer is not None else (f"{args.name}-id", {})
        )
        state: dict[str, Any] = {**extra, **args.inputs}
        if autonamed or (prefix and "name" not in state):
            state["name"] = name
        service = args.typ.split(":")[1].split("/")[0] if args.typ.startswith("aws:") else ""
        if service and "arn" not in state:
            kind = args.typ.split(":")[-1].lower()
            state["arn"] = self.arn(service, f"{kind}/{name}")
        return rid, state

    def call(
        self, args: pulumi_mocks.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        self.invokes.append((args.token, dict(args.args)))
        failure = self._not_found(args)
        if failure is not None:
            # How the provider answers a singular look-up that matched nothing.
            return {}, [("", failure)]
        return self._answer(args), []

    def _not_found(self, args: pulumi_mocks.MockCallArgs) -> str | None:
        invoke = args.token.split(":")[-1]
        if invoke == "getServiceQuota" and self.account.quota_error is not None:
            return self.account.quota_error
        if (
            invoke == "getEngineVersion"
            and str(args.args.get("version", "")) not in self.account.engine_versions
        ):
            return "no matching RDS Engine Version found"
        if invoke == "getVpcEndpoint":
            service = str(args.args.get("serviceName", "")).split(f".{self.region}.", 1)[-1]
            if service not in self.account.existing_endpoints:
                return "no matching EC2 VPC Endpoint found"
        if invoke in {"getInstance", "getCluster"}:
            wanted = args.args.get("dbInstanceIdentifier") or args.args.get("clusterIdentifier")
            if wanted in self.account.missing_databases:
                return f"couldn't find resource (21 retries): DB {wanted} not found"
        return None

    def _answer(self, args: pulumi_mocks.MockCallArgs) -> dict[str, Any]:
        r = self.region
        invoke = args.token.split(":")[-1]
        if invoke == "getAvailabilityZones":
            names = [f"{r}{letter}" for letter in "abcdef"]
            return {"id": r, "names": names, "zoneIds": [f"az{i}" for i in range(6)]}
        if invoke == "getRegion":
            return {"id": r, "name": r, "region": r}
        if invoke == "getVpcEndpointService":
            service = str(args.args.get("service", ""))
            letters = self.account.endpoint_service_zones.get(service, "abcdef")
            return {
                "id": f"com.amazonaws.{r}.{service}",
                "serviceName": f"com.amazonaws.{r}.{service}",
                "serviceType": "Interface",
                "availabilityZones": [f"{r}{letter}" for letter in letters],
            }
        if invoke == "getRouteTable":
            table = f"rtb-{_digest(str(args.args.get('subnetId', '')))[:17]}"
            return {"id": table, "routeTableId": table}
        return self._account_answer(invoke, args)

    def _account_answer(  # noqa: PLR0911 - one answer per look-up of the account
        self, invoke: str, args: pulumi_mocks.MockCallArgs
    ) -> dict[str, Any]:
        r = self.region
        if invoke == "getRouteTables":
            subnets = [
                value
                for f in args.args.get("filters") or []
                if f.get("name") == "association.subnet-id"
                for value in f.get("values", [])
            ]
            ids = [
                f"rtb-{_digest(subnet)[:17]}"
                for subnet in subnets
                if subnet not in self.account.implicit_subnets
            ]
            return {"id": r, "ids": ids}
        if invoke == "getVpc":
            vpc = str(args.args.get("id", ""))
            return {
                "id": vpc,
                "enableDnsSupport": self.account.vpc_dns_support,
                "enableDnsHostnames": self.account.vpc_dns_hostnames,
                "mainRouteTableId": self.account.main_route_table,
                "cidrBlock": "10.40.0.0/16",
            }
        if invoke == "getVpcEndpoint":
            service = str(args.args["serviceName"]).split(f".{r}.", 1)[-1]
            endpoint = self.account.existing_endpoints[service]
            return {
                "id": endpoint,
                "serviceName": args.args["serviceName"],
                "securityGroupIds": [f"sg-{_digest(endpoint)[:17]}"],
                "prefixListId": f"pl-{_digest(endpoint)[:8]}",
                "routeTableIds": [self.account.main_route_table],
                "state": "available",
            }
        if invoke == "getFunctions":
            names = sorted(self.account.other_functions)
            return {
                "id": r,
                "functionNames": names,
                "functionArns": [self.arn("lambda", f"function:{n}") for n in names],
            }
        if invoke == "getFunction":
            name = str(args.args.get("functionName", ""))
            return {
                "id": name,
                "functionName": name,
                "arn": self.arn("lambda", f"function:{name}"),
                "reservedConcurrentExecutions": self.account.other_functions.get(name, -1),
            }
        if invoke == "getServiceQuota":
            return {
                "id": f"arn:aws:servicequotas:{r}:{ACCOUNT}:lambda/L-B99A9384",
                "value": self.account.lambda_concurrency_quota,
                "defaultValue": 1000.0,
                "quotaCode": args.args.get("quotaCode"),
                "serviceCode": args.args.get("serviceCode"),
            }
        if invoke == "getEngineVersion":
            major = str(args.args["version"])
            actual = self.account.engine_versions[major]
            return {
                "id": actual,
                "engine": "postgres",
                "version": actual,
                "versionActual": actual,
                "status": "available",
                "parameterGroupFamily": f"postgres{major}",
                "exportableLogTypes": ["postgresql", "upgrade"],
            }
        if invoke == "getInstances":
            return self._database_answer(invoke)
        running = self.account.database
        if (
            invoke == "getInstance"
            and running is not None
            and args.args.get("dbInstanceIdentifier") == running.identifier
        ):
            return self._database_answer(invoke)
        if invoke in {"getInstance", "getCluster"}:
            return self._existing_database(invoke, args)
        if invoke == "getAuthorizationToken":
            return {
                "id": r,
                "userName": "AWS",
                "password": rpc.wrap_rpc_secret("offline"),
                "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{r}.amazonaws.com",
            }
        return _STATIC_INVOKES.get(invoke, {})

    def _database_answer(self, invoke: str) -> dict[str, Any]:
        """rds.getInstances (by the stack's tag) and rds.getInstance of the running instance."""
        db = self.account.database
        r = self.region
        if invoke == "getInstances":
            ids = [db.identifier] if db is not None else []
            return {
                "id": r,
                "instanceIdentifiers": ids,
                "instanceArns": [f"arn:aws:rds:{r}:{ACCOUNT}:db:{i}" for i in ids],
            }
        assert db is not None, "rds.getInstance without a running instance"
        return {
            "id": db.identifier,
            "dbInstanceIdentifier": db.identifier,
            "engine": db.engine,
            "engineVersion": db.engine_version,
            "dbName": db.db_name,
            "storageEncrypted": db.storage_encrypted,
            "masterUsername": db.username,
        }

    def _existing_database(self, invoke: str, args: pulumi_mocks.MockCallArgs) -> dict[str, Any]:
        a, r = self.account, self.region
        if invoke == "getCluster":
            name = str(args.args["clusterIdentifier"])
            host = f"{name}.cluster-c{_digest(name)[:11]}.{r}.rds.amazonaws.com"
            return {
                "id": name,
                "clusterIdentifier": name,
                "engine": "aurora-postgresql",
                "engineVersion": a.existing_engine_version,
                "endpoint": host,
                "readerEndpoint": host.replace(".cluster-", ".cluster-ro-"),
                "port": a.existing_port,
                "dbClusterParameterGroupName": f"{name}-params",
                "clusterResourceId": f"cluster-{_digest(name)[:26].upper()}",
                "arn": self.arn("rds", f"cluster:{name}"),
                "vpcSecurityGroupIds": list(a.existing_security_groups),
                "clusterMembers": list(a.existing_cluster_members),
            }
        name = str(args.args["dbInstanceIdentifier"])
        host = f"{name}.c{_digest(name)[:11]}.{r}.rds.amazonaws.com"
        return {
            "id": name,
            "dbInstanceIdentifier": name,
            "engine": "postgres",
            "engineVersion": a.existing_engine_version,
            "address": host,
            "port": a.existing_port,
            "dbParameterGroups": [f"{name}-params"],
            "resourceId": f"db-{_digest(name)[:26].upper()}",
            "dbInstanceArn": self.arn("rds", f"db:{name}"),
            "vpcSecurityGroups": list(a.existing_security_groups),
        }


# Resources the program leaves unnamed, so Pulumi generates their names.
_AUTONAMED = frozenset(
    {
        "aws:rds/proxy:Proxy",
        "aws:rds/parameterGroup:ParameterGroup",
        "aws:ecs/cluster:Cluster",
        "aws:ecs/service:Service",
        "aws:ecr/repository:Repository",
        "aws:sns/topic:Topic",
    }
)
# Invokes whose answer depends on nothing but the offline account.
_STATIC_INVOKES: dict[str, dict[str, Any]] = {
    "getCallerIdentity": {
        "id": ACCOUNT,
        "accountId": ACCOUNT,
        "arn": f"arn:aws:iam::{ACCOUNT}:user/offline",
        "userId": "AIDAOFFLINE",
    },
    "getPartition": {"id": "aws", "partition": "aws", "dnsSuffix": "amazonaws.com"},
}
Answer = tuple[str, dict[str, Any]]
MockArgs = pulumi_mocks.MockResourceArgs


def _prefixed(prefix: str) -> Any:
    def answer(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
        return f"{prefix}-{short}", {}

    return answer


def _vpc_endpoint(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    return f"vpce-{short}", {"prefixListId": f"pl-{short[:8]}"}


def _rds_instance(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    identifier = f"{a.name}-{short[:7]}"
    port = a.inputs.get("port", 5432)
    address = f"{identifier}.c{short[:11]}.{m.region}.rds.amazonaws.com"
    secret = m.arn("secretsmanager", f"secret:rds!db-{short}-AbCdEf")
    return identifier, {
        "identifier": identifier,
        "address": address,
        "endpoint": f"{address}:{port}",
        "port": port,
        "arn": m.arn("rds", f"db:{identifier}"),
        "masterUserSecrets": [{"secretArn": secret, "secretStatus": "active"}],
        # DbiResourceId: new for every instance created, unlike the identifier
        "resourceId": f"db-{short.upper()[:26]}",
        "engineVersionActual": str(a.inputs.get("engineVersion", "")),
    }


def _rds_cluster(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    identifier = f"{a.name}-{short[:7]}"
    host = f"{identifier}.cluster-c{short[:11]}.{m.region}.rds.amazonaws.com"
    secret = m.arn("secretsmanager", f"secret:rds!cluster-{short}-AbCdEf")
    return identifier, {
        "clusterIdentifier": identifier,
        "endpoint": host,
        "readerEndpoint": host.replace(".cluster-", ".cluster-ro-"),
        "port": a.inputs.get("port", 5432),
        "arn": m.arn("rds", f"cluster:{identifier}"),
        "masterUserSecrets": [{"secretArn": secret, "secretStatus": "active"}],
        "clusterResourceId": f"cluster-{short.upper()[:26]}",
        "engineVersion": str(a.inputs.get("engineVersion", "")),
    }


def _rds_cluster_instance(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    identifier = f"{a.name}-{short[:7]}"
    return identifier, {
        "identifier": identifier,
        "endpoint": f"{identifier}.c{short[:11]}.{m.region}.rds.amazonaws.com",
        "arn": m.arn("rds", f"db:{identifier}"),
    }


def _rds_proxy_endpoint(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    endpoint_name = str(a.inputs.get("dbProxyEndpointName") or a.name)
    return endpoint_name, {
        "endpoint": f"{endpoint_name}.endpoint.proxy-c{short[:11]}.{m.region}.rds.amazonaws.com",
        "arn": m.arn("rds", f"db-proxy-endpoint:prx-endpoint-{short}"),
    }


def _rds_proxy(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    return name, {
        "endpoint": f"{name}.proxy-c{short[:11]}.{m.region}.rds.amazonaws.com",
        "arn": m.arn("rds", f"db-proxy:prx-{short}"),
    }


def _secret(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    prefix = str(a.inputs.get("namePrefix") or a.name)
    arn = m.arn("secretsmanager", f"secret:{prefix}{short[:6]}-AbCdEf")
    return arn, {"arn": arn, "name": f"{prefix}{short[:6]}"}


def _secret_version(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    # Secrets Manager gives every new version its own id; a changed document is a new version.
    document = json.dumps(reveal(_plain(a.inputs)), sort_keys=True, default=str)
    version = str(uuid.UUID(_digest(a.name, document)[:32]))
    return f"{a.inputs.get('secretId')}|{version}", {"versionId": version}


def _random_id(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    raw = hashlib.sha256(a.name.encode()).digest()[: int(a.inputs.get("byteLength", 4))]
    return f"{a.name}-id", {"hex": raw.hex(), "b64Url": base64.urlsafe_b64encode(raw).decode()}


def _random_password(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    length = int(a.inputs.get("length", 16))
    return f"{a.name}-id", {"result": rpc.wrap_rpc_secret(_digest("pw", a.name)[:length])}


def _random_bytes(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    raw = hashlib.sha256(a.name.encode()).digest()[: int(a.inputs["length"])]
    return f"{a.name}-id", {
        "base64": rpc.wrap_rpc_secret(base64.b64encode(raw).decode()),
        "hex": rpc.wrap_rpc_secret(raw.hex()),
    }


def _tls(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    pem = f"-----BEGIN OFFLINE-----\n{short}\n-----END OFFLINE-----\n"
    return f"{a.name}-id", {
        "privateKeyPem": rpc.wrap_rpc_secret(pem),
        "publicKeyPem": pem,
        "certPem": pem,
        "certRequestPem": pem,
        # Plausible: the mocks do not sign anything, so no clock is involved.
        "validityEndTime": "2028-12-04T00:00:00Z",
    }


def _function(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    return name, {
        "arn": m.arn("lambda", f"function:{name}"),
        "sourceCodeHash": a.inputs.get("sourceCodeHash") or _digest("code", name),
        "version": "$LATEST",
    }


def _function_url(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    return short, {"functionUrl": f"https://{short}.lambda-url.{m.region}.on.aws/"}


def _layer(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    arn = m.arn("lambda", f"layer:{a.inputs.get('layerName', a.name)}:1")
    return arn, {"arn": arn, "layerArn": arn.rsplit(":", 1)[0], "version": "1"}


def _invocation(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    # The bootstrap's report, as the function answers on a server already at the budget's size.
    # Its settings are the function's configuration; the `roles` trigger carries the same JSON.
    event = json.loads(str((a.inputs.get("triggers") or {}).get("roles") or "{}"))
    limit = event.get("app_user", {}).get("connection_limit")
    report = {"changed": True, "connection_limit": limit, "waiting_for_restart": False}
    return f"{a.name}-id", {"result": json.dumps(report)}


def _load_balancer(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    arn = m.arn("elasticloadbalancing", f"loadbalancer/net/{a.name}/{short}")
    return arn, {
        "dnsName": f"{a.name[:20]}-{short[:10]}.elb.{m.region}.amazonaws.com",
        "arn": arn,
        "arnSuffix": f"net/{a.name}/{short}",
    }


def _target_group(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    arn = m.arn("elasticloadbalancing", f"targetgroup/{a.name}/{short}")
    return arn, {"arn": arn, "arnSuffix": f"targetgroup/{a.name}/{short}"}


def _repository(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    return name, {
        "repositoryUrl": f"{ACCOUNT}.dkr.ecr.{m.region}.amazonaws.com/{name}",
        "registryId": ACCOUNT,
        "arn": m.arn("ecr", f"repository/{name}"),
    }


def _image(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    image = str(a.inputs.get("imageName", a.name))
    return image, {"repoDigest": f"{image.rsplit(':', 1)[0]}@sha256:{_digest(image)}"}


def _role(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    return a.name, {"arn": f"arn:aws:iam::{ACCOUNT}:role/{a.name}", "name": a.name}


def _log_group(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    return name, {"arn": m.arn("logs", f"log-group:{name}")}


def _topic(m: OfflineMocks, a: MockArgs, name: str, short: str) -> Answer:
    arn = m.arn("sns", name)
    return arn, {"arn": arn}


_ANSWERS: dict[str, Any] = {
    "aws:ec2/vpc:Vpc": _prefixed("vpc"),
    "aws:ec2/subnet:Subnet": _prefixed("subnet"),
    "aws:ec2/securityGroup:SecurityGroup": _prefixed("sg"),
    "aws:ec2/routeTable:RouteTable": _prefixed("rtb"),
    "aws:ec2/vpcEndpoint:VpcEndpoint": _vpc_endpoint,
    "aws:rds/instance:Instance": _rds_instance,
    "aws:rds/proxy:Proxy": _rds_proxy,
    "aws:rds/cluster:Cluster": _rds_cluster,
    "aws:rds/clusterInstance:ClusterInstance": _rds_cluster_instance,
    "aws:rds/proxyEndpoint:ProxyEndpoint": _rds_proxy_endpoint,
    "aws:secretsmanager/secret:Secret": _secret,
    "aws:secretsmanager/secretVersion:SecretVersion": _secret_version,
    "random:index/randomPassword:RandomPassword": _random_password,
    "random:index/randomId:RandomId": _random_id,
    "random:index/randomBytes:RandomBytes": _random_bytes,
    "aws:lambda/function:Function": _function,
    "aws:lambda/functionUrl:FunctionUrl": _function_url,
    "aws:lambda/layerVersion:LayerVersion": _layer,
    "aws:lambda/invocation:Invocation": _invocation,
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:lb/targetGroup:TargetGroup": _target_group,
    "aws:ecr/repository:Repository": _repository,
    "docker:index/image:Image": _image,
    "aws:iam/role:Role": _role,
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:sns/topic:Topic": _topic,
}


def _options(request: Any) -> dict[str, Any]:
    return {
        "protect": bool(request.protect),
        "retain_on_delete": bool(request.retainOnDelete),
        "delete_before_replace": bool(request.deleteBeforeReplace),
        "ignore_changes": sorted(request.ignoreChanges),
        "replace_on_changes": sorted(request.replaceOnChanges),
        "additional_secret_outputs": sorted(request.additionalSecretOutputs),
        "deleted_with": request.deletedWith or None,
    }


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, keeping each RegisterResource request as a `ResourceRecord`."""

    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.records: list[ResourceRecord] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            inputs = rpc.deserialize_properties(request.object, keep_unknowns=False)
            self.records.append(
                ResourceRecord(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    inputs=_plain(dict(inputs)),
                    parent=request.parent or None,
                    dependencies=tuple(sorted(request.dependencies)),
                    property_dependencies={
                        key: tuple(sorted(deps.urns))
                        for key, deps in request.propertyDependencies.items()
                    },
                    custom=bool(request.custom),
                    provider=request.provider or None,
                    outputs=_plain(dict(self.resources[response.urn].state)),
                    options=_options(request),
                )
            )
        return response


def offline_code(runtime: str, architecture: str) -> FunctionCode:
    """A tiny stand-in artifact: the offline run never packages the functions."""
    text = f"# offline stand-in for {runtime}/{architecture}\n"
    archive = pulumi.AssetArchive({"functions/__init__.py": pulumi.StringAsset(text)})
    digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    return FunctionCode(archive=archive, sha256_b64=digest)


def offline_artifacts(image: ImageSource | None = None) -> Artifacts:
    """Stand-in code; the image is built by a mocked docker resource (nothing runs)."""
    return Artifacts(code=offline_code, image=image if image is not None else DockerBuild())


@contextlib.contextmanager
def mocked(
    stack: str,
    region: str = DEFAULT_REGION,
    account: MockAccount | None = None,
    *,
    preview: bool = False,
) -> Iterator[RecordingMonitor]:
    """Pulumi's runtime on offline mocks, on a fresh event loop, for one program run.

    The caller's event loop (if any) is put back afterwards, so a run leaves no trace in the
    process beyond Pulumi's own reset settings.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            previous: asyncio.AbstractEventLoop | None = asyncio.get_event_loop()
        except RuntimeError:
            previous = None
    pulumi_settings.reset_options()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    monitor = RecordingMonitor(OfflineMocks(region, account))
    pulumi_mocks.set_mocks(
        monitor.mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor
    )
    try:
        yield monitor
    finally:
        loop.close()
        asyncio.set_event_loop(previous)


def run_offline(
    settings: StackSettings,
    budget: Budget | None = None,
    artifacts: Artifacts | None = None,
    account: MockAccount | None = None,
    *,
    preview: bool = False,
) -> OfflineRun:
    """Run `build_stack` under mocks (not a preview) and return what it registered.

    A `SettingsError` or `BudgetError` propagates with its message, as it stops `pulumi up`.
    """
    import time  # noqa: PLC0415 - only for the duration figure

    started = time.perf_counter()
    the_budget = budget if budget is not None else compute_budget(settings)
    the_artifacts = artifacts if artifacts is not None else offline_artifacts()
    region = settings.region or DEFAULT_REGION

    captured: dict[str, Any] = {}

    def program() -> pulumi.Output[Any]:
        running = account.database if account is not None else None
        stack = build_stack(
            settings,
            the_budget,
            the_artifacts,
            read_pending=(lambda _identifier: dict(running.pending)) if running else None,
        )
        return pulumi.Output.from_input(stack.outputs).apply(captured.update)

    with mocked(settings.stack, region, account, preview=preview) as monitor:
        pulumi.runtime.test(program)()  # type: ignore[no-untyped-call]
    return OfflineRun(
        settings=settings,
        budget=the_budget,
        resources=list(monitor.records),
        outputs=_plain(captured),
        seconds=time.perf_counter() - started,
    )


def summary(run: OfflineRun) -> Mapping[str, int]:
    """Resource counts by type, for a quick look from the command line."""
    counts: dict[str, int] = {}
    for record in run.resources:
        counts[record.type] = counts.get(record.type, 0) + 1
    return dict(sorted(counts.items()))


# -- example stacks and their variants ------------------------------------------------------------

# Overrides of the example stacks that cover both pooler kinds, both network modes, IAM auth and
# an existing VPC reaching AWS through its NAT. Keys are `slotguard:` settings, merged deeply.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "dev": ("dev", {}),
    "dev-existing": (
        "dev",
        {
            "network": {
                "mode": "existing",
                "vpc_id": "vpc-0a1b2c3d4e5f60718",
                "subnet_ids": ["subnet-0a1b2c3d4e5f60718", "subnet-1a1b2c3d4e5f60718"],
            }
        },
    ),
    "dev-existing-nat": (
        "dev",
        {
            "network": {
                "mode": "existing",
                "vpc_id": "vpc-0a1b2c3d4e5f60718",
                "subnet_ids": ["subnet-0a1b2c3d4e5f60718", "subnet-1a1b2c3d4e5f60718"],
                "vpc_endpoints": False,
            }
        },
    ),
    "dev-rds-proxy": ("dev", {"pooler": {"kind": "rds-proxy"}}),
    "prod": ("prod", {}),
    "prod-existing": (
        "prod",
        {
            "network": {
                "mode": "existing",
                "cidr": "10.40.0.0/16",
                "availability_zones": 2,
                "vpc_id": "vpc-0f1e2d3c4b5a69788",
                "subnet_ids": [
                    "subnet-0f1e2d3c4b5a69788",
                    "subnet-1f1e2d3c4b5a69788",
                    "subnet-2f1e2d3c4b5a69788",
                ],
            }
        },
    ),
    "prod-iam": ("prod", {"pooler": {"rds_proxy": {"iam_auth": True}}}),
    "prod-pgbouncer": ("prod", {"pooler": {"kind": "pgbouncer"}}),
}
# The other database kinds (kept apart: many tests of VARIANTS inspect the RDS instance): an
# Aurora cluster behind either pooler, and the team's own database.
KIND_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "aurora": ("aurora", {}),
    "aurora-rds-proxy": ("aurora", {"pooler": {"kind": "rds-proxy"}}),
    "existing": ("existing", {}),
}


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def variant_settings(name: str, root: Path | None = None) -> StackSettings:
    """The settings of an example stack with one variant's overrides (stack named `name`)."""
    known = {**VARIANTS, **KIND_VARIANTS}
    if name not in known:
        raise SettingsError([f"stack: no example variant {name!r} (have {', '.join(known)})"])
    base, override = known[name]
    document = yaml.safe_load(stack_file(base, root).read_text()) or {}
    config: dict[str, Any] = dict(document.get("config") or {})
    prefix = f"{PROJECT}:"
    ours = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    if isinstance(ours.get("pooler"), str):
        ours["pooler"] = {"kind": ours["pooler"]}
    merged = _merge(ours, override)
    region = config.get("aws:region")
    return settings_from_mapping(merged, stack=name, region=str(region) if region else None)


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.offline [stack-or-variant ...]`: print what a deploy would create."""
    import sys  # noqa: PLC0415

    names = (argv if argv is not None else sys.argv[1:]) or ["dev", "prod"]
    for name in names:
        settings = (
            variant_settings(name) if name in {**VARIANTS, **KIND_VARIANTS} else load_stack(name)
        )
        run = run_offline(settings)
        print(f"{name}: {len(run.resources)} resources in {run.seconds:.2f} s")
        for type_, count in summary(run).items():
            print(f"  {count:3d}  {type_}")
        for key, value in run.outputs.items():
            print(f"  output {key} = {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

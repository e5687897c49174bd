"""Facts about real AWS the stack relies on, each with its source (issue 11's review).

Every test states one fact in its docstring or comments, cites where it is documented, and
checks the program (run offline under Pulumi mocks) against it.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from infra import ecr_image
from infra.alarms import CLOUDWATCH_KEY_ACTIONS, CLOUDWATCH_PRINCIPAL
from infra.offline import VARIANTS, OfflineRun, reveal, run_offline, variant_settings
from infra.pooler_pgbouncer import MAX_COMMON_NAME, PrebuiltImage
from infra.program import Artifacts, image_source
from infra.settings import SettingsError
from pgbouncer import environment as task_env

ROOT = Path(__file__).resolve().parent.parent
PGBOUNCER = [v for v in VARIANTS if variant_settings(v).pooler.kind == "pgbouncer"]
RDS_PROXY = [v for v in VARIANTS if variant_settings(v).pooler.kind == "rds-proxy"]
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
ECR_URI = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/pgbouncer:1.24.1"


@functools.cache
def stack(variant: str) -> OfflineRun:
    return run_offline(variant_settings(variant))


def alarms_of(run: OfflineRun) -> dict[str, Any]:
    prefix = f"slotguard-{run.settings.stack}-"
    return {a.input("name").removeprefix(prefix): a for a in run.of_type(ALARM)}


def container(run: OfflineRun) -> dict[str, Any]:
    (definition,) = json.loads(run.one(TASK).input("containerDefinitions"))
    return dict(definition)


def execution_policy(run: OfflineRun) -> dict[str, Any]:
    policy = run.one("aws:iam/rolePolicy:RolePolicy", "-execution-policy")
    return dict(json.loads(policy.input("policy")))


def statement(policy: dict[str, Any], sid: str) -> dict[str, Any]:
    return dict(next(s for s in policy["Statement"] if s["Sid"] == sid))


# -- 6: RDS Proxy TLS: see tests/test_packaging.py (the built artifact ships the roots) -----------


@pytest.mark.parametrize("variant", RDS_PROXY)
def test_rds_proxy_functions_verify_against_the_shipped_amazon_roots(variant: str) -> None:
    """libpq's `sslrootcert=system` finds no roots on Lambda with psycopg-binary's OpenSSL.

    psycopg-binary's libcrypto has OPENSSLDIR "/usr/lib/psycopg-openssl" (strings on the wheel;
    test_packaging checks the artifact's copy), absent on Lambda. Lambda unpacks the .zip at
    LAMBDA_TASK_ROOT=/var/task:
    https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime
    """
    from infra import packaging

    run = stack(variant)
    for function in run.of_type("aws:lambda/function:Function"):
        if function.name.endswith("-bootstrap-function"):
            continue
        env = function.input("environment")["variables"]
        assert env["DB_SSLROOTCERT"] != "system"
        assert env["DB_SSLROOTCERT"] == f"/var/task/{packaging.AMAZON_ROOTS_ARCNAME}"


# -- 7: the alarm topic's key ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_alarm_topic_key_lets_cloudwatch_publish(variant: str) -> None:
    """CloudWatch alarms cannot publish to a topic under alias/aws/sns.

    "AWS services that publish to an encrypted topic need kms:GenerateDataKey* and kms:Decrypt on
    its customer managed key; the AWS managed key's policy cannot be changed to allow them":
    https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services
    """
    run = stack(variant)
    topic = run.one("aws:sns/topic:Topic")
    key = run.one("aws:kms/key:Key")
    assert not str(topic.input("kmsMasterKeyId")).startswith("alias/aws/")
    assert topic.input("kmsMasterKeyId") == key.outputs["arn"]
    policy = json.loads(key.input("policy"))
    (grant,) = [s for s in policy["Statement"] if s["Principal"].get("Service")]
    assert grant["Principal"]["Service"] == CLOUDWATCH_PRINCIPAL == "cloudwatch.amazonaws.com"
    assert grant["Effect"] == "Allow"
    assert set(grant["Action"]) == set(CLOUDWATCH_KEY_ACTIONS)
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(grant["Action"])
    # Confused deputy: only this account's alarms.
    assert grant["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012"
    assert key.input("enableKeyRotation") is True


# -- 9: a renewed certificate or a rotated verifier rolls the service -----------------------------


@pytest.mark.parametrize("variant", PGBOUNCER)
def test_secret_renewal_rolls_the_pooler_tasks(variant: str) -> None:
    """Each injected secret pins the version it was created with.

    A changed `secret_string` is a new SecretVersion (the provider marks it ForceNew and calls
    PutSecretValue, which returns a new VersionId: hashicorp/terraform-provider-aws
    internal/service/secretsmanager/secret_version.go). ECS `valueFrom` takes
    `arn:json-key:version-stage:version-id`
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/secrets-envvar-secrets-manager.html),
    so a new version changes the container definitions, registers a new task definition
    revision, and the service rolls its tasks.
    """
    run = stack(variant)
    versions = {
        reveal(v.outputs["secretId"] if "secretId" in v.outputs else v.input("secretId")): v
        for v in run.of_type(SECRET_VERSION)
    }
    task = run.one(TASK)
    pinned = 0
    for secret in container(run)["secrets"]:
        arn, key, stage, version_id = secret["valueFrom"].rsplit(":", 3)
        assert key
        assert stage == ""
        version = versions[arn]
        assert version_id == version.outputs["versionId"], secret["name"]
        assert version.urn in task.dependencies
        pinned += 1
    # app_user's and app_user_clone's verifiers (alternating users), stats password, TLS pair
    assert pinned == 5


# -- 10: RDS Proxy metrics per node -----------------------------------------------------------


@pytest.mark.parametrize("variant", RDS_PROXY)
def test_rds_proxy_connection_counts_sum_over_proxy_nodes(variant: str) -> None:
    """ "RDS publishes these metrics for each underlying Amazon EC2 instance associated with a
    proxy. A single proxy might be served by more than one EC2 instance. Use CloudWatch
    statistics to aggregate the values for a proxy across all the associated instances."
    https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy.monitoring.html
    A count over the proxy is therefore its Sum; Maximum would see the busiest node only.
    """
    run = stack(variant)
    pinned = alarms_of(run)["proxy-pinned-connections"]
    assert pinned.input("metricName") == "DatabaseConnectionsCurrentlySessionPinned"
    assert pinned.input("statistic") == "Sum"
    body = json.loads(run.one("aws:cloudwatch/dashboard:Dashboard").input("dashboardBody"))
    (proxy_widget,) = [
        w for w in body["widgets"] if w["properties"]["title"].startswith("RDS Proxy")
    ]
    assert proxy_widget["properties"]["stat"] == "Sum"
    names = {m[1] for m in proxy_widget["properties"]["metrics"]}
    assert {"ClientConnections", "DatabaseConnections"} <= names


# -- 11: a prebuilt image ------------------------------------------------------------------------


def test_a_prebuilt_ecr_image_is_pulled_from_its_own_repository() -> None:
    """The execution role pulls the image: ecr:BatchGetImage and GetDownloadUrlForLayer on the
    image's repository (https://docs.aws.amazon.com/AmazonECR/latest/userguide/ECR_on_ECS.html).
    The image lives in another repository than the stack's, so that is the one granted.
    """
    from infra.offline import offline_code

    settings = variant_settings("dev")
    source = image_source(settings, image=ECR_URI)
    run = run_offline(settings, artifacts=Artifacts(code=offline_code, image=source))
    pull = statement(execution_policy(run), "PullImage")
    assert pull["Resource"] == "arn:aws:ecr:eu-west-1:210987654321:repository/team/pgbouncer"
    assert container(run)["image"] == ECR_URI
    assert not run.of_type("docker:index/image:Image")


@pytest.mark.parametrize(
    "uri", ["docker.io/library/pgbouncer:1.24.1", "ghcr.io/team/pgbouncer:1", "pgbouncer"]
)
def test_a_non_ecr_image_without_a_route_is_refused(uri: str) -> None:
    """A new VPC has private subnets and VPC endpoints only (no NAT, no internet gateway): the
    tasks reach ECR through its endpoints and no other registry."""
    settings = variant_settings("dev")
    assert settings.network.mode == "new-vpc"
    with pytest.raises(SettingsError, match=r"pgbouncer:image.*not an ECR image"):
        image_source(settings, image=uri)
    with pytest.raises(SettingsError, match="pgbouncer:publicRegistryRoute"):
        image_source(settings, image=uri, public_route=True)


def test_an_existing_vpc_with_a_route_may_name_any_registry() -> None:
    existing = next(v for v in VARIANTS if variant_settings(v).network.mode == "existing")
    source = image_source(variant_settings(existing), image="ghcr.io/t/p:1", public_route=True)
    assert source == PrebuiltImage("ghcr.io/t/p:1", public_route=True)


def _ecr_client() -> Any:
    import boto3

    return boto3.client(
        "ecr", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def test_the_image_platform_is_read_from_its_ecr_index() -> None:
    """BatchGetImage returns the image manifest; a multi-platform image is an OCI image index
    (or Docker manifest list) whose entries carry `platform.os/architecture`:
    https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_BatchGetImage.html,
    https://github.com/opencontainers/image-spec/blob/main/image-index.md
    """
    image = ecr_image.image_reference(ECR_URI)
    assert image is not None
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"digest": "sha256:" + "a" * 64, "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }
    client = _ecr_client()
    with Stubber(client) as stub:
        stub.add_response(
            "batch_get_image",
            {"images": [{"imageManifest": json.dumps(index)}], "failures": []},
            {
                "registryId": "210987654321",
                "repositoryName": "team/pgbouncer",
                "imageIds": [{"imageTag": "1.24.1"}],
                "acceptedMediaTypes": [*ecr_image.INDEX_TYPES, *ecr_image.MANIFEST_TYPES],
            },
        )
        platforms = ecr_image.image_platforms(image, client)
    assert platforms == {("linux", "amd64")}
    with pytest.raises(SettingsError, match="not linux/arm64"):
        ecr_image.check_platform(ECR_URI, platforms)


def test_a_single_platform_image_is_read_from_its_config_blob() -> None:
    """A one-platform manifest names its config blob, whose JSON has `os` and `architecture`
    (https://github.com/opencontainers/image-spec/blob/main/config.md); ECR hands out the blob
    through GetDownloadUrlForLayer."""
    image = ecr_image.image_reference(ECR_URI.replace(":1.24.1", "@sha256:" + "b" * 64))
    assert image is not None
    assert image.digest is not None
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"digest": "sha256:" + "c" * 64},
    }
    client = _ecr_client()
    downloaded: list[str] = []

    def download(url: str) -> dict[str, Any]:
        downloaded.append(url)
        return {"os": "linux", "architecture": "arm64"}

    with Stubber(client) as stub:
        stub.add_response("batch_get_image", {"images": [{"imageManifest": json.dumps(manifest)}]})
        stub.add_response(
            "get_download_url_for_layer",
            {"downloadUrl": "https://example.invalid/blob", "layerDigest": "sha256:" + "c" * 64},
            {
                "registryId": "210987654321",
                "repositoryName": "team/pgbouncer",
                "layerDigest": "sha256:" + "c" * 64,
            },
        )
        platforms = ecr_image.image_platforms(image, client, download)
    assert platforms == {("linux", "arm64")}
    assert downloaded == ["https://example.invalid/blob"]
    ecr_image.check_platform(ECR_URI, platforms)  # accepted


# -- 12: the pooler is down --------------------------------------------------------------------


@pytest.mark.parametrize("variant", PGBOUNCER)
def test_a_pgbouncer_pooler_that_is_down_alarms(variant: str) -> None:
    """Container Insights publishes RunningTaskCount and DesiredTaskCount per ClusterName and
    ServiceName (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/Container-Insights-metrics-ECS.html);
    the NLB publishes HealthyHostCount and UnHealthyHostCount per LoadBalancer and TargetGroup,
    both the ARN suffixes (https://docs.aws.amazon.com/elasticloadbalancing/latest/network/load-balancer-cloudwatch-metrics.html;
    pulumi-aws `arn_suffix`: "ARN suffix for use with CloudWatch Metrics"). A pooler that is down
    publishes nothing, so those alarms treat missing data as breaching.
    """
    run = stack(variant)
    alarms = alarms_of(run)
    missing = alarms["pooler-tasks-below-desired"]
    queries = {q["id"]: q for q in missing.input("metricQueries")}
    assert queries["missing"]["expression"] == "desired - running"
    assert queries["desired"]["metric"]["metricName"] == "DesiredTaskCount"
    assert queries["running"]["metric"]["metricName"] == "RunningTaskCount"
    cluster = run.one("aws:ecs/cluster:Cluster")
    service = run.one("aws:ecs/service:Service")
    assert queries["running"]["metric"]["namespace"] == "ECS/ContainerInsights"
    assert queries["running"]["metric"]["dimensions"] == {
        "ClusterName": cluster.outputs["name"],
        "ServiceName": service.outputs["name"],
    }
    assert cluster.input("settings") == [{"name": "containerInsights", "value": "enabled"}]
    assert missing.input("treatMissingData") == "breaching"
    nlb = run.one("aws:lb/loadBalancer:LoadBalancer")
    for key, metric in (
        ("pooler-unhealthy-targets", "UnHealthyHostCount"),
        ("pooler-no-healthy-target", "HealthyHostCount"),
    ):
        alarm = alarms[key]
        assert alarm.input("namespace") == "AWS/NetworkELB"
        assert alarm.input("metricName") == metric
        assert set(alarm.input("dimensions")) == {"LoadBalancer", "TargetGroup"}
        assert alarm.property_dependencies.get("dimensions")
        assert any(nlb.urn == urn for urn in alarm.dependencies)
    assert alarms["pooler-no-healthy-target"].input("comparisonOperator") == "LessThanThreshold"
    assert alarms["pooler-no-healthy-target"].input("treatMissingData") == "breaching"
    silent = alarms["pooler-exporter-silent"]
    assert silent.input("metricName") == "ExporterHeartbeat"
    assert silent.input("statistic") == "SampleCount"
    assert silent.input("treatMissingData") == "breaching"
    from pgbouncer import exporter

    env = {e["name"]: e["value"] for e in container(run)["environment"]}
    published = exporter.parse_dimensions(env[f"{task_env.PREFIX}METRICS_DIMENSIONS"])
    assert silent.input("dimensions") == published
    # Usage alarms keep treating silence as no traffic.
    assert alarms["pooler-waiting-clients"].input("treatMissingData") == "notBreaching"


@pytest.mark.parametrize("variant", PGBOUNCER)
def test_a_crash_looping_pooler_fails_the_deploy(variant: str) -> None:
    """pulumi-aws `ecs.Service.wait_for_steady_state`: "If true, this provider will wait for the
    service to reach a steady state (like aws ecs wait services-stable) before continuing.
    Default false." Stable means one deployment with running == desired
    (hashicorp/terraform-provider-aws internal/service/ecs/wait.go, statusServiceWaitForStable):
    a first deploy whose tasks crash never gets there and `pulumi up` fails; an update whose
    tasks crash is rolled back by the circuit breaker, and `pulumi up` returns only once the
    previous tasks run again."""
    service = stack(variant).one("aws:ecs/service:Service")
    assert service.input("waitForSteadyState") is True
    assert service.input("deploymentCircuitBreaker") == {"enable": True, "rollback": True}


@pytest.mark.parametrize("variant", RDS_PROXY)
def test_an_unavailable_rds_proxy_alarms(variant: str) -> None:
    """AvailabilityPercentage: "The percentage of time for which the target group was available
    in the role indicated by the dimension", dimension set ProxyName, TargetGroup, TargetRole;
    average it over the proxy's nodes
    (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy.monitoring.html)."""
    run = stack(variant)
    alarm = alarms_of(run)["proxy-unavailable"]
    assert alarm.input("metricName") == "AvailabilityPercentage"
    assert alarm.input("statistic") == "Average"
    assert alarm.input("comparisonOperator") == "LessThanThreshold"
    proxy = run.one("aws:rds/proxy:Proxy")
    assert alarm.input("dimensions") == {
        "ProxyName": proxy.outputs["name"],
        "TargetGroup": "default",
        "TargetRole": "READ_WRITE",
    }
    assert run.one("aws:rds/proxyTarget:ProxyTarget").input("targetGroupName") == "default"


def test_the_exporter_heartbeat_is_published_only_when_every_process_answers() -> None:
    from pgbouncer import exporter, metrics

    sample = exporter.combine([])
    assert exporter.values(sample, None)[metrics.HEARTBEAT.name] == 1.0
    assert metrics.HEARTBEAT in metrics.ALL


# -- 15: the verifier's own secret --------------------------------------------------------------


@pytest.mark.parametrize("variant", PGBOUNCER)
def test_the_execution_role_reads_only_the_verifier_secret(variant: str) -> None:
    """ECS injects secrets with the task *execution* role's secretsmanager:GetSecretValue
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/secrets-envvar-secrets-manager.html);
    IAM cannot scope GetSecretValue to one JSON key, so the verifier lives in its own secret."""
    run = stack(variant)
    outputs = run.outputs
    inject = statement(execution_policy(run), "InjectSecrets")
    assert outputs["app_user_secret_arn"] not in inject["Resource"]
    verifier_secret = run.one("aws:secretsmanager/secret:Secret", "-app-verifier-secret")
    assert verifier_secret.outputs["arn"] in inject["Resource"]
    (version,) = [
        v for v in run.of_type(SECRET_VERSION) if v.name.endswith("-app-verifier-secret-version")
    ]
    document = json.loads(reveal(version.input("secretString")))
    assert set(document) == {"scram_verifier"}
    assert document["scram_verifier"].startswith("SCRAM-SHA-256$")
    # app_user's verifier and its alternating-users clone's (infra/rotation.py), each its own
    # one-key secret; neither login's password secret is readable by the execution role.
    assert outputs["app_user_secret_arn"] not in inject["Resource"]
    verifiers = {
        s["name"]: s["valueFrom"]
        for s in container(run)["secrets"]
        if s["name"].startswith(task_env.USER_VERIFIER_PREFIX)
    }
    prefix = task_env.USER_VERIFIER_PREFIX
    assert set(verifiers) == {f"{prefix}APP_USER", f"{prefix}APP_USER_CLONE"}
    assert verifiers[f"{prefix}APP_USER"].startswith(
        verifier_secret.outputs["arn"] + ":scram_verifier:"
    )
    clone_secret = run.one("aws:secretsmanager/secret:Secret", "-app-clone-verifier-secret")
    assert clone_secret.outputs["arn"] in inject["Resource"]
    assert verifiers[f"{prefix}APP_USER_CLONE"].startswith(
        clone_secret.outputs["arn"] + ":scram_verifier:"
    )
    standby = run.one("aws:secretsmanager/secret:Secret", "-app-standby-secret")
    assert standby.outputs["arn"] not in inject["Resource"]


# -- 19: the certificate's CN --------------------------------------------------------------------


@pytest.mark.parametrize("variant", PGBOUNCER)
def test_pooler_certificate_common_name_fits_rfc5280(variant: str) -> None:
    """RFC 5280 appendix A: `ub-common-name INTEGER ::= 64`
    (https://www.rfc-editor.org/rfc/rfc5280#appendix-A.1). An NLB's DNS name is about 77
    characters, so it goes in the SAN only; libpq matches the SAN's dNSName entries and ignores
    the CN when they exist (https://www.postgresql.org/docs/16/libpq-ssl.html#LIBQ-SSL-CERTIFICATES)."""
    assert MAX_COMMON_NAME == 64
    run = stack(variant)
    request = run.one("tls:index/certRequest:CertRequest")
    nlb = run.one("aws:lb/loadBalancer:LoadBalancer")
    common_name = request.input("subject")["commonName"]
    assert len(common_name) <= 64
    assert common_name != nlb.outputs["dnsName"]
    assert request.input("dnsNames") == [nlb.outputs["dnsName"]]
    # Even the longest stack name fits.
    from infra.pooler_pgbouncer import certificate_common_name

    assert len(certificate_common_name("s" * 30)) <= 64


# -- 20: generated names -------------------------------------------------------------------------


GENERATED = {
    # type -> the property that would hold a fixed name
    "aws:rds/proxy:Proxy": "name",
    "aws:ecs/cluster:Cluster": "name",
    "aws:ecs/service:Service": "name",
    "aws:ecr/repository:Repository": "name",
    "aws:sns/topic:Topic": "name",
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_replaceable_resources_have_generated_names(variant: str) -> None:
    """Pulumi auto-names a resource whose name property is left unset (logical name plus a random
    suffix), so a replacement is created beside the old one before it is deleted
    (https://www.pulumi.com/docs/iac/concepts/resources/names/#autonaming). A fixed name makes the
    default create-before-delete replacement collide. RDS Proxy, ECS cluster and service, ECR
    repository and SNS topic names are optional in pulumi-aws (auto-named); CloudWatch log groups
    take `name_prefix`."""
    run = stack(variant)
    for type_, prop in GENERATED.items():
        for resource in run.of_type(type_):
            assert resource.input(prop) is None, f"{resource.name} has a fixed {prop}"
    for group in run.of_type("aws:cloudwatch/logGroup:LogGroup"):
        if group.input("name") is not None:
            # Lambda writes to /aws/lambda/<function name>, a name Lambda dictates.
            assert group.input("name").startswith("/aws/lambda/"), group.name
        else:
            assert group.input("namePrefix")


# -- 23: advisories --------------------------------------------------------------------------


# CVE identifiers PgBouncer's changelog lists (pgbouncer/pgbouncer NEWS.md, through 1.25.2).
PGBOUNCER_ADVISORIES = {
    "CVE-2026-6664",
    "CVE-2026-6665",
    "CVE-2026-6666",
    "CVE-2026-6667",
    "CVE-2025-12819",
    "CVE-2025-2291",
    "CVE-2021-3935",
    "CVE-2015-6817",
    "CVE-2012-4575",
}


def test_only_real_pgbouncer_advisories_are_cited() -> None:
    """Every CVE the pooler's sources cite is one PgBouncer's NEWS.md names."""
    cited: dict[str, str] = {}
    for path in sorted((ROOT / "pgbouncer").rglob("*")):
        if path.is_file() and path.suffix in {".py", ".md", ""}:
            for cve in re.findall(r"CVE-\d{4}-\d{4,}", path.read_text(errors="replace")):
                cited[cve] = str(path.relative_to(ROOT))
    unknown = {cve: where for cve, where in cited.items() if cve not in PGBOUNCER_ADVISORIES}
    assert not unknown
    assert "CVE-2026-107349" not in (ROOT / "pgbouncer" / "config.py").read_text()

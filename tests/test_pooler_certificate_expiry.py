"""The pooler certificate's expiry: read by the task, published, alarmed on well before it ends."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra import pooler_pgbouncer
from infra.alarm_rules import CERTIFICATE_RENEWAL_DAYS
from infra.offline import run_offline, variant_settings
from pgbouncer import certificate, metrics
from pgbouncer import exporter as exporter_module
from pgbouncer.exporter import Exporter, ExporterSettings, Sample

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def make_pem(not_after: dt.datetime) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pooler")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=730))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    "expiry",
    [
        dt.datetime(2028, 12, 4, 21, 0, 0, tzinfo=dt.UTC),  # UTCTime (before 2050)
        dt.datetime(2051, 1, 2, 3, 4, 5, tzinfo=dt.UTC),  # GeneralizedTime (RFC 5280 4.1.2.5)
    ],
)
def test_not_after_is_read_without_an_x509_library(expiry: dt.datetime) -> None:
    assert certificate.not_after(make_pem(expiry)) == expiry


def test_days_left_of_a_chain_is_the_leafs(tmp_path: Path) -> None:
    now = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    leaf = make_pem(now + dt.timedelta(days=12, hours=12))
    ca = make_pem(now + dt.timedelta(days=3000))
    path = tmp_path / "chain.pem"
    path.write_text(leaf + ca)
    assert certificate.days_left(path, now) == pytest.approx(12.5)


def test_garbage_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(certificate.CertificateError, match="no PEM certificate"):
        certificate.not_after("hello")


class RecordingCloudWatch:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def put_metric_data(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


def test_exporter_publishes_the_served_certificates_days_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The admin-console side is covered against a real PgBouncer in test_pgbouncer_exporter;
    # here only the certificate's figure is under test, so the poll returns an idle sample.
    monkeypatch.setattr(exporter_module, "poll_process", lambda *a, **k: Sample(at=0.0))
    path = tmp_path / "client-tls.crt"
    path.write_text(make_pem(dt.datetime.now(dt.UTC) + dt.timedelta(days=40)))
    exporter = Exporter(
        ExporterSettings(admin_conninfos=("unused",), certificate_file=str(path)),
        RecordingCloudWatch(),
    )
    assert exporter.tick() is not None
    (call,) = exporter.cloudwatch.calls
    (datum,) = [d for d in call["MetricData"] if d["MetricName"] == "CertificateDaysLeft"]
    assert 39.9 < datum["Value"] <= 40
    # PutMetricData's StandardUnit enum (botocore's cloudwatch service model) has "None" for a
    # unit CloudWatch does not know, such as days.
    model = botocore.session.get_session().get_service_model("cloudwatch")
    assert datum["Unit"] in model.shape_for("StandardUnit").enum  # type: ignore[attr-defined]
    assert datum["Unit"] == "None"


def test_alarm_fires_when_the_renewal_window_opens() -> None:
    # The program renews the leaf on a `pulumi up` in its last early_renewal_hours: the alarm's
    # threshold is that window, so the `pulumi up` it asks for renews the certificate.
    assert pooler_pgbouncer.CERT_EARLY_RENEWAL_HOURS == CERTIFICATE_RENEWAL_DAYS * 24
    assert pooler_pgbouncer.CERT_VALIDITY_HOURS > 10 * pooler_pgbouncer.CERT_EARLY_RENEWAL_HOURS
    run = run_offline(variant_settings("dev"))
    alarm = run.named("slotguard-dev-pooler-certificate-expiring")
    assert alarm.type == ALARM
    assert alarm.input("metricName") == "CertificateDaysLeft"
    assert alarm.input("namespace") == metrics.NAMESPACE
    # The task closest to expiry decides: Minimum over the tasks' datapoints.
    assert alarm.input("statistic") == "Minimum"
    assert alarm.input("comparisonOperator") == "LessThanThreshold"
    assert alarm.input("threshold") == CERTIFICATE_RENEWAL_DAYS
    assert set(alarm.input("dimensions")) == set(metrics.DIMENSION_NAMES)


def test_rds_proxy_stacks_have_no_certificate_alarm() -> None:
    """RDS Proxy serves an AWS-managed certificate: nothing of the stack's to renew."""
    run = run_offline(variant_settings("prod"))
    assert not [a for a in run.of_type(ALARM) if "certificate" in a.name]


def test_an_unreadable_certificate_leaves_the_other_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter_module, "poll_process", lambda *a, **k: Sample(at=0.0))
    exporter = Exporter(
        ExporterSettings(admin_conninfos=("unused",), certificate_file=str(tmp_path / "none")),
        RecordingCloudWatch(),
    )
    figures = exporter.tick()
    assert figures is not None
    assert metrics.CERTIFICATE_DAYS_LEFT.name not in figures
    assert figures[metrics.HEARTBEAT.name] == 1.0

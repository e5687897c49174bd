"""The pooler's CA and certificate, as the program renders them, pass strict X.509 verification.

The offline mocks return no real certificates, so the test issues them the way the provider does
from the rendered inputs (terraform-provider-tls signs with Go's crypto/x509), then completes a TLS
handshake with a client context carrying VERIFY_X509_STRICT, the flag Python 3.13's
`ssl.create_default_context()` sets by default ("Changed in version 3.13: The context now uses
VERIFY_X509_PARTIAL_CHAIN and VERIFY_X509_STRICT in its default verify flags", docs.python.org
3.13 library/ssl; python/cpython#107361, PR #112389).

What the provider does with the inputs (each used below):
- `set_subject_key_id`: "Should the generated certificate include a subject key identifier
  (default: `false`)" (pulumi-tls SelfSignedCert / LocallySignedCert docstrings).
- The leaf's Authority Key Identifier: Go's x509.CreateCertificate sets it from the parent's
  SubjectKeyId when the certificate is not self-signed (crypto/x509 x509.go, "if
  !bytes.Equal(asn1Issuer, asn1Subject) && len(parent.SubjectKeyId) > 0 { authorityKeyId =
  parent.SubjectKeyId }"; golang/go#26676 "We already automatically set AuthorityKeyID when the
  parent has SubjectKeyId"); pulumi-tls's LocallySignedCert has no switch of its own for it.
- Go marks basicConstraints critical; `is_ca_certificate` sets CA:TRUE.
"""

from __future__ import annotations

import datetime
import inspect
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi_tls as tls
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.offline import OfflineRun, ResourceRecord, run_offline, variant_settings

SELF_SIGNED = "tls:index/selfSignedCert:SelfSignedCert"
LOCALLY_SIGNED = "tls:index/locallySignedCert:LocallySignedCert"
HOST = "pooler.example.internal"


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(uses: list[str]) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature="digital_signature" in uses,
        content_commitment=False,
        key_encipherment="key_encipherment" in uses,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign="cert_signing" in uses,
        crl_sign="crl_signing" in uses,
        encipher_only=False,
        decipher_only=False,
    )


def _ski(key: ec.EllipticCurvePrivateKey) -> x509.SubjectKeyIdentifier:
    # Go computes the SKI as SHA-1 of the subjectPublicKey bit string (RFC 5280 method 1).
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def issue_ca(record: ResourceRecord) -> Issued:
    """A CA as the provider builds it from a SelfSignedCert's inputs."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, record.input("subject")["commonName"])]
    )
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=record.input("validityPeriodHours")))
        .add_extension(
            x509.BasicConstraints(ca=bool(record.input("isCaCertificate")), path_length=None),
            critical=True,
        )
        .add_extension(_key_usage(record.input("allowedUses")), critical=True)
    )
    if record.input("setSubjectKeyId"):
        builder = builder.add_extension(_ski(key), critical=False)
    return Issued(builder.sign(key, hashes.SHA256()), key)


def issue_leaf(record: ResourceRecord, ca: Issued) -> Issued:
    """A leaf as the provider signs it from a LocallySignedCert's inputs (Go's AKI rule)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slotguard pooler")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=record.input("validityPeriodHours")))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(record.input("allowedUses")), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
    )
    if record.input("setSubjectKeyId"):
        builder = builder.add_extension(_ski(key), critical=False)
    try:
        ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ca_ski = None
    if ca_ski is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(ca_ski.digest, None, None), critical=False
        )
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def handshake(tmp_path: Path, leaf: Issued, trusted: bytes, *, strict: bool) -> None:
    """A TLS handshake to a server presenting `leaf`, trusting `trusted`; raises on refusal."""
    cert_file, key_file = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_file.write_bytes(leaf.pem())
    key_file.write_bytes(
        leaf.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cadata=trusted.decode())
    if strict:
        client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    else:
        client_ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.recv(1)
        except (ssl.SSLError, OSError) as error:
            errors.append(error)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname=HOST) as client,
        ):
            client.sendall(b"x")
    finally:
        thread.join(5)
        listener.close()


@pytest.fixture(scope="module")
def pooler_run() -> OfflineRun:
    return run_offline(variant_settings("dev"))


def test_pulumi_tls_offers_the_subject_key_id_switch() -> None:
    # pulumi-tls SelfSignedCert and LocallySignedCert: `set_subject_key_id` (default false);
    # LocallySignedCert has no `set_authority_key_id` (the AKI follows the CA's SKI).
    assert "set_subject_key_id" in inspect.signature(tls.SelfSignedCert._internal_init).parameters
    locally = inspect.signature(tls.LocallySignedCert._internal_init).parameters
    assert "set_subject_key_id" in locally
    assert "set_authority_key_id" not in locally


def test_rendered_ca_and_leaf_ask_for_key_identifiers(pooler_run: OfflineRun) -> None:
    (ca,) = pooler_run.of_type(SELF_SIGNED)
    (leaf,) = pooler_run.of_type(LOCALLY_SIGNED)
    assert ca.input("setSubjectKeyId") is True
    assert ca.input("isCaCertificate") is True
    assert leaf.input("setSubjectKeyId") is True


def test_a_strict_client_accepts_the_rendered_chain(pooler_run: OfflineRun, tmp_path: Path) -> None:
    (ca_record,) = pooler_run.of_type(SELF_SIGNED)
    (leaf_record,) = pooler_run.of_type(LOCALLY_SIGNED)
    ca = issue_ca(ca_record)
    leaf = issue_leaf(leaf_record, ca)
    handshake(tmp_path, leaf, ca.pem(), strict=True)


def test_without_the_switch_a_strict_client_refuses(pooler_run: OfflineRun, tmp_path: Path) -> None:
    """The failure the switch prevents: 'Missing Authority Key Identifier'."""
    (ca_record,) = pooler_run.of_type(SELF_SIGNED)
    (leaf_record,) = pooler_run.of_type(LOCALLY_SIGNED)
    legacy = _without_ski(ca_record)
    ca = issue_ca(legacy)
    leaf = issue_leaf(leaf_record, ca)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)key identifier"):
        handshake(tmp_path, leaf, ca.pem(), strict=True)
    handshake(tmp_path, leaf, ca.pem(), strict=False)  # what non-strict clients accepted


def test_old_and_new_chains_cross_verify_during_the_roll(
    pooler_run: OfflineRun, tmp_path: Path
) -> None:
    """A running stack gets a new CA certificate of the same key and subject: while tasks and
    functions roll, a non-strict client with either CA accepts a task with either leaf."""
    (ca_record,) = pooler_run.of_type(SELF_SIGNED)
    (leaf_record,) = pooler_run.of_type(LOCALLY_SIGNED)
    new_ca = issue_ca(ca_record)
    old_ca = _reissue(new_ca, with_ski=False)
    new_leaf = issue_leaf(leaf_record, new_ca)
    old_leaf = issue_leaf(leaf_record, old_ca)
    handshake(tmp_path, new_leaf, old_ca.pem(), strict=False)
    handshake(tmp_path, old_leaf, new_ca.pem(), strict=False)


def _without_ski(record: ResourceRecord) -> ResourceRecord:
    import dataclasses

    return dataclasses.replace(record, inputs={**record.inputs, "setSubjectKeyId": False})


def _reissue(ca: Issued, *, with_ski: bool) -> Issued:
    """The same CA key and subject in another certificate (what a replaced CA cert is)."""
    builder: Any = (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(ca.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.cert.not_valid_before_utc)
        .not_valid_after(ca.cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(["cert_signing", "crl_signing"]), critical=True)
    )
    if with_ski:
        builder = builder.add_extension(_ski(ca.key), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), ca.key)

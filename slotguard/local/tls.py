"""TLS material for the local target: a private CA standing in for the RDS CA bundle.

The stack verifies certificates end to end (PgBouncer `verify-full` to the database, functions to
the pooler), so the local target needs a CA and server certificates for `localhost`/127.0.0.1.
Written with `cryptography` so no `openssl` binary is required.

The certificates follow the profile of the program's pulumi-tls ones, made to pass strict
verification (`ssl.VERIFY_X509_STRICT`, Python 3.13's default, and OpenSSL's x509 strict mode):
the CA carries a Subject Key Identifier and the leaf the matching Authority Key Identifier.
Without them a strict client refuses the chain ("Missing Authority Key Identifier").
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a CA certificate and a server certificate/key signed by it."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def has_key_identifiers(files: TlsFiles) -> bool:
    """The CA has a Subject Key Identifier and the leaf the matching Authority Key Identifier."""
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return False
    return aki.key_identifier == ski.digest


def ensure_tls(directory: Path, *, renew_without_key_ids: bool = False) -> TlsFiles:
    """Create (once) a CA and a `localhost` server certificate in `directory`.

    `renew_without_key_ids`: replace a chain made before the key identifiers were added (only
    while its servers are stopped: they load the files when they start).
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    present = all(p.exists() for p in (files.ca_cert, files.server_cert, files.server_key))
    if present and (not renew_without_key_ids or has_key_identifiers(files)):
        return files
    write_chain(files, key_identifiers=True)
    return files


def write_chain(files: TlsFiles, *, key_identifiers: bool) -> None:
    """Write a new CA and `localhost` leaf; `key_identifiers=False` only for negative tests."""
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slotguard local CA")])
    ca_builder = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            # The program's CA: allowed_uses cert_signing and crl_signing.
            x509.KeyUsage(
                digital_signature=False,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if key_identifiers:
        ca_builder = ca_builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
    ca_cert = ca_builder.sign(ca_key, hashes.SHA256())
    server_key = _key()
    leaf_builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # The program's leaf: allowed_uses digital_signature, key_encipherment, server_auth.
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    )
    if key_identifiers:
        leaf_builder = leaf_builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        ).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
    server_cert = leaf_builder.sign(ca_key, hashes.SHA256())
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, files.server_key)

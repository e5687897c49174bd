"""Strict TLS clients accept the local chain: the CA has a SKI, the leaf the matching AKI.

Python 3.13's `ssl.create_default_context()` sets `VERIFY_X509_STRICT`
(https://docs.python.org/3.13/library/ssl.html#ssl.create_default_context: "The context now
uses VERIFY_X509_PARTIAL_CHAIN and VERIFY_X509_STRICT in its default verify flags"), under which
OpenSSL rejects a chain whose leaf has no Authority Key Identifier (the Lambda `python3.13`
runtime's asyncpg and pg8000 then cannot connect). On this 3.11 the flag is set explicitly.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pg8000.native
import pytest
from cryptography import x509

from slotguard.local.tls import TlsFiles, ensure_tls, has_key_identifiers, write_chain


def strict_context(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    return context


def test_the_ca_has_a_subject_key_identifier_and_the_leaf_its_authority_key_id(tmp_path: Path):
    files = ensure_tls(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    # The program's profile: CA for cert and CRL signing; leaf for TLS server authentication.
    ca_usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_usage.key_cert_sign
    assert ca_usage.crl_sign
    leaf_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert leaf_usage.digital_signature
    assert leaf_usage.key_encipherment
    assert has_key_identifiers(files)


def test_a_chain_without_key_identifiers_is_renewed_only_when_asked(tmp_path: Path):
    files = TlsFiles(tmp_path / "ca.crt", tmp_path / "server.crt", tmp_path / "server.key")
    write_chain(files, key_identifiers=False)
    before = files.ca_cert.read_bytes()
    assert not has_key_identifiers(files)
    assert ensure_tls(tmp_path).ca_cert.read_bytes() == before  # a running server's files
    ensure_tls(tmp_path, renew_without_key_ids=True)
    assert files.ca_cert.read_bytes() != before
    assert has_key_identifiers(files)


@pytest.mark.integration
def test_a_strict_client_connects_through_the_local_pgbouncer(postgres, pgbouncer_factory):
    password = "strict-pw-1"
    bouncer = pgbouncer_factory(postgres, users={"strict_app": password})
    context = strict_context(postgres.tls.ca_cert)
    conn = pg8000.native.Connection(
        "strict_app",
        host="127.0.0.1",
        port=bouncer.port,
        database="postgres",
        password=password,
        ssl_context=context,
        timeout=10,
    )
    try:
        assert conn.run("select 1") == [[1]]
        assert conn.run("select ssl from pg_stat_ssl where pid = pg_backend_pid()") == [[True]]
    finally:
        conn.close()


@pytest.fixture
def tls_server_without_key_ids(tmp_path: Path) -> Iterator[tuple[int, TlsFiles]]:
    """A loopback TLS server presenting a chain made without SKI/AKI (the negative control)."""
    files = TlsFiles(tmp_path / "ca.crt", tmp_path / "server.crt", tmp_path / "server.key")
    write_chain(files, key_identifiers=False)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(files.server_cert, files.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with server_context.wrap_socket(raw, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, files
    stop.set()
    listener.close()
    thread.join(5)


def _handshake(port: int, context: ssl.SSLContext) -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"x")


def test_strict_verification_rejects_a_chain_without_key_identifiers(tls_server_without_key_ids):
    port, files = tls_server_without_key_ids
    lenient = ssl.create_default_context(cafile=str(files.ca_cert))
    lenient.verify_flags &= ~ssl.VERIFY_X509_STRICT
    _handshake(port, lenient)  # the chain itself is valid: only strictness refuses it
    with pytest.raises(ssl.SSLCertVerificationError, match="Missing Authority Key Identifier"):
        _handshake(port, strict_context(files.ca_cert))

"""The packaging builder: a real install for this machine's Lambda platform, reproducible bytes."""

from __future__ import annotations

import http.server
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import pytest

from infra import packaging
from slotguard.local.tls import ensure_tls

# Three real installs for Lambda's platforms and zips of them.
pytestmark = pytest.mark.heavy(seconds=75)

RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
ARCHITECTURE = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]


@pytest.fixture(scope="module")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="slotguard-packaging-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ca_bundle(workdir):
    return ensure_tls(workdir / "tls").ca_cert  # stands in for the RDS CA bundle


@pytest.fixture(scope="module")
def built(workdir, ca_bundle):
    first = packaging.build_package(
        RUNTIME, ARCHITECTURE, build_dir=workdir / "a", ca_bundle=ca_bundle
    )
    second = packaging.build_package(
        RUNTIME, ARCHITECTURE, build_dir=workdir / "b", ca_bundle=ca_bundle
    )
    return first, second


def test_two_independent_builds_give_the_same_hash(built):
    first, second = built
    assert not first.cached
    assert not second.cached
    assert first.path != second.path
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()


def test_an_unchanged_build_is_served_from_the_cache(built, workdir, ca_bundle):
    again = packaging.build_package(
        RUNTIME, ARCHITECTURE, build_dir=workdir / "a", ca_bundle=ca_bundle
    )
    assert again.cached
    assert (again.path, again.sha256) == (built[0].path, built[0].sha256)


def test_the_handlers_import_from_the_artifact_in_a_clean_interpreter(built, workdir):
    unpacked = workdir / "unpacked"
    with zipfile.ZipFile(built[0].path) as archive:
        archive.extractall(unpacked)
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {str(unpacked)!r})\n"
        "assert not any('site-packages' in p for p in sys.path), sys.path\n"
        # The kit's modules (a fork may remove the example handlers), then every handler module
        # the package holds, whatever a fork added.
        "import importlib, pathlib\n"
        "import functions.health, functions.bootstrap, psycopg\n"
        "import functions.sqlalchemy_db, sqlalchemy\n"
        "assert functions.health.__file__.startswith(sys.path[0]), functions.health.__file__\n"
        "assert sqlalchemy.__file__.startswith(sys.path[0]), sqlalchemy.__file__\n"
        "assert psycopg.pq.__impl__ == 'binary', psycopg.pq.__impl__\n"
        "for path in pathlib.Path(functions.health.__file__).parent.glob('*.py'):\n"
        "    importlib.import_module('functions.' + path.stem)\n"
        "print(functions.health.handler.__name__, functions.bootstrap.MIGRATIONS_DIR.is_dir())\n"
    )
    # -I: no environment, no user site; -S: no site-packages at all. Only the artifact is there.
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe],
        capture_output=True,
        text=True,
        cwd=workdir,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["handler", "True"]


def test_entries_are_normalised(built):
    with zipfile.ZipFile(built[0].path) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert {info.date_time for info in infos} == {packaging.ZIP_EPOCH}
    assert {info.external_attr >> 16 for info in infos} == {packaging.FILE_MODE}
    assert not [
        n for n in names if n.endswith(".pyc") or "__pycache__" in n or n.startswith("bin/")
    ]
    # Every file of the functions package, whatever handlers and migrations a fork has.
    shipped = {arcname for arcname, _ in packaging.source_files()}
    assert "functions/migrations/0002.connection-utilisation.sql" in shipped
    assert shipped | {packaging.CA_BUNDLE_ARCNAME} <= set(names)
    assert any(n.startswith("psycopg_binary/") for n in names)
    assert any(n.startswith("aws_lambda_powertools/") for n in names)


def test_the_other_architecture_gets_its_own_binary_wheels(workdir, ca_bundle):
    # python3.12 (Amazon Linux 2023): psycopg-binary ships no manylinux_2_17 aarch64 wheel.
    other = "arm64" if ARCHITECTURE == "x86_64" else "x86_64"
    built = packaging.build_package(
        "python3.12", other, build_dir=workdir / "other", ca_bundle=ca_bundle
    )
    with zipfile.ZipFile(built.path) as archive:
        library = next(
            name
            for name in archive.namelist()
            if name.startswith("psycopg_binary/") and ".so" in name
        )
        header = archive.read(library)[:20]
    machine = int.from_bytes(header[18:20], "little")  # ELF e_machine
    assert header[:4] == b"\x7fELF"
    assert machine == {"arm64": 183, "x86_64": 62}[other]  # EM_AARCH64, EM_X86_64


def test_the_input_hash_follows_every_input(tmp_path, ca_bundle):
    source = tmp_path / "functions"
    source.mkdir()
    (source / "a.py").write_text("x = 1\n")
    sources = [*packaging._source_files(source), ("certs/ca.pem", ca_bundle)]
    base = packaging._input_hash(RUNTIME, "x86_64", "psycopg==3.3.9\n", sources)
    assert base == packaging._input_hash(RUNTIME, "x86_64", "psycopg==3.3.9\n", sources)
    assert base != packaging._input_hash(RUNTIME, "arm64", "psycopg==3.3.9\n", sources)
    assert base != packaging._input_hash("python3.13", "x86_64", "psycopg==3.3.9\n", sources)
    assert base != packaging._input_hash(RUNTIME, "x86_64", "psycopg==3.3.8\n", sources)
    (source / "a.py").write_text("x = 2\n")
    assert base != packaging._input_hash(RUNTIME, "x86_64", "psycopg==3.3.9\n", sources)


def test_platforms_follow_the_runtime_glibc():
    assert packaging.python_platform("python3.11", "x86_64") == "x86_64-manylinux_2_17"
    assert packaging.python_platform("python3.12", "arm64") == "aarch64-manylinux_2_34"


def test_bad_inputs_name_what_to_change(tmp_path, ca_bundle):
    with pytest.raises(packaging.PackagingError, match=r"python2\.7"):
        packaging.build_package("python2.7", "x86_64", build_dir=tmp_path, ca_bundle=ca_bundle)
    with pytest.raises(packaging.PackagingError, match="sparc"):
        packaging.build_package(RUNTIME, "sparc", build_dir=tmp_path, ca_bundle=ca_bundle)
    with pytest.raises(packaging.PackagingError, match=r"global-bundle\.pem"):
        packaging.build_package(
            RUNTIME, "x86_64", build_dir=tmp_path, ca_bundle=tmp_path / "none.pem"
        )


class _OneFile(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(body: bytes) -> str:
        handler = type("Handler", (_OneFile,), {"body": body})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/global-bundle.pem"

    yield start
    for server in servers:
        server.shutdown()


def test_the_ca_bundle_is_fetched_once_and_checked(serve, scratch_dir):
    tls = ensure_tls(scratch_dir / "tls")
    url = serve(tls.ca_cert.read_bytes())
    target = scratch_dir / "fetched" / "bundle.pem"
    assert packaging.fetch_ca_bundle(url, target) == target
    assert target.read_bytes() == tls.ca_cert.read_bytes()
    # Served from the cache afterwards: a dead URL does not matter.
    assert packaging.fetch_ca_bundle("http://127.0.0.1:9/none", target) == target


def test_a_bundle_that_is_not_ca_certificates_is_refused(serve, scratch_dir):
    tls = ensure_tls(scratch_dir / "tls")
    with pytest.raises(packaging.PackagingError, match="not a CA certificate"):
        packaging.fetch_ca_bundle(serve(tls.server_cert.read_bytes()), scratch_dir / "a.pem")
    with pytest.raises(packaging.PackagingError, match="did not return a PEM"):
        packaging.fetch_ca_bundle(serve(b"<html>captive portal</html>"), scratch_dir / "b.pem")
    assert not (scratch_dir / "a.pem").exists()


def test_an_unreachable_bundle_names_where_to_save_it(scratch_dir):
    with pytest.raises(packaging.PackagingError, match=r"save it as .*rds-global-bundle\.pem"):
        packaging.fetch_ca_bundle("http://127.0.0.1:9/none", scratch_dir / "c.pem", timeout_s=2)


def test_the_artifact_ships_the_amazon_roots_where_rds_proxy_functions_look(built):
    """RDS Proxy's certificate comes from ACM and chains to the Amazon Trust Services roots
    (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy.howitworks.html#rds-proxy-security.tls;
    roots: https://www.amazontrust.com/repository/). `sslrootcert=system` cannot find them on
    Lambda: psycopg-binary's libcrypto looks under its OPENSSLDIR, /usr/lib/psycopg-openssl,
    which the artifact's own copy of the library shows and Lambda's images lack. The path the
    functions are given, under LAMBDA_TASK_ROOT=/var/task
    (https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime),
    exists in the built zip and holds exactly those roots.
    """
    import ssl

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from infra.pooler_rds_proxy import LAMBDA_TASK_ROOT, RdsProxyPooler

    path = RdsProxyPooler.client_sslrootcert
    assert path.startswith(f"{LAMBDA_TASK_ROOT}/")
    arcname = path.removeprefix(f"{LAMBDA_TASK_ROOT}/")
    with zipfile.ZipFile(built[0].path) as archive:
        names = set(archive.namelist())
        assert arcname in names
        pem = archive.read(arcname)
        libcrypto = [n for n in names if re.match(r"psycopg_binary\.libs/libcrypto[^/]*\.so", n)]
        assert libcrypto
        library = archive.read(libcrypto[0])
    assert b'OPENSSLDIR: "/usr/lib/psycopg-openssl"' in library
    subjects = [
        c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        for c in x509.load_pem_x509_certificates(pem)
    ]
    assert subjects == list(packaging.AMAZON_ROOT_NAMES)
    assert "Amazon Root CA 1" in subjects
    # OpenSSL itself (libpq's sslrootcert is an OpenSSL CA file) loads all five as trust anchors.
    context = ssl.create_default_context(cadata=pem.decode())
    assert context.cert_store_stats()["x509_ca"] == len(packaging.AMAZON_ROOT_NAMES)


def test_a_bundle_without_the_amazon_roots_is_refused(ca_bundle):
    with pytest.raises(packaging.PackagingError, match=r"Amazon Root CA 1.*upgrade certifi"):
        packaging.amazon_roots_pem(ca_bundle.read_bytes())

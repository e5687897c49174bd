"""The packaging builder: the deployable zip for the function set, deterministic and cached.

The zip holds the `functions` package, the `functions` dependency group installed for Lambda's
platform (manylinux for the runtime's architecture, glibc and Python version, binary wheels only,
exact versions from uv.lock), the RDS CA bundle the functions verify the database with, and the
Amazon Trust Services roots they verify RDS Proxy with.

Deterministic: entries sorted, fixed timestamps and permissions, no bytecode, so the same inputs
give the same bytes and the same sha256, and a deploy without changes changes nothing. Cached:
the artifact is named by a hash of its inputs under `build/lambda/`, so an unchanged deploy does
not reinstall anything. Written by hand because no packaging library produces byte-identical
archives; the installing itself is uv's job.

This module is called by the Pulumi program at deploy time and must not import `slotguard`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
BUILD_DIR = REPO_ROOT / "build" / "lambda"
# The RDS CA bundle lands at /var/task/certs/rds-global-bundle.pem (DB_SSLROOTCERT on AWS). A
# team may keep a reviewed copy at certs/rds-global-bundle.pem; otherwise the first build fetches
# AWS's published bundle (the deploying machine reaches AWS anyway) into build/, checks that it is
# a PEM bundle of CA certificates, and reuses it from there.
RDS_CA_BUNDLE = REPO_ROOT / "certs" / "rds-global-bundle.pem"
RDS_CA_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
FETCHED_CA_BUNDLE = REPO_ROOT / "build" / "certs" / "rds-global-bundle.pem"
CA_BUNDLE_ARCNAME = "certs/rds-global-bundle.pem"
# RDS Proxy presents an ACM certificate that chains to the Amazon Trust Services roots. libpq's
# `sslrootcert=system` does not find them on Lambda: psycopg-binary's bundled OpenSSL looks under
# its build-time OPENSSLDIR, /usr/lib/psycopg-openssl (`strings` on the wheel's libcrypto shows
# it), which Lambda's images do not have. So the artifact ships those roots, taken from certifi
# (Mozilla's CA list, a locked PyPI package) and filtered to Amazon's, at this path.
AMAZON_ROOTS_ARCNAME = "certs/amazon-trust-services.pem"
AMAZON_ROOTS = REPO_ROOT / "build" / "certs" / "amazon-trust-services.pem"
# https://www.amazontrust.com/repository/ : the four Amazon roots and the Starfield root that
# cross-signs Amazon Root CA 1 (older chains end there).
AMAZON_ROOT_NAMES = (
    "Amazon Root CA 1",
    "Amazon Root CA 2",
    "Amazon Root CA 3",
    "Amazon Root CA 4",
    "Starfield Services Root Certificate Authority - G2",
)
ARCHITECTURES = {"x86_64": "x86_64", "arm64": "aarch64"}
# The glibc of each runtime's OS bounds which manylinux wheels load there: python3.11 runs on
# Amazon Linux 2 (glibc 2.26, so manylinux2014 = 2_17), python3.12+ on Amazon Linux 2023 (2.34).
RUNTIME_GLIBC = {"python3.11": "2_17", "python3.12": "2_34", "python3.13": "2_34"}
RUNTIMES = tuple(RUNTIME_GLIBC)
# Pairs no artifact can be built for: psycopg-binary's aarch64 wheels need glibc 2.28
# (manylinux_2_28), above python3.11's Amazon Linux 2. Settings refuse them first, by name.
UNPACKABLE = frozenset({("python3.11", "arm64")})
# Bump when the archive layout changes, so cached artifacts are not reused across layouts.
BUILDER_VERSION = "3"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644


class PackagingError(RuntimeError):
    """The artifact could not be built; the message says what to change."""


@dataclass(frozen=True)
class BuiltPackage:
    path: Path
    sha256: str  # hex digest of the zip
    input_hash: str
    cached: bool

    @property
    def sha256_b64(self) -> str:
        """The digest as Lambda's `source_code_hash` expects it."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()


def python_platform(runtime: str, architecture: str) -> str:
    """uv's `--python-platform` for a Lambda runtime and architecture."""
    return f"{ARCHITECTURES[architecture]}-manylinux_{RUNTIME_GLIBC[runtime]}"


def _uv() -> str:
    found = shutil.which("uv")
    if found is None:
        raise PackagingError("the packaging builder needs uv on PATH (https://docs.astral.sh/uv/)")
    return found


def locked_requirements(project_dir: Path = REPO_ROOT) -> str:
    """The functions group's exact versions from uv.lock (no network, no resolution)."""
    result = subprocess.run(
        [
            _uv(),
            "export",
            "--frozen",
            "--only-group",
            "functions",
            "--no-emit-project",
            "--no-hashes",
            "--no-header",
            "--format",
            "requirements.txt",
        ],
        cwd=project_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise PackagingError(
            f"uv export failed (is uv.lock current? run `uv lock`): {result.stderr}"
        )
    lines = [
        line for line in result.stdout.splitlines() if line and not line.lstrip().startswith("#")
    ]
    return "\n".join(lines) + "\n"


def source_files(source_dir: Path = FUNCTIONS_DIR) -> list[tuple[str, Path]]:
    """The functions package's files as the zip holds them: (name in the zip, file)."""
    return list(_source_files(source_dir))


def _source_files(source_dir: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(source_dir.rglob("*")):
        relative = path.relative_to(source_dir)
        if path.is_dir() or path.suffix == ".pyc" or "__pycache__" in relative.parts:
            continue
        yield f"{source_dir.name}/{relative.as_posix()}", path


def _input_hash(
    runtime: str, architecture: str, requirements: str, sources: list[tuple[str, Path]]
) -> str:
    digest = hashlib.sha256()
    for part in (BUILDER_VERSION, runtime, architecture, requirements):
        digest.update(part.encode() + b"\0")
    for arcname, path in sources:
        digest.update(arcname.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _install(requirements: str, runtime: str, architecture: str, target: Path) -> None:
    requirements_file = target.parent / "requirements.txt"
    requirements_file.write_text(requirements)
    result = subprocess.run(
        [
            _uv(),
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--target",
            str(target),
            "--python-platform",
            python_platform(runtime, architecture),
            "--python-version",
            runtime.removeprefix("python"),
            "--link-mode",
            "copy",
            "-r",
            str(requirements_file),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "UV_NO_PROGRESS": "1"},
    )
    if result.returncode != 0:
        raise PackagingError(
            f"installing the functions group for {runtime}/{architecture} failed: every "
            f"dependency needs a binary wheel for {python_platform(runtime, architecture)}; "
            "choose a newer runtime (python3.12+ allows manylinux_2_34 wheels) or pin a "
            f"dependency version that ships one:\n{result.stderr}"
        )


def _site_files(site: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(site.rglob("*")):
        parts = path.relative_to(site).parts
        # Console scripts (bin/) carry this machine's interpreter path and are never run there.
        if path.is_dir() or path.suffix == ".pyc" or "__pycache__" in parts or parts[0] == "bin":
            continue
        yield "/".join(parts), path


def write_zip(entries: list[tuple[str, Path]], destination: Path) -> None:
    """A reproducible zip: sorted names, fixed time and mode, no extra fields."""
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for arcname, path in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
            info.external_attr = FILE_MODE << 16
            info.create_system = 3  # unix, so the mode above is honoured
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_ca_bundle(
    url: str = RDS_CA_BUNDLE_URL, target: Path = FETCHED_CA_BUNDLE, timeout_s: float = 30
) -> Path:
    """The RDS CA bundle, fetched once over HTTPS and checked to be CA certificates."""
    if target.is_file():
        return target
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - fixed https URL
            body = response.read()
    except OSError as error:
        raise PackagingError(
            f"cannot fetch the RDS CA bundle from {url} ({error}); save it as {RDS_CA_BUNDLE} "
            "and build again"
        ) from error
    try:
        certificates = x509.load_pem_x509_certificates(body)
    except ValueError as error:
        raise PackagingError(f"{url} did not return a PEM certificate bundle: {error}") from error
    if not all(_is_ca(cert) for cert in certificates):
        raise PackagingError(f"{url} returned a certificate that is not a CA certificate")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(body)
    partial.replace(target)
    return target


def amazon_roots_pem(source: bytes | None = None) -> bytes:
    """The Amazon Trust Services roots out of a PEM bundle (certifi's by default), in name order.

    A bundle missing one of them is refused: the artifact must trust every root an RDS Proxy
    certificate may chain to.
    """
    if source is None:
        import certifi  # noqa: PLC0415 - only the build needs it

        source = Path(certifi.where()).read_bytes()
    with warnings.catch_warnings():
        # Mozilla's list holds old roots with negative serials, which cryptography warns about.
        warnings.simplefilter("ignore")
        certificates = x509.load_pem_x509_certificates(source)
    found: dict[str, bytes] = {}
    for certificate in certificates:
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(names[0].value) if names else ""
        if name in AMAZON_ROOT_NAMES and _is_ca(certificate):
            found[name] = certificate.public_bytes(serialization.Encoding.PEM)
    missing = [name for name in AMAZON_ROOT_NAMES if name not in found]
    if missing:
        raise PackagingError(
            f"the CA bundle lacks {', '.join(missing)}: upgrade certifi (uv lock -P certifi)"
        )
    return b"".join(found[name] for name in AMAZON_ROOT_NAMES)


def write_amazon_roots(target: Path = AMAZON_ROOTS) -> Path:
    """Write the Amazon roots file the artifact ships, rewriting it only when it changed."""
    body = amazon_roots_pem()
    if not target.is_file() or target.read_bytes() != body:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(body)
        partial.replace(target)
    return target


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def build_package(
    runtime: str = "python3.12",
    architecture: str = "x86_64",
    *,
    source_dir: Path = FUNCTIONS_DIR,
    build_dir: Path = BUILD_DIR,
    ca_bundle: Path = RDS_CA_BUNDLE,
    project_dir: Path = REPO_ROOT,
    force: bool = False,
    amazon_roots: Path = AMAZON_ROOTS,
) -> BuiltPackage:
    """Build (or reuse) the function set's zip for a Lambda runtime and architecture."""
    if runtime not in RUNTIMES:
        raise PackagingError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if architecture not in ARCHITECTURES:
        raise PackagingError(
            f"architecture {architecture!r} is not one of {', '.join(ARCHITECTURES)}"
        )
    if (runtime, architecture) in UNPACKABLE:
        raise PackagingError(
            f"runtime {runtime} cannot be packaged for {architecture}: psycopg-binary's aarch64 "
            "wheels need glibc 2.28; use runtime python3.12 or later, or architecture x86_64"
        )
    if not ca_bundle.is_file():
        ca_bundle = fetch_ca_bundle()
    requirements = locked_requirements(project_dir)
    sources = [
        *_source_files(source_dir),
        (CA_BUNDLE_ARCNAME, ca_bundle),
        (AMAZON_ROOTS_ARCNAME, write_amazon_roots(amazon_roots)),
    ]
    input_hash = _input_hash(runtime, architecture, requirements, sources)
    artifact = build_dir / f"functions-{runtime}-{architecture}-{input_hash[:20]}.zip"
    if artifact.exists() and not force:
        return BuiltPackage(artifact, _sha256(artifact), input_hash, cached=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="slotguard-package-") as scratch:
        site = Path(scratch) / "site"
        _install(requirements, runtime, architecture, site)
        entries = list(_site_files(site)) + sources
        names = [name for name, _ in entries]
        if len(names) != len(set(names)):
            raise PackagingError("a dependency ships files that collide with the functions package")
        partial = artifact.with_suffix(".zip.partial")
        write_zip(entries, partial)
        partial.replace(artifact)
    return BuiltPackage(artifact, _sha256(artifact), input_hash, cached=False)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runtime", default="python3.12", choices=RUNTIMES)
    parser.add_argument("--architecture", default="x86_64", choices=sorted(ARCHITECTURES))
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    built = build_package(args.runtime, args.architecture, force=args.force)
    print(f"{built.path} sha256={built.sha256} cached={built.cached}")

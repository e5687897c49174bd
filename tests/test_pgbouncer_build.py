"""The pinned PgBouncer release locally: where it is cached, how it is found and built.

The build itself (apt-get source from the Debian suite that ships the release, through the
machine's own mirror, then configure/make) runs once per machine from `slotguard doctor
--install`, which `make test` runs first; these tests check its parts and that what the local
target runs is the pinned release.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.settings import PgBouncerSettings as PgBouncerStackSettings
from slotguard.cli import app
from slotguard.local import pgbouncer_build as build
from slotguard.local.pgbouncer import installed_version
from slotguard.local.system import (
    pgbouncer_binary,
    pgbouncer_too_old,
    pinned_pgbouncer_version,
    runnable_pgbouncer,
    service_user,
)

PINNED = str(PgBouncerStackSettings.model_fields["version"].default)


def test_the_pinned_release_is_the_stack_settings_default_and_the_images():
    assert pinned_pgbouncer_version() == PINNED
    dockerfile = (Path(__file__).parent.parent / "pgbouncer" / "Dockerfile").read_text()
    assert f"ARG PGBOUNCER_UPSTREAM_VERSION={PINNED}" in dockerfile


def test_the_local_target_runs_the_pinned_release():
    binary = pgbouncer_binary()
    assert binary is not None
    assert build.binary_version(binary) == PINNED, binary
    assert pgbouncer_too_old() is None
    assert installed_version() == tuple(int(p) for p in PINNED.split(".")[:2])


def test_doctor_reports_the_pinned_release():
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert f"(PgBouncer {PINNED}; the stack pins {PINNED})" in " ".join(result.output.split())


def test_the_cache_follows_xdg_and_the_override(monkeypatch, tmp_path):
    monkeypatch.delenv(build.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert (
        build.cached_binary("1.24.1") == tmp_path / "xdg/slotguard/pgbouncer/1.24.1/bin/pgbouncer"
    )
    monkeypatch.setenv(build.CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert build.prefix("1.24.1") == tmp_path / "mine/pgbouncer/1.24.1"
    assert build.usable_cached_binary("1.24.1") is None  # nothing built there


def test_a_binary_of_another_version_in_the_cache_is_not_used(tmp_path):
    fake = build.cached_binary("9.9.9", tmp_path)
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 'PgBouncer 1.18.0'\n")
    fake.chmod(0o755)
    assert build.binary_version(fake) == "1.18.0"
    assert build.usable_cached_binary("9.9.9", tmp_path) is None


def test_the_mirror_is_read_from_deb822_sources(tmp_path):
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert build.debian_mirror([sources]) == "http://mirror.example/debian"


def test_the_mirror_is_read_from_a_one_line_sources_list(tmp_path):
    listing = tmp_path / "sources.list"
    listing.write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [signed-by=/usr/share/keyrings/k.gpg] http://mirror.example/debian bookworm main\n"
    )
    assert build.debian_mirror([listing]) == "http://mirror.example/debian"


def test_no_debian_archive_configured_gives_none(tmp_path):
    listing = tmp_path / "sources.list"
    listing.write_text("deb http://archive.example/ubuntu noble main\n")
    assert build.debian_mirror([listing, tmp_path / "missing"]) is None


def test_the_newest_debian_revision_of_exactly_the_pinned_release_is_picked():
    showsrc = (
        "Package: pgbouncer\nVersion: 1.24.1-1\n\n"
        "Package: pgbouncer\nVersion: 1.24.1-1+deb13u2\n\n"
        "Package: pgbouncer\nVersion: 1.25.0-1\n\n"
        "Package: pgbouncer\nVersion: 1.24.10-1\n"
    )
    versions = build.source_versions(showsrc)
    assert versions == ["1.24.1-1", "1.24.1-1+deb13u2", "1.25.0-1", "1.24.10-1"]
    assert build.pick_debian_version(versions, "1.24.1") == "1.24.1-1+deb13u2"
    assert build.pick_debian_version(versions, "1.23.0") is None


def test_off_debian_the_error_is_the_upstream_build_command(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "is_debian", lambda: False)
    with pytest.raises(build.PgBouncerBuildError) as error:
        build.build("9.9.9", tmp_path)
    message = str(error.value)
    assert "this machine is not Debian" in message
    assert "https://www.pgbouncer.org/downloads/files/9.9.9/pgbouncer-9.9.9.tar.gz" in message
    assert f"./configure --prefix={tmp_path}/pgbouncer/9.9.9 --without-pam --without-systemd" in (
        message
    )


def test_a_build_the_service_account_cannot_reach_is_copied_beside_the_pooler(tmp_path):
    user = service_user()
    binary = pgbouncer_binary()
    assert binary is not None
    if user is None:
        assert runnable_pgbouncer(binary, None, tmp_path / "bin") == binary
        return
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    (hidden / "pgbouncer").write_bytes(binary.read_bytes())
    (hidden / "pgbouncer").chmod(0o755)
    copy = runnable_pgbouncer(hidden / "pgbouncer", user, tmp_path / "bin")
    assert copy == tmp_path / "bin" / "pgbouncer"
    assert build.binary_version(copy) == PINNED


def test_a_cached_build_says_what_it_was_built_from(tmp_path):
    binary = build.cached_binary("1.24.1", tmp_path)
    binary.parent.mkdir(parents=True)
    assert build.build_source(binary) is None
    (binary.parent.parent / build.SOURCE_NOTE).write_text("Debian source package pgbouncer x\n")
    assert build.build_source(binary) == "Debian source package pgbouncer x"

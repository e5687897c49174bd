"""The admin console answers the task itself only, checked against the real PgBouncer 1.24.1.

PgBouncer 1.24 docs (doc/config.md, pgbouncer/pgbouncer at pgbouncer_1_24_1): `auth_hba_file` is
"HBA configuration file to use when auth_type is hba", in pg_hba.conf format with record types
local, host, hostssl, hostnossl and the `reject` method; the admin console is the virtual database
`pgbouncer`. Before 1.25.2 any console user could even run KILL_CLIENT (CVE-2026-6667, PgBouncer
NEWS.md), one more reason to keep the console away from the network.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgbouncer.config import (
    ADMIN_DATABASE,
    DatabaseTarget,
    PgBouncerSettings,
    ProcessPaths,
    render_hba,
)
from slotguard.local.pgbouncer import (
    ADMIN_USER,
    LocalPgBouncer,
    create_local_pgbouncer,
    installed_version,
)
from slotguard.local.postgres import LocalPostgres
from tests.scratch import reachable_temp_dir

PINNED = Path("/root/.cache/slotguard/pgbouncer/1.24.1/bin/pgbouncer")
APP_PASSWORD = "hba-app-password"


def _non_loopback_ipv4() -> str | None:
    """An address of this machine that is not loopback (a client there is not the task)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a source address
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


@pytest.fixture
def pinned_pgbouncer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """PgBouncer 1.24.1 first on PATH, copied where the unprivileged server account can run it."""
    if not PINNED.exists():
        pytest.skip(f"the pinned PgBouncer build is not at {PINNED}")
    directory = reachable_temp_dir("slotguard-pgb-bin-")
    binary = directory / "pgbouncer"
    shutil.copy2(PINNED, binary)
    binary.chmod(0o755)
    directory.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}:{__import__('os').environ['PATH']}")
    yield binary
    shutil.rmtree(directory, ignore_errors=True)


def _bouncer(postgres: LocalPostgres, **settings: object) -> LocalPgBouncer:
    root = reachable_temp_dir("slotguard-pgb-hba-")
    bouncer = create_local_pgbouncer(root, postgres, users={"hba_app": APP_PASSWORD})
    bouncer.settings = dataclasses.replace(bouncer.settings, **settings)  # type: ignore[arg-type]
    return bouncer


def _tcp(bouncer: LocalPgBouncer, host: str, user: str, password: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(
        host=host,
        port=bouncer.port,
        user=user,
        password=password,
        dbname=dbname,
        sslmode="require",
        connect_timeout=5,
    )


def test_the_rules_refuse_the_console_from_the_network_first() -> None:
    from pgbouncer.config import ADMIN_LOCAL_NETWORKS

    lines = render_hba(_settings_stub()).splitlines()
    rules = [line.split() for line in lines if line and not line.startswith("#")]
    console = [r for r in rules if r[1] == ADMIN_DATABASE]
    assert console[0] == ["local", ADMIN_DATABASE, "all", "scram-sha-256"]
    allowed = [r[3] for r in console if r[0] == "host" and r[-1] == "scram-sha-256"]
    assert allowed == list(ADMIN_LOCAL_NETWORKS) == ["127.0.0.1/32", "::1/128"]
    assert ["host", ADMIN_DATABASE, "all", "0.0.0.0/0", "reject"] in rules
    assert ["host", ADMIN_DATABASE, "all", "::/0", "reject"] in rules
    # First match wins: every console rule comes before the rules for all databases.
    last_console = max(i for i, r in enumerate(rules) if r[1] == ADMIN_DATABASE)
    first_all = min(i for i, r in enumerate(rules) if r[1] == "all")
    assert last_console < first_all


def _settings_stub() -> PgBouncerSettings:
    return PgBouncerSettings(
        version=(1, 24),
        database=DatabaseTarget(host="db", ca_file="/run/rds-ca.pem"),
        auth_file="/run/userlist.txt",
        paths=(ProcessPaths("/run/p.pid", "/run/1"),),
        hba_file="/run/hba.conf",
    )


def test_the_task_renders_hba_auth() -> None:
    from pgbouncer.config import render_ini

    (ini,) = render_ini(_settings_stub())
    assert "auth_type = hba\n" in ini
    assert "auth_hba_file = /run/hba.conf\n" in ini


def test_the_console_answers_the_task_only_on_pgbouncer_1_24(
    postgres: LocalPostgres, pinned_pgbouncer: Path
) -> None:
    """On the real 1.24.1: the console over the unix socket and loopback, never from another
    address of the machine; the application database from anywhere, SCRAM pass-through intact."""
    assert installed_version() == (1, 24)
    outside = _non_loopback_ipv4()
    listen = "127.0.0.1" + (f",{outside}" if outside else "")
    bouncer = _bouncer(postgres, listen_addr=listen)
    bouncer.start()
    try:
        hba = Path(str(bouncer.settings.hba_file))
        assert stat.S_IMODE(hba.stat().st_mode) == 0o600
        config = {row["key"]: row["value"] for row in bouncer.show("CONFIG")}
        assert config["auth_type"] == "hba"
        assert config["auth_hba_file"] == str(hba)
        assert str(bouncer.show("VERSION")[0]["version"]).startswith("PgBouncer 1.24.1")
        admin = bouncer.admin_password
        with psycopg.connect(_tcp(bouncer, "127.0.0.1", ADMIN_USER, admin, ADMIN_DATABASE)) as c:
            c.autocommit = True
            assert c.execute("SHOW VERSION").fetchone()
        with psycopg.connect(_tcp(bouncer, "127.0.0.1", "hba_app", APP_PASSWORD, "postgres")) as c:
            assert c.execute("select 1").fetchone() == (1,)
        if outside is None:
            pytest.skip("no non-loopback address to connect from")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(_tcp(bouncer, outside, ADMIN_USER, admin, ADMIN_DATABASE))
        with psycopg.connect(_tcp(bouncer, outside, "hba_app", APP_PASSWORD, "postgres")) as c:
            assert c.execute("select 1").fetchone() == (1,)
    finally:
        bouncer.stop()
        shutil.rmtree(bouncer.root, ignore_errors=True)


def test_the_console_refuses_loopback_when_not_listed(
    postgres: LocalPostgres, pinned_pgbouncer: Path
) -> None:
    """The rules, not the listen address, decide: with no network listed for the console, even
    127.0.0.1 is refused while the unix socket still answers (1.24.1)."""
    bouncer = _bouncer(postgres, admin_networks=())
    bouncer.start()
    try:
        admin = bouncer.admin_password
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(_tcp(bouncer, "127.0.0.1", ADMIN_USER, admin, ADMIN_DATABASE))
        assert bouncer.show("POOLS")  # over the unix socket
        with psycopg.connect(_tcp(bouncer, "127.0.0.1", "hba_app", APP_PASSWORD, "postgres")) as c:
            assert c.execute("select 1").fetchone() == (1,)
    finally:
        bouncer.stop()
        shutil.rmtree(bouncer.root, ignore_errors=True)

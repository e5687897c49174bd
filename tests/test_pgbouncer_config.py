"""Rendering is version-aware and refuses, by name and with the arithmetic, what cannot hold."""

from __future__ import annotations

import configparser
import dataclasses

import pytest

from pgbouncer.config import (
    ClientTls,
    DatabaseTarget,
    PgBouncerConfigError,
    PgBouncerSettings,
    ProcessPaths,
    UnsupportedSettingError,
    parse_version,
    render,
    render_auth_file,
    render_ini,
)
from pgbouncer.scram import make_verifier

VERIFIER = make_verifier("pw", salt=b"0123456789abcdef")


def paths(n: int) -> tuple[ProcessPaths, ...]:
    return tuple(ProcessPaths(f"/run/pgb/{i}.pid", f"/run/pgb/{i}") for i in range(1, n + 1))


def settings(version=(1, 24), processes=1, **numbers) -> PgBouncerSettings:
    return PgBouncerSettings(
        version=version,
        database=DatabaseTarget(
            host="db.internal", port=5432, dbname="app", ca_file="/etc/ssl/rds.pem"
        ),
        auth_file="/run/pgb/userlist.txt",
        paths=paths(processes),
        processes=processes,
        client_tls=ClientTls("/run/pgb/tls.crt", "/run/pgb/tls.key"),
        stats_users=("pgbouncer_stats",),
        **numbers,
    )


def parsed(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        delimiters=("=",), comment_prefixes=(";",), interpolation=None
    )
    parser.read_string(text)
    return parser


def test_transaction_pooling_with_scram_and_tls_on_both_legs():
    ini = parsed(render_ini(settings(default_pool_size=8, max_db_connections=10))[0])
    bouncer = ini["pgbouncer"]
    assert bouncer["pool_mode"] == "transaction"
    assert bouncer["auth_type"] == "scram-sha-256"
    assert bouncer["default_pool_size"] == "8"
    assert bouncer["max_db_connections"] == "10"
    assert bouncer["server_tls_sslmode"] == "verify-full"
    assert bouncer["server_tls_ca_file"] == "/etc/ssl/rds.pem"
    assert bouncer["client_tls_sslmode"] == "require"
    assert bouncer["tcp_keepalive"] == "1"
    assert int(bouncer["tcp_keepidle"]) < 350
    assert bouncer["ignore_startup_parameters"] == "extra_float_digits"
    assert ini["databases"]["app"] == "host=db.internal port=5432 dbname=app"


def test_only_settings_the_version_knows_are_emitted():
    old = parsed(render_ini(settings(version=(1, 18)))[0])["pgbouncer"]
    new = parsed(render_ini(settings(version=(1, 24), max_prepared_statements=100))[0])["pgbouncer"]
    assert "max_prepared_statements" not in old
    assert new["max_prepared_statements"] == "100"
    assert "tcp_user_timeout" in old  # 1.14+
    assert "tcp_user_timeout" not in parsed(render_ini(settings(version=(1, 13)))[0])["pgbouncer"]


def test_a_setting_the_version_cannot_honour_is_refused_by_name():
    with pytest.raises(
        UnsupportedSettingError, match=r"max_prepared_statements 100 needs PgBouncer 1\.21\+"
    ):
        render_ini(settings(version=(1, 18), max_prepared_statements=100))
    with pytest.raises(
        UnsupportedSettingError, match=r"processes 2 needs peer_id \(PgBouncer 1\.19\+\)"
    ):
        render_ini(settings(version=(1, 18), processes=2))
    with pytest.raises(UnsupportedSettingError, match="extra setting max_user_client_connections"):
        render_ini(settings(version=(1, 18), extra={"max_user_client_connections": "5"}))
    with pytest.raises(UnsupportedSettingError, match=r"PgBouncer 1\.11 is older"):
        render_ini(settings(version=(1, 11)))


def test_several_processes_share_the_port_with_their_own_files_and_peers():
    texts = render_ini(settings(version=(1, 24), processes=3))
    assert len(texts) == 3
    seen = set()
    for index, text in enumerate(texts, start=1):
        ini = parsed(text)
        bouncer = ini["pgbouncer"]
        assert bouncer["so_reuseport"] == "1"
        assert bouncer["peer_id"] == str(index)
        assert bouncer["listen_port"] == "6432"
        seen.add((bouncer["pidfile"], bouncer["unix_socket_dir"]))
        assert dict(ini["peers"]) == {str(i): f"host=/run/pgb/{i} port=6432" for i in range(1, 4)}
    assert len(seen) == 3


def test_old_version_may_rehearse_several_processes_only_when_asked():
    texts = render_ini(settings(version=(1, 18), processes=2, allow_lost_cancels=True))
    bouncer = parsed(texts[0])["pgbouncer"]
    assert bouncer["so_reuseport"] == "1"
    assert "peer_id" not in bouncer
    assert "[peers]" not in texts[0]


def test_numbers_over_the_database_share_show_the_arithmetic():
    with pytest.raises(
        PgBouncerConfigError,
        match="processes 2 x max_db_connections 12 = 24 exceed the task's database share 20",
    ):
        render_ini(
            settings(processes=2, default_pool_size=10, max_db_connections=12, database_share=20)
        )
    render_ini(
        settings(processes=2, default_pool_size=10, max_db_connections=10, database_share=20)
    )


def test_pool_plus_reserve_must_fit_max_db_connections():
    with pytest.raises(
        PgBouncerConfigError,
        match=r"default_pool_size 10 \+ reserve_pool_size 5 = 15 exceed max_db_connections 12",
    ):
        render_ini(settings(default_pool_size=10, reserve_pool_size=5, max_db_connections=12))


def test_clients_backlog_and_file_descriptors_are_consistent():
    with pytest.raises(
        PgBouncerConfigError,
        match=r"max_client_conn 5000 \+ max_db_connections 20 \+ margin 64 = 5084 file "
        r"descriptors exceed the nofile limit 4096",
    ):
        render_ini(settings(max_client_conn=5000, fd_limit=4096))
    with pytest.raises(
        PgBouncerConfigError, match=r"listen_backlog 128 is below max_client_conn 5000 / 4 = 1250"
    ):
        render_ini(settings(max_client_conn=5000, listen_backlog=128))
    render_ini(settings(max_client_conn=5000, fd_limit=65536))


def test_keepalives_and_idle_reaping_stay_below_the_nlb_idle_timeout():
    with pytest.raises(PgBouncerConfigError, match="tcp_keepidle_s 400 must be below the NLB"):
        render_ini(settings(tcp_keepidle_s=400))
    with pytest.raises(PgBouncerConfigError, match="client_idle_timeout_s 350 must be below"):
        render_ini(settings(client_idle_timeout_s=350))


def test_verify_full_needs_the_ca_bundle():
    bad = dataclasses.replace(settings(), database=DatabaseTarget(host="db", dbname="app"))
    with pytest.raises(
        PgBouncerConfigError, match=r"database\.sslmode verify-full needs database\.ca_file"
    ):
        render_ini(bad)


def test_each_process_needs_its_own_paths():
    bad = dataclasses.replace(
        settings(version=(1, 24), processes=2), paths=(paths(1)[0], paths(1)[0])
    )
    with pytest.raises(PgBouncerConfigError, match="distinct pidfile and unix_socket_dir"):
        render_ini(bad)


def test_auth_file_holds_verifiers_only():
    text = render_auth_file({"app_user": VERIFIER, 'we"ird': VERIFIER})
    assert f'"app_user" "{VERIFIER}"\n' in text
    assert f'"we""ird" "{VERIFIER}"\n' in text
    with pytest.raises(PgBouncerConfigError, match="cannot go in the auth file"):
        render_auth_file({"a\nb": VERIFIER})
    with pytest.raises(PgBouncerConfigError, match="'app_user' is not a SCRAM-SHA-256 verifier"):
        render_auth_file({"app_user": "plaintext-password"})
    with pytest.raises(PgBouncerConfigError, match="md5"):
        render_auth_file({"app_user": "md5abcdef"})


def test_console_users_need_a_verifier():
    with pytest.raises(PgBouncerConfigError, match="pgbouncer_stats have no verifier"):
        render(settings(), {"app_user": VERIFIER})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("PgBouncer 1.18.0", (1, 18)), ("1.24.1", (1, 24)), ("1.25", (1, 25))],
)
def test_versions_parse(text, expected):
    assert parse_version(text) == expected


def test_a_bad_version_is_refused():
    with pytest.raises(PgBouncerConfigError, match=r"not of the form MAJOR\.MINOR"):
        parse_version("latest")

"""SCRAM verifiers computed here are byte-for-byte what PostgreSQL computes."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from pgbouncer import scram

PASSWORDS = [
    "simple-ascii-password",
    "with space and ctrl\x07",
    "caf\u00e9 \u00fcber",  # non-ASCII, already NFKC
    "\ufb01le\u00a0nbsp",  # ligature fi and a no-break space: SASLprep maps both
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",  # RTL text
    "mixed\u0627latin",  # invalid bidi: PostgreSQL falls back to the raw bytes
]


@pytest.mark.integration
@pytest.mark.parametrize("password", PASSWORDS)
def test_verifier_matches_what_postgresql_stores(postgres, password):
    with postgres.connect_admin() as admin:
        admin.execute("drop role if exists scram_probe")
        admin.execute(
            sql.SQL("create role scram_probe login password {}").format(sql.Literal(password))
        )
        row = admin.execute(
            "select rolpassword from pg_authid where rolname = 'scram_probe'"
        ).fetchone()
        admin.execute("drop role scram_probe")
    assert row is not None
    stored = scram.parse(row[0])
    ours = scram.compute(password, stored.salt, stored.iterations)
    assert str(ours) == row[0]
    assert scram.matches(password, row[0])
    assert not scram.matches(password + "x", row[0])


@pytest.mark.integration
def test_an_installed_verifier_lets_the_role_log_in(postgres):
    verifier = scram.make_verifier("installed-pw", iterations=8192)
    with postgres.connect_admin() as admin:
        admin.execute("drop role if exists scram_installed")
        admin.execute(
            sql.SQL("create role scram_installed login password {}").format(sql.Literal(verifier))
        )
    try:
        with psycopg.connect(
            postgres.conninfo(user="scram_installed", password="installed-pw")
        ) as c:
            assert c.execute("select current_user").fetchone() == ("scram_installed",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(postgres.conninfo(user="scram_installed", password="wrong"))
    finally:
        with postgres.connect_admin() as admin:
            admin.execute("drop role scram_installed")


def test_same_salt_and_iterations_give_the_same_verifier():
    salt = b"fixed-salt-16byt"
    assert scram.make_verifier("pw", salt=salt) == scram.make_verifier("pw", salt=salt)
    assert scram.make_verifier("pw", salt=salt) != scram.make_verifier(
        "pw", salt=b"other-salt-16byt"
    )
    assert scram.make_verifier("pw", salt=salt, iterations=4096) != scram.make_verifier(
        "pw", salt=salt, iterations=4097
    )
    assert scram.make_verifier("pw") != scram.make_verifier("pw")  # fresh salt each time


def test_verifier_format():
    text = scram.make_verifier("pw", salt=b"0123456789abcdef")
    assert text.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    parsed = scram.parse(text)
    assert (parsed.iterations, parsed.salt) == (4096, b"0123456789abcdef")
    assert str(parsed) == text


@pytest.mark.parametrize(
    "bad",
    ["plaintext", "md5abc", "SCRAM-SHA-256$x:abc$def:ghi", "SCRAM-SHA-256$4096:AAAA$AAAA:AAAA"],
)
def test_malformed_verifiers_are_refused(bad):
    with pytest.raises(scram.ScramError):
        scram.parse(bad)


def test_bad_parameters_are_refused():
    with pytest.raises(scram.ScramError, match="iterations 0"):
        scram.compute("pw", b"salt", 0)
    with pytest.raises(scram.ScramError, match="salt"):
        scram.compute("pw", b"", 4096)

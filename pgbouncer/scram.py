"""SCRAM-SHA-256 verifiers in PostgreSQL's `rolpassword` format (RFC 5802 / RFC 7677).

`SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>`

The kit installs this exact verifier as `app_user`'s password and writes the same string to
PgBouncer's auth file, so the pooler holds no plaintext password yet can log into the database
with the client's proof. The salt is an input, so a redeploy with the same salt and iteration
count produces the same verifier and changes nothing.

Written with the standard library (hashlib.pbkdf2_hmac, hmac, stringprep): it is a few lines of
well-specified arithmetic, and the pooler image then needs no third-party package to compute it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

DEFAULT_ITERATIONS = 4096  # PostgreSQL's scram_iterations default
SALT_BYTES = 16  # what PostgreSQL generates


class ScramError(ValueError):
    """A malformed verifier or unusable parameters."""


@dataclass(frozen=True)
class ScramVerifier:
    """The parts of a verifier; `str()` gives the `rolpassword` text."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def __str__(self) -> str:
        b64 = base64.b64encode
        return (
            f"SCRAM-SHA-256${self.iterations}:{b64(self.salt).decode()}"
            f"${b64(self.stored_key).decode()}:{b64(self.server_key).decode()}"
        )


def _in_any(char: str, tables: tuple[object, ...]) -> bool:
    return any(table(char) for table in tables)  # type: ignore[operator]


def saslprep(text: str) -> str | None:
    """RFC 4013 SASLprep, or None where PostgreSQL would fall back to the raw bytes.

    PostgreSQL normalises with SASLprep and, when the password is not a valid SASLprep string,
    uses it unchanged; returning None lets `password_bytes` mirror that exactly.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    if not normal:
        return None
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(_in_any(c, prohibited) for c in normal):
        return None
    has_ral = any(stringprep.in_table_d1(c) for c in normal)
    if has_ral and (
        any(stringprep.in_table_d2(c) for c in normal)
        or not stringprep.in_table_d1(normal[0])
        or not stringprep.in_table_d1(normal[-1])
    ):
        return None
    return normal


def password_bytes(password: str) -> bytes:
    """The bytes PostgreSQL feeds to PBKDF2: SASLprep'd when valid, else the raw UTF-8."""
    if password.isascii():
        # SASLprep is the identity on printable ASCII; control characters make PostgreSQL
        # fall back to the raw bytes, which is the same result.
        return password.encode()
    prepared = saslprep(password)
    return (prepared if prepared is not None else password).encode()


def compute(password: str, salt: bytes, iterations: int = DEFAULT_ITERATIONS) -> ScramVerifier:
    """The verifier for `password`, deterministic for a given salt and iteration count."""
    if iterations < 1:
        raise ScramError(f"iterations {iterations} must be at least 1")
    if not salt:
        raise ScramError("salt must not be empty")
    salted = hashlib.pbkdf2_hmac("sha256", password_bytes(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return ScramVerifier(iterations, salt, stored_key, server_key)


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_BYTES)


def make_verifier(
    password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> str:
    """The `rolpassword` text; pass a stored salt so a redeploy reproduces the same string."""
    return str(compute(password, salt if salt is not None else new_salt(), iterations))


def parse(text: str) -> ScramVerifier:
    """Split a `SCRAM-SHA-256$...` string into its parts, refusing anything else."""
    try:
        scheme, rest = text.split("$", 1)
        iter_salt, keys = rest.split("$", 1)
        iterations_text, salt_b64 = iter_salt.split(":", 1)
        stored_b64, server_b64 = keys.split(":", 1)
        if scheme != "SCRAM-SHA-256":
            raise ValueError(scheme)
        verifier = ScramVerifier(
            int(iterations_text),
            base64.b64decode(salt_b64, validate=True),
            base64.b64decode(stored_b64, validate=True),
            base64.b64decode(server_b64, validate=True),
        )
    except ValueError:
        raise ScramError(
            "not a SCRAM-SHA-256 verifier (expected "
            "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)"
        ) from None
    if len(verifier.stored_key) != 32 or len(verifier.server_key) != 32:
        raise ScramError("SCRAM-SHA-256 keys must be 32 bytes each")
    return verifier


def matches(password: str, verifier: str) -> bool:
    """Whether `password` produces `verifier` (same salt and iterations)."""
    parsed = parse(verifier)
    again = compute(password, parsed.salt, parsed.iterations)
    return hmac.compare_digest(str(again), str(parsed))

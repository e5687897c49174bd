"""The expiry of the certificate the task serves, read from its PEM file with the standard library.

The image carries psycopg and boto3 only; reading one field (the validity's notAfter, RFC 5280
4.1.2.5) needs no X.509 library: a few lines of DER walking do it.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path

PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)
SEQUENCE, UTC_TIME, GENERALIZED_TIME, EXPLICIT_0 = 0x30, 0x17, 0x18, 0xA0


class CertificateError(ValueError):
    """The file holds no certificate this reader can parse."""


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `at`."""
    if at + 2 > len(der):
        raise CertificateError("truncated DER element")
    tag, length = der[at], der[at + 1]
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or start + count > len(der):
            raise CertificateError("unsupported DER length")
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    end = start + length
    if end > len(der):
        raise CertificateError("truncated DER content")
    return tag, start, end


def _time(tag: int, text: str) -> dt.datetime:
    # RFC 5280 4.1.2.5.1/2: UTCTime YYMMDDHHMMSSZ (YY >= 50 is 19YY), GeneralizedTime with 4 digits.
    if tag == UTC_TIME:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != GENERALIZED_TIME:
        raise CertificateError(f"unexpected time tag 0x{tag:02x}")
    return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)


def not_after(pem: str) -> dt.datetime:
    """The first certificate's notAfter (the leaf, when the file holds a chain)."""
    match = PEM.search(pem)
    if match is None:
        raise CertificateError("no PEM certificate found")
    der = base64.b64decode("".join(match.group(1).split()))
    tag, start, _ = _element(der, 0)  # Certificate
    if tag != SEQUENCE:
        raise CertificateError("not a certificate")
    tag, at, _ = _element(der, start)  # tbsCertificate
    if tag != SEQUENCE:
        raise CertificateError("not a certificate")
    tag, _, end = _element(der, at)
    if tag == EXPLICIT_0:  # version
        at = end
    for _field in ("serialNumber", "signature", "issuer"):
        _, _, at = _element(der, at)
    tag, start, _ = _element(der, at)  # validity
    if tag != SEQUENCE:
        raise CertificateError("no validity sequence")
    _, _, after_start = _element(der, start)  # notBefore
    tag, content, end = _element(der, after_start)  # notAfter
    return _time(tag, der[content:end].decode("ascii"))


def days_left(path: str | Path, now: dt.datetime | None = None) -> float:
    """Days until the certificate in `path` expires (negative once expired)."""
    expiry = not_after(Path(path).read_text())
    moment = now or dt.datetime.now(dt.UTC)
    return (expiry - moment).total_seconds() / 86400

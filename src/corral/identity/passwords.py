"""Human console credentials: argon2id password hashes and TOTP second factors.

Only the hash of a password is ever kept; the TOTP secret is kept because verifying a code needs
it. Neither appears in any repr, so a stray log line or traceback cannot leak one.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import pyotp
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from corral.errors import InvalidInputError

__all__ = [
    "MIN_PASSWORD_CHARS",
    "TotpEnrolment",
    "check_password_policy",
    "hash_password",
    "new_totp",
    "normalize_totp_code",
    "verify_password",
    "verify_totp",
]

MIN_PASSWORD_CHARS = 12
TOTP_ISSUER = "Corral"
# argon2-cffi's defaults are RFC 9106's low-memory profile; pin the variant to argon2id.
_HASHER = PasswordHasher(type=Type.ID)
# Verified against when a user has no password, so a missing user costs the same time.
_DUMMY_HASH = _HASHER.hash("corral-no-password-set")


def check_password_policy(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInputError(f"password too short: use at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > 1024:
        raise InvalidInputError("password too long: use at most 1024 characters")
    return password


def hash_password(password: str) -> str:
    """An argon2id hash (with its own salt and parameters) of a password that meets policy."""
    return _HASHER.hash(check_password_policy(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; a missing or malformed hash never matches."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class TotpEnrolment:
    """A new TOTP secret and its otpauth:// URI (for a QR code); shown once, never logged."""

    secret: str = field(repr=False)
    uri: str = field(repr=False)


def new_totp(account: str) -> TotpEnrolment:
    secret = pyotp.random_base32()
    uri = pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=TOTP_ISSUER)
    return TotpEnrolment(secret=secret, uri=uri)


_TOTP_CODE = re.compile(r"[0-9]{6}")


def normalize_totp_code(code: str) -> str | None:
    """The one spelling of a TOTP code: six ASCII digits, with the spaces people type between
    groups ("123 456") taken out; None for anything else. `str.isdigit` (and pyotp's NFKC
    comparison) would take full-width or other Unicode digits too, so one code could be
    spelled several ways, each a different replay key: only this spelling is ever used."""
    compact = code.strip(" \t").replace(" ", "")
    return compact if _TOTP_CODE.fullmatch(compact) else None


def verify_totp(secret: str | None, code: str, now: float | None = None) -> bool:
    """A 6-digit code for the current 30 s step, or one step either side (clock drift).
    Pass the code as `normalize_totp_code` returned it; any other spelling is refused."""
    if not secret or normalize_totp_code(code) != code:
        return False
    for_time = int(time.time() if now is None else now)
    return bool(pyotp.TOTP(secret).verify(code, for_time=for_time, valid_window=1))

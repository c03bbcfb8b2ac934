"""Issue and verify Corral's access tokens: JWTs (RFC 9068) signed by the server keyring.

Tokens are short-lived (5 minutes by default) and bound with `cnf.jkt` to the key of the
DPoP proof presented when they were issued, so a stolen token is useless without that key.
A session token's audience is one session: it opens that session's URLs and no others.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.identity import _jose
from corral.identity.errors import InvalidTokenError
from corral.identity.keys import SigningKeyring

__all__ = [
    "AT_TYP",
    "DEFAULT_LIFETIME",
    "AccessTokenClaims",
    "IssuedToken",
    "VerifiedTokenCache",
    "issue_access_token",
    "verify_access_token",
]

AT_TYP = "at+jwt"
_ACCEPTED_TYP = frozenset({"at+jwt", "application/at+jwt"})
DEFAULT_LIFETIME = 300.0
DEFAULT_LEEWAY = 30.0


@dataclass(frozen=True)
class AccessTokenClaims:
    """The verified content of an access token."""

    issuer: str
    subject: str
    audience: str
    client_id: str
    token_id: str
    issued_at: float
    not_before: float
    expires_at: float
    #: thumbprint of the key the token is bound to; None for a plain bearer token
    jkt: str | None
    #: the session this token is scoped to, if any
    session_id: str | None
    scope: tuple[str, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class IssuedToken:
    """What the token endpoint answers (`access_token`, `token_type`, `expires_in`)."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    claims: AccessTokenClaims


def issue_access_token(
    keyring: SigningKeyring,
    *,
    issuer: str,
    subject: str,
    audience: str,
    client_id: str,
    jkt: str | None,
    now: float | None = None,
    lifetime: float = DEFAULT_LIFETIME,
    scope: Iterable[str] = (),
    session_id: str | None = None,
) -> IssuedToken:
    """Sign a token with the current key; `jkt` binds it to a DPoP key (None: bearer)."""
    now = time.time() if now is None else now
    issued_at = int(now)
    scopes = tuple(scope)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "client_id": client_id,
        "jti": secrets.token_urlsafe(16),
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + int(lifetime),
    }
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    if scopes:
        claims["scope"] = " ".join(scopes)
    if session_id is not None:
        claims["sid"] = session_id
    key = keyring.current
    token = _jose.sign({"typ": AT_TYP, "alg": key.alg, "kid": key.kid}, claims, key.private)
    return IssuedToken(
        access_token=token,
        token_type="DPoP" if jkt is not None else "Bearer",
        expires_in=int(lifetime),
        claims=_claims(claims),
    )


def _fail(message: str) -> InvalidTokenError:
    return InvalidTokenError(f"access token refused: {message}")


def _claims(raw: Mapping[str, Any]) -> AccessTokenClaims:
    """Typed claims; JoseFailure when a required one is missing or mistyped."""
    cnf = raw.get("cnf")
    jkt: str | None = None
    if cnf is not None:
        if not isinstance(cnf, dict):
            raise _jose.JoseFailure("cnf is not an object")
        jkt = _jose.string_claim(cnf, "jkt", max_len=128)
    sid = raw.get("sid")
    if sid is not None and not isinstance(sid, str):
        raise _jose.JoseFailure("sid is not a string")
    scope = raw.get("scope", "")
    if not isinstance(scope, str):
        raise _jose.JoseFailure("scope is not a string")
    times = {}
    for name in ("iat", "nbf", "exp"):
        value = _jose.number_claim(raw, name)
        if value is None:
            raise _jose.JoseFailure(f"{name} is missing")
        times[name] = value
    return AccessTokenClaims(
        issuer=_jose.string_claim(raw, "iss"),
        subject=_jose.string_claim(raw, "sub"),
        audience=_jose.string_claim(raw, "aud", max_len=2048),
        client_id=_jose.string_claim(raw, "client_id"),
        token_id=_jose.string_claim(raw, "jti"),
        issued_at=times["iat"],
        not_before=times["nbf"],
        expires_at=times["exp"],
        jkt=jkt,
        session_id=sid,
        scope=tuple(scope.split()),
        raw=raw,
    )


class VerifiedTokenCache:
    """Tokens whose signature already verified, so the next request skips that step.

    Keyed by the exact token text: a hit needs the very bytes whose signature was checked.
    Only the signature and parsing are remembered; key status, issuer, audience and lifetime
    are checked on every use. Bounded; the least recently used entry goes first.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[str, AccessTokenClaims]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> tuple[str, AccessTokenClaims] | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                self._entries.move_to_end(token)
            return entry

    def put(self, token: str, kid: str, claims: AccessTokenClaims) -> None:
        with self._lock:
            self._entries[token] = (kid, claims)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


def _verify_signed(
    token: str | None, keyring: SigningKeyring, now: float
) -> tuple[str, AccessTokenClaims]:
    """Steps 1 to 6: the token is ours and well formed; returns (kid, claims)."""
    # 1. A compact JWS with a JSON payload.
    try:
        parsed = _jose.parse(token)
    except _jose.JoseFailure as exc:
        raise _fail(str(exc)) from None
    header = parsed.header

    # 2. typ says access token (RFC 9068 section 4), so a DPoP proof, an ID token or a client
    #    assertion signed by someone can never be taken for one.
    typ = header.get("typ")
    if not isinstance(typ, str) or typ not in _ACCEPTED_TYP:
        raise _fail("typ is not at+jwt")

    try:
        # 3. alg is on the allowlist: asymmetric only, never "none", never HMAC (a token
        #    "signed" with our public key as an HMAC secret dies here).
        alg = _jose.check_alg(header)
    except _jose.JoseFailure as exc:
        raise _fail(str(exc)) from None

    # 4. kid names a key of ours that has not retired, and alg is that key's algorithm.
    key = keyring.verification_key(header.get("kid"), now)
    if key is None:
        raise _fail("signed by an unknown or retired key")
    if alg != key.alg:
        raise _fail("alg does not match the signing key")

    try:
        # 5. The signature verifies with that key.
        _jose.verify_signature(parsed, key.private)
        # 6. The claims are there with the right types.
        return key.kid, _claims(parsed.claims)
    except _jose.JoseFailure as exc:
        raise _fail(str(exc)) from None


def verify_access_token(
    token: str | None,
    *,
    keyring: SigningKeyring,
    issuer: str,
    audience: str,
    now: float | None = None,
    leeway: float = DEFAULT_LEEWAY,
    cache: VerifiedTokenCache | None = None,
) -> AccessTokenClaims:
    """Verify signature, issuer, audience and lifetime; return the claims.

    With `cache`, steps 1 to 6 run once per token; step 4's key check runs on every use, so a
    pruned key stops its tokens even when they are cached.
    """
    now = time.time() if now is None else now
    hit = cache.get(token) if cache is not None and isinstance(token, str) else None
    if hit is None:
        kid, claims = _verify_signed(token, keyring, now)
        if cache is not None and isinstance(token, str):
            cache.put(token, kid, claims)
    else:
        kid, claims = hit
        if keyring.verification_key(kid, now) is None:
            raise _fail("signed by an unknown or retired key")

    # 7. The issuer is us, exactly.
    if claims.issuer != issuer:
        raise _fail("issuer is not this server")

    # 8. The audience is this resource, exactly: a session token opens only its session.
    if claims.audience != audience:
        raise _fail("audience is not this resource")

    # 9. Within its lifetime, allowing `leeway` seconds of clock difference.
    if claims.expires_at <= now - leeway:
        raise _fail("expired")
    if claims.not_before > now + leeway or claims.issued_at > now + leeway:
        raise _fail("not valid yet")
    return claims

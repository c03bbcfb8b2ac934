"""Verify a `private_key_jwt` client assertion (RFC 7523 section 3, RFC 7521 section 4.2).

At the token endpoint a client proves who it is by signing a short JWT with one of its
registered keys. The server keeps only the public halves, so a leaked database row cannot be
used to log in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import Key

from corral.identity import _jose
from corral.identity.errors import InvalidClientError
from corral.identity.replay import ReplayGuard

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "AssertionSettings",
    "VerifiedClient",
    "verify_client_assertion",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# typ values a client assertion may carry; a DPoP proof or an access token never passes.
_ACCEPTED_TYP = frozenset({"JWT", "client-authentication+jwt"})


@dataclass(frozen=True)
class AssertionSettings:
    """`leeway` absorbs clock differences; `max_lifetime` caps exp - iat, which also caps how
    long a jti must be remembered."""

    leeway: float = 30.0
    max_lifetime: float = 600.0


@dataclass(frozen=True)
class VerifiedClient:
    """Who signed the assertion, and with which of its keys (for the audit log)."""

    client_id: str
    key_thumbprint: str
    kid: str


def _fail(message: str) -> InvalidClientError:
    return InvalidClientError(f"client assertion refused: {message}")


def _candidate_keys(
    client_keys: Sequence[Mapping[str, Any]], kid: object, alg: str
) -> list[tuple[Key, str]]:
    """The client's registered keys that fit the header: the one named by kid (its registered
    kid, or its thumbprint when it was registered without one), else every key of alg's shape."""
    found: list[tuple[Key, str]] = []
    for jwk in client_keys:
        try:
            key = _jose.import_public_jwk(dict(jwk), alg)
        except _jose.JoseFailure:
            continue  # another key type, or a malformed registration: not a candidate
        registered = jwk.get("kid")
        key_id = registered if isinstance(registered, str) else key.thumbprint()
        if kid is None or kid == key_id:
            found.append((key, key_id))
    return found


def verify_client_assertion(
    assertion: str | None,
    *,
    client_id: str,
    token_url: str,
    client_keys: Sequence[Mapping[str, Any]],
    replay: ReplayGuard,
    now: float,
    settings: AssertionSettings = AssertionSettings(),
) -> VerifiedClient:
    """Check that `client_id` signed `assertion` for our token endpoint, just now, once."""
    leeway = settings.leeway
    # 1. A compact JWS with a JSON payload.
    try:
        parsed = _jose.parse(assertion)
    except _jose.JoseFailure as exc:
        raise _fail(str(exc)) from None
    header, claims = parsed.header, parsed.claims

    # 2. typ, when present, names a plain or client-authentication JWT.
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ not in _ACCEPTED_TYP):
        raise _fail("typ is not a client assertion type")

    try:
        # 3. alg is on the allowlist: asymmetric only, never "none", never HMAC.
        alg = _jose.check_alg(header)
        # 4. The key is one the client registered (by kid when given), and 5. one of them
        #    verifies the signature.
        candidates = _candidate_keys(client_keys, header.get("kid"), alg)
        if not candidates:
            raise _jose.JoseFailure("no registered key of this client fits it")
        signer: tuple[Key, str] | None = None
        for key, kid in candidates:
            try:
                _jose.verify_signature(parsed, key)
            except _jose.JoseFailure:
                continue
            signer = (key, kid)
            break
        if signer is None:
            raise _jose.JoseFailure("signature does not verify with the client's keys")
        # 6. The claims are there with the right types.
        iss = _jose.string_claim(claims, "iss")
        sub = _jose.string_claim(claims, "sub")
        jti = _jose.string_claim(claims, "jti", max_len=256)
        exp = _jose.number_claim(claims, "exp")
        nbf = _jose.number_claim(claims, "nbf")
        iat = _jose.number_claim(claims, "iat")
    except _jose.JoseFailure as exc:
        raise _fail(str(exc)) from None

    # 7. iss and sub are both the client id (RFC 7523 section 3, points 1 and 2).
    if iss != client_id or sub != client_id:
        raise _fail("iss and sub must both be the client id")

    # 8. aud names our token endpoint (a string, or a list holding it).
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if token_url not in audiences:
        raise _fail("aud is not this token endpoint")

    # 9. Time: exp in the future, nbf and iat not in the future, all within leeway, and a
    #    short lifetime so its jti need not be remembered for long.
    if exp is None:
        raise _fail("exp is missing")
    if exp <= now - leeway:
        raise _fail("expired")
    if nbf is not None and nbf > now + leeway:
        raise _fail("not valid yet (nbf)")
    if iat is not None and iat > now + leeway:
        raise _fail("issued in the future (iat)")
    if exp - (iat if iat is not None else now) > settings.max_lifetime:
        raise _fail(f"lives longer than {settings.max_lifetime:.0f} s")

    # 10. jti is used once per client, remembered until the assertion expires anyway.
    if not replay.first_use(
        f"assertion:{client_id}:{jti}", expires_at=exp + leeway, now=now, owner=client_id
    ):
        raise _fail("this assertion was already used (jti replayed)")
    key, kid = signer
    return VerifiedClient(client_id=client_id, key_thumbprint=key.thumbprint(), kid=kid)

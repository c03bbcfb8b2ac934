"""Verify a DPoP proof (RFC 9449 section 4.3): the caller holds the key a token is bound to.

A proof is a JWT the client signs for one request with a key whose public half it sends in the
header. Checking it proves possession of that key for this method and URL, now, once; the
result is the key's thumbprint, which a bound token must name in `cnf.jkt`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from corral.identity import _jose
from corral.identity._urls import normalize_htu
from corral.identity.errors import InvalidDPoPProofError, UseDPoPNonceError
from corral.identity.nonces import NonceSource
from corral.identity.replay import ReplayGuard

__all__ = [
    "DPOP_TYP",
    "CheckedProof",
    "DPoPSettings",
    "check_dpop_proof",
    "record_dpop_proof",
    "verify_dpop_proof",
]

DPOP_TYP = "dpop+jwt"


@dataclass(frozen=True)
class DPoPSettings:
    """How strict proof checking is.

    `max_age` bounds how old a proof may be (and how long its jti is remembered);
    `max_skew` how far in the future its iat may lie (client clocks run fast);
    `nonces`, when set, makes every proof carry a fresh server nonce.
    """

    max_age: float = 60.0
    max_skew: float = 60.0
    nonces: NonceSource | None = None


@dataclass(frozen=True)
class CheckedProof:
    """A proof that passed every check but single use: its key's thumbprint, its `jti`, and
    until when that jti must be remembered."""

    jkt: str
    jti: str
    expires_at: float


def _fail(message: str) -> InvalidDPoPProofError:
    return InvalidDPoPProofError(f"DPoP proof refused: {message}")


def verify_dpop_proof(
    proof: str | None,
    *,
    method: str,
    url: str,
    replay: ReplayGuard,
    now: float,
    access_token: str | None = None,
    settings: DPoPSettings = DPoPSettings(),
    owner: str = "",
) -> str:
    """Check `proof` for a request of `method` to `url` and record its jti in `owner`'s share
    of `replay`; return its key's RFC 7638 thumbprint.

    `access_token` is the token the request presents (its hash must be the proof's `ath`).
    `owner` is the authenticated identity the request is for (the token's subject).
    """
    checked = check_dpop_proof(
        proof, method=method, url=url, now=now, access_token=access_token, settings=settings
    )
    record_dpop_proof(checked, replay=replay, now=now, owner=owner)
    return checked.jkt


def record_dpop_proof(
    checked: CheckedProof, *, replay: ReplayGuard, now: float, owner: str
) -> None:
    """Step 12: the proof's jti is used once per key, remembered until step 9 would refuse the
    proof anyway. Call it only once `owner` is authenticated, so nobody can fill another's
    share (or anyone's) with proofs of requests that fail."""
    if not replay.first_use(
        f"dpop:{checked.jkt}:{checked.jti}", expires_at=checked.expires_at, now=now, owner=owner
    ):
        raise _fail("this proof was already used (jti replayed)")


def check_dpop_proof(
    proof: str | None,
    *,
    method: str,
    url: str,
    now: float,
    access_token: str | None = None,
    settings: DPoPSettings = DPoPSettings(),
) -> CheckedProof:
    """Steps 1 to 11 for a request of `method` to `url`: everything but single use, which
    `record_dpop_proof` adds once the caller is authenticated.

    `access_token` is the token the request presents (its hash must be the proof's `ath`); pass
    None at the token endpoint, where no token exists yet.
    """
    # 1. Exactly one proof, a compact JWS with a JSON payload. Several DPoP header fields
    #    arrive joined by commas, which a JWS never contains.
    if not proof:
        raise _fail("the request has no DPoP header")
    if "," in proof:
        raise _fail("more than one DPoP header")
    try:
        parsed = _jose.parse(proof)
    except _jose.JoseFailure as exc:
        raise _fail(str(exc)) from None
    header, claims = parsed.header, parsed.claims

    # 2. typ is exactly "dpop+jwt", so no other JWT (an access token, an ID token, a client
    #    assertion) can pass for a proof.
    if header.get("typ") != DPOP_TYP:
        raise _fail("typ is not dpop+jwt")

    try:
        # 3. alg is on the allowlist: asymmetric only, never "none", never HMAC.
        alg = _jose.check_alg(header)
        # 4. jwk is present and a public key only (no d, p, q, ...) of the shape alg needs.
        key = _jose.import_public_jwk(header.get("jwk"), alg)
        # 5. The signature verifies with that jwk.
        _jose.verify_signature(parsed, key)
        # 6. The claims are there with the right types.
        jti = _jose.string_claim(claims, "jti", max_len=256)
        htm = _jose.string_claim(claims, "htm", max_len=16)
        htu = _jose.string_claim(claims, "htu", max_len=2048)
        iat = _jose.number_claim(claims, "iat")
    except _jose.JoseFailure as exc:
        raise _fail(str(exc)) from None
    if iat is None:
        raise _fail("iat is missing")

    # 7. htm is this request's method (case-sensitive, RFC 9110 methods are).
    if htm != method:
        raise _fail("htm does not match the request method")

    # 8. htu is this request's URL, both normalized, query and fragment ignored.
    try:
        same_url = normalize_htu(htu) == normalize_htu(url)
    except ValueError:
        same_url = False
    if not same_url:
        raise _fail("htu does not match the request URL")

    # 9. iat is recent: not older than max_age, not further ahead than max_skew.
    if iat < now - settings.max_age or iat > now + settings.max_skew:
        raise _fail("iat is outside the accepted window; check the client clock")

    # 10. With an access token, ath is base64url(SHA-256(token)), binding proof to token.
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str):
            raise _fail("ath is missing")
        if not hmac.compare_digest(ath.encode(), _jose.b64url_sha256(access_token).encode()):
            raise _fail("ath does not match the access token")

    # 11. When the server demands a nonce, the proof carries a live one of ours; otherwise
    #     the client is told to retry with a fresh nonce.
    if settings.nonces is not None and not settings.nonces.check(claims.get("nonce"), now):
        raise UseDPoPNonceError(
            "this server requires a DPoP nonce", nonce=settings.nonces.current(now)
        )

    # 12. (record_dpop_proof) jti is used once per key: recorded last, only for proofs that
    #     passed every check, and remembered until step 9 would refuse the proof anyway.
    return CheckedProof(jkt=key.thumbprint(), jti=jti, expires_at=iat + settings.max_age)

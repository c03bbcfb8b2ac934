"""Authenticate one HTTP request: token, proof of possession, binding, revocation.

This is what every REST and MCP request goes through. It decides only from its arguments and
the injected checks, so it tests without a server, and fails closed: any doubt is a refusal.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

from corral.errors import StoreUnavailableError
from corral.identity.dpop import DPoPSettings, verify_dpop_proof
from corral.identity.errors import AuthError, InvalidTokenError, MissingCredentialsError
from corral.identity.keys import SigningKeyring
from corral.identity.replay import ReplayGuard
from corral.identity.tokens import (
    DEFAULT_LEEWAY,
    AccessTokenClaims,
    VerifiedTokenCache,
    verify_access_token,
)

__all__ = ["Principal", "RevocationCheck", "verify_request"]

#: Called on every request with the verified claims; returns False when the token (jti), the
#: identity (sub) or the session (sid) is revoked, or the identity is disabled. It should read
#: state shared by every worker, so a revocation counts on the very next request.
RevocationCheck = Callable[[AccessTokenClaims], bool]


@dataclass(frozen=True)
class Principal:
    """Who is calling, as established for this one request."""

    subject: str
    client_id: str
    token_id: str
    session_id: str | None
    scope: tuple[str, ...]
    #: thumbprint of the key that signed this request's proof; None for a bearer token
    jkt: str | None
    expires_at: float
    claims: AccessTokenClaims


def _split_authorization(header: str | None) -> tuple[str, str]:
    """(scheme lowercased, token); RFC 9110 auth schemes are case-insensitive."""
    if not header:
        raise MissingCredentialsError("this request needs an Authorization: DPoP header")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if not token or " " in token:
        raise InvalidTokenError("the Authorization header is malformed")
    return scheme.lower(), token


def verify_request(
    method: str,
    url: str,
    authorization: str | None,
    dpop: str | None,
    *,
    keyring: SigningKeyring,
    issuer: str,
    audience: str,
    replay: ReplayGuard,
    revocation: RevocationCheck,
    allow_bearer: bool = False,
    now: float | None = None,
    leeway: float = DEFAULT_LEEWAY,
    dpop_settings: DPoPSettings = DPoPSettings(),  # noqa: B008 (frozen)
    token_cache: VerifiedTokenCache | None = None,
) -> Principal:
    """The principal behind a request to `method url`, or an `AuthError` saying why not.

    `audience` is the resource the request is for: the gateway's own audience, or the session
    id for a session's URLs. Bearer tokens are refused unless `allow_bearer`, and even then
    only tokens that were issued unbound (a DPoP-bound token is never accepted as bearer).
    `token_cache` saves re-checking a token's signature on each request that presents it.
    """
    now = time.time() if now is None else now
    # 1. The Authorization scheme is DPoP (or Bearer where an admin allowed it).
    scheme, token = _split_authorization(authorization)
    if scheme not in ("dpop", "bearer") or (scheme == "bearer" and not allow_bearer):
        raise MissingCredentialsError(
            "this resource takes DPoP-bound tokens only",
            hint="send Authorization: DPoP <token> with a DPoP proof header",
        )

    # 2. The token: signature, algorithm, issuer, audience, expiry and not-before.
    claims = verify_access_token(
        token,
        keyring=keyring,
        issuer=issuer,
        audience=audience,
        now=now,
        leeway=leeway,
        cache=token_cache,
    )

    jkt: str | None = None
    if scheme == "dpop":
        # 3. The token is DPoP-bound (a bearer token cannot be upgraded by adding a proof).
        if claims.jkt is None:
            raise InvalidTokenError("access token refused: it is not DPoP-bound")
        # 4. The proof: typ, alg, public jwk, signature, htm, htu, iat, ath, nonce, jti.
        jkt = verify_dpop_proof(
            dpop,
            method=method,
            url=url,
            replay=replay,
            now=now,
            access_token=token,
            settings=dpop_settings,
            owner=claims.subject,  # authenticated by the token's signature (step 2)
        )
        # 5. Key binding: the proof was signed by the key the token is bound to.
        if not hmac.compare_digest(jkt.encode(), claims.jkt.encode()):
            raise InvalidTokenError("access token refused: invalid DPoP key binding")
    elif claims.jkt is not None:
        # 3'. A DPoP-bound token presented as Bearer is a token used without its key.
        raise InvalidTokenError("access token refused: a DPoP-bound token needs the DPoP scheme")

    # 6. Revocation state and identity status, read on every request; an error in the check
    #    is a refusal, never a pass. A refusal the check explains (revoked, disabled, at high
    #    risk...) is passed on as it is: the caller learns the real reason; so is a store
    #    outage (503, retry after): refused too, but not the token's fault.
    try:
        live = revocation(claims)
    except (AuthError, StoreUnavailableError):
        raise
    except Exception as exc:
        raise InvalidTokenError("access token refused: revocation state unavailable") from exc
    if live is not True:
        raise InvalidTokenError("access token refused: revoked, or the identity is disabled")

    return Principal(
        subject=claims.subject,
        client_id=claims.client_id,
        token_id=claims.token_id,
        session_id=claims.session_id,
        scope=claims.scope,
        jkt=jkt,
        expires_at=claims.expires_at,
        claims=claims,
    )

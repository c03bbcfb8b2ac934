"""What a browser holds for the web console: a session token, and a pending OIDC login.

The console session is an access token signed by Corral's keyring (RFC 9068 shape), audience
`<issuer>/console`, unbound (a browser cannot do DPoP) and therefore accepted only from the
`corral_console` cookie on a few routes (`corral.api.console_auth`), never as an
Authorization header: every other URL demands the issuer audience and a DPoP binding.

A pending OIDC login (state, nonce, PKCE verifier, provider) travels in a short-lived cookie
signed the same way, so any worker can finish the login without shared server state.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field

from corral.identity import _jose
from corral.identity.errors import InvalidTokenError
from corral.identity.keys import SigningKeyring
from corral.identity.tokens import (
    AccessTokenClaims,
    IssuedToken,
    VerifiedTokenCache,
    issue_access_token,
    verify_access_token,
)

__all__ = [
    "CONSOLE_CLIENT_ID",
    "CONSOLE_SCOPE",
    "DEFAULT_SESSION_LIFETIME",
    "LOGIN_STATE_LIFETIME",
    "LoginState",
    "console_audience",
    "issue_console_session",
    "new_login_state",
    "open_login_state",
    "pkce_challenge",
    "seal_login_state",
    "verify_console_session",
]

CONSOLE_SCOPE = "console"
CONSOLE_CLIENT_ID = "corral-console"
DEFAULT_SESSION_LIFETIME = 8 * 3600.0
LOGIN_STATE_LIFETIME = 600.0
_STATE_TYP = "corral-login-state+jwt"


def console_audience(issuer: str) -> str:
    return f"{issuer}/console"


def issue_console_session(
    keyring: SigningKeyring,
    *,
    issuer: str,
    user_id: str,
    lifetime: float = DEFAULT_SESSION_LIFETIME,
    now: float | None = None,
) -> IssuedToken:
    """A console session for `user_id`: unbound, audience `<issuer>/console`, scope console."""
    return issue_access_token(
        keyring,
        issuer=issuer,
        subject=user_id,
        audience=console_audience(issuer),
        client_id=CONSOLE_CLIENT_ID,
        jkt=None,
        now=now,
        lifetime=lifetime,
        scope=(CONSOLE_SCOPE,),
    )


def verify_console_session(
    token: str,
    *,
    keyring: SigningKeyring,
    issuer: str,
    now: float | None = None,
    cache: VerifiedTokenCache | None = None,
) -> AccessTokenClaims:
    """The claims of a console session token (signature, alg, issuer, audience, lifetime),
    which must be the unbound console kind; the caller still evaluates access on them."""
    claims = verify_access_token(
        token, keyring=keyring, issuer=issuer, audience=console_audience(issuer), now=now,
        cache=cache,
    )  # fmt: skip
    if claims.jkt is not None or claims.session_id is not None or claims.scope != (CONSOLE_SCOPE,):
        raise InvalidTokenError("console session refused: not a console session token")
    return claims


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class LoginState:
    """One pending authorization code login: which provider, and the values that bind the
    answer to this browser (state), the ID token to this login (nonce) and the code to us
    (PKCE verifier)."""

    provider: str
    state: str = field(repr=False)
    nonce: str = field(repr=False)
    verifier: str = field(repr=False)
    expires_at: float = 0.0


def new_login_state(
    provider: str, now: float, lifetime: float = LOGIN_STATE_LIFETIME
) -> LoginState:
    return LoginState(
        provider=provider,
        state=secrets.token_urlsafe(24),
        nonce=secrets.token_urlsafe(24),
        verifier=secrets.token_urlsafe(48),  # 64 characters: RFC 7636 wants 43 to 128
        expires_at=now + lifetime,
    )


def seal_login_state(keyring: SigningKeyring, issuer: str, login: LoginState) -> str:
    """The cookie value: the login state signed by our current key."""
    key = keyring.current
    claims = {
        "iss": issuer,
        "aud": f"{issuer}/console/oidc",
        "prv": login.provider,
        "st": login.state,
        "nn": login.nonce,
        "cv": login.verifier,
        "exp": int(login.expires_at),
    }
    return _jose.sign({"typ": _STATE_TYP, "alg": key.alg, "kid": key.kid}, claims, key.private)


def open_login_state(
    keyring: SigningKeyring, issuer: str, cookie: str | None, now: float | None = None
) -> LoginState:
    """The login state a cookie carries, if we signed it and it is still fresh."""
    now = time.time() if now is None else now
    try:
        # 1. A compact JWS of the login-state kind, with an allowed alg.
        parsed = _jose.parse(cookie)
        if parsed.header.get("typ") != _STATE_TYP:
            raise _jose.JoseFailure("not a login state")
        alg = _jose.check_alg(parsed.header)
        # 2. Signed by one of our keys that has not retired.
        key = keyring.verification_key(parsed.header.get("kid"), now)
        if key is None or key.alg != alg:
            raise _jose.JoseFailure("signed by an unknown key")
        _jose.verify_signature(parsed, key.private)
        claims = parsed.claims
        # 3. Ours, for the login callback, not expired.
        if claims.get("iss") != issuer or claims.get("aud") != f"{issuer}/console/oidc":
            raise _jose.JoseFailure("not for this server")
        exp = _jose.number_claim(claims, "exp")
        if exp is None or exp <= now:
            raise _jose.JoseFailure("expired")
        return LoginState(
            provider=_jose.string_claim(claims, "prv"),
            state=_jose.string_claim(claims, "st"),
            nonce=_jose.string_claim(claims, "nn"),
            verifier=_jose.string_claim(claims, "cv"),
            expires_at=exp,
        )
    except _jose.JoseFailure as exc:
        raise InvalidTokenError(f"login state refused: {exc}") from None

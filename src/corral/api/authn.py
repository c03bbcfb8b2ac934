"""Authentication of every request: one ASGI middleware in front of REST and MCP alike.

Only `/healthz`, the token endpoint, the JWKS and the Shared Signals endpoints (a pushed SET is
authenticated by its own signature) answer without an identity. Everything else needs
`Authorization: DPoP <token>` and a valid `DPoP` proof (or, on a pool whose admin opted in, a
bearer token for acquiring from it and on its sessions' URLs); the caller it establishes is put
on the ASGI scope (`scope["state"]["principal"]`) for the adapters to hand to the ControlPlane.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import replace
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.console_auth import ConsoleCookieAuth
from corral.domain.access import Caller
from corral.identity.dpop import DPoPSettings
from corral.identity.errors import AuthError, InvalidTokenError, UseDPoPNonceError
from corral.identity.keys import SigningKeyring
from corral.identity.replay import ReplayCache, ReplayGuard
from corral.identity.request import verify_request
from corral.identity.tokens import AccessTokenClaims, VerifiedTokenCache
from corral.service.access import AccessEvaluator
from corral.service.auth import session_audience

__all__ = ["EXEMPT_PATHS", "PRINCIPAL", "Authenticate", "principal_of"]

EXEMPT_PATHS = frozenset({"/healthz", "/v1/token", "/.well-known/jwks.json"})
# Shared Signals: a pushed SET is authenticated by its own signature; the metadata is public.
EXEMPT_PATHS |= {"/ssf/events", "/.well-known/ssf-configuration"}
PRINCIPAL = "principal"
# The session a path belongs to: /sessions/<id>/... and /v1/sessions/<id>/...
_SESSION_PATH = re.compile(r"^/(?:v1/)?sessions/([^/]+)(?:/|$)")
# Acquiring from a pool: the one non-session URL a pool's bearer opt-in opens.
_ACQUIRE_PATH = re.compile(r"^/v1/pools/([^/]+)/sessions/?$")


def principal_of(scope_or_request: Any) -> Caller | None:
    """The authenticated caller of a request (a Starlette Request or an ASGI scope)."""
    scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    if not isinstance(scope, dict):
        return None
    state = scope.get("state")
    value = state.get(PRINCIPAL) if isinstance(state, dict) else None
    return value if isinstance(value, Caller) else None


def _unverified_audience(authorization: str | None) -> str | None:
    """The token's `aud` before verification, only to choose which audience to demand; the
    verification then checks it exactly, so a lie here is refused there."""
    if not authorization:
        return None
    token = authorization.strip().partition(" ")[2].strip()
    parts = token.split(".")
    if len(parts) != 3 or len(token) > 8192:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    aud = claims.get("aud") if isinstance(claims, dict) else None
    return aud if isinstance(aud, str) else None


class Authenticate:
    """ASGI middleware: verify the token and proof of every non-exempt HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: SigningKeyring,
        issuer: str,
        access: AccessEvaluator,
        replay: ReplayGuard | None = None,
        dpop_settings: DPoPSettings | None = None,
        console: ConsoleCookieAuth | None = None,
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.issuer = issuer.rstrip("/")
        self.access = access
        self.replay: ReplayGuard = replay if replay is not None else ReplayCache()
        self.dpop_settings = dpop_settings or DPoPSettings()
        self.token_cache = VerifiedTokenCache()
        #: console session cookies, on the few routes a browser uses them for
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (
            scope["type"] == "http"
            and (
                scope["path"] in EXEMPT_PATHS
                or (self.console is not None and self.console.is_public(scope["path"]))
            )
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets are served: refuse rather than pass
            return
        try:
            caller = await anyio.to_thread.run_sync(self._authenticate, scope)
        except AuthError as exc:
            login = self.console.refusal(scope, exc) if self.console is not None else None
            if login is not None:  # a browser without a console session: to the login form
                await login(scope, receive, send)
                return
            await _refuse(exc, scope, receive, send)
            return
        client = scope.get("client")
        if client and caller.address is None:
            caller = replace(caller, address=str(client[0]))
        scope.setdefault("state", {})[PRINCIPAL] = caller
        nonces = self.dpop_settings.nonces
        if nonces is None:
            await self.app(scope, receive, send)
            return
        # Server nonces on: every answer names the nonce to use next (RFC 9449 section 8.2),
        # so clients move to the new one before theirs expires.
        header = (b"dpop-nonce", nonces.current(time.time()).encode("ascii"))

        async def send_with_nonce(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, send_with_nonce)

    def _authenticate(self, scope: Scope) -> Caller:
        """The steps, numbered as in docs/authentication.md ("Request authentication")."""
        headers = Request(scope).headers
        authorization = headers.get("authorization")
        proofs = headers.getlist("dpop")
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        # 0. No Authorization header: a console session cookie, where the route takes one
        #    (corral.api.console_auth); it then goes through the same access evaluation.
        if authorization is None and self.console is not None:
            console_caller = self.console.authenticate(scope)
            if console_caller is not None:
                return console_caller
        # 1. The audience this URL needs: a session's URLs take that session's token (or the
        #    caller's own token); every other URL only the caller's own token.
        audience = self.issuer
        match = _SESSION_PATH.match(scope["path"])
        if match is not None:
            wanted = session_audience(self.issuer, match.group(1))
            if _unverified_audience(authorization) == wanted:
                audience = wanted
        verified: dict[str, Caller] = {}

        def still_allowed(claims: AccessTokenClaims) -> bool:
            # 3. Continuous access evaluation (store-backed, every request).
            verified["caller"] = self.access.evaluate(claims, jkt=claims.jkt)
            return True

        # 2. Token, DPoP proof (this method and URL), key binding. Bearer tokens only where
        #    an admin allowed them: acquiring from, and the sessions of, a bearer pool.
        scheme = (authorization or "").strip().partition(" ")[0].lower()
        allow_bearer = scheme == "bearer" and self._bearer_pool(scope, match)
        principal = verify_request(
            scope["method"],
            self.issuer + path,
            authorization,
            ",".join(proofs) if proofs else None,
            keyring=self.keyring,
            issuer=self.issuer,
            audience=audience,
            replay=self.replay,
            revocation=still_allowed,
            allow_bearer=allow_bearer,
            dpop_settings=self.dpop_settings,
            token_cache=self.token_cache,
        )
        caller = verified.get("caller")
        # 4. A session token opens its own session's URLs only (its audience said so already).
        if caller is None or (
            principal.session_id is not None
            and (match is None or match.group(1) != principal.session_id)
        ):
            raise InvalidTokenError("access token refused: not valid for this URL")
        return caller

    def _bearer_pool(self, scope: Scope, session: re.Match[str] | None) -> bool:
        """Does the pool this URL belongs to accept bearer tokens? Unknown or unsure: no."""
        try:
            if session is not None:
                return self.access.session_allows_bearer(session.group(1))
            acquire = _ACQUIRE_PATH.match(scope["path"])
            if acquire is not None and scope["method"] == "POST":
                return self.access.pool_allows_bearer(acquire.group(1))
        except Exception:  # the store is unreachable: fail closed (DPoP still works)
            return False
        return False


async def _refuse(exc: AuthError, scope: Scope, receive: Receive, send: Send) -> None:
    """RFC 6750/9449 answer: status, WWW-Authenticate (and DPoP-Nonce), no caching."""
    headers = {**exc.headers(), "Cache-Control": "no-store"}
    if isinstance(exc, UseDPoPNonceError):
        headers["DPoP-Nonce"] = exc.nonce
    retry_after = getattr(exc, "retry_after_s", None)
    if isinstance(retry_after, int):
        headers["Retry-After"] = str(retry_after)
    from starlette.responses import JSONResponse

    from corral.api._problem import PROBLEM_JSON, problem_body

    body = problem_body(exc.status, exc.code, exc.message, exc.hint)
    answer = JSONResponse(body, status_code=exc.status, headers=headers, media_type=PROBLEM_JSON)
    await answer(scope, receive, send)

"""Authentication of every request: one ASGI middleware in front of REST, MCP and WebSockets.

A thin adapter: it reads the method, URL, headers and client address off the ASGI scope and
asks `corral.identity.authenticate.RequestAuthenticator` for the caller, which it puts on the
scope (`scope["state"]["principal"]`) for the adapters to hand on. A refusal answers an RFC
9457 problem with the DPoP challenge (RFC 9449 section 7.1) naming the resource's metadata
(RFC 9728 section 5.1). Only `corral.identity.authenticate.is_exempt` paths (liveness, the
token endpoint, key and discovery documents, pushed security events) answer without one.
WebSocket handshakes go through the same function; a refused one gets the 401 answer where
the server can send it (the ASGI WebSocket denial response extension), else a close (1008).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.console_auth import ConsoleCookieAuth
from corral.api.errors import error_response
from corral.domain.access import Caller
from corral.errors import CorralError
from corral.identity.authenticate import EXEMPT_PATHS, RequestAuthenticator, RequestHeaders
from corral.identity.authenticate import is_exempt as _is_exempt
from corral.identity.errors import AuthError

if TYPE_CHECKING:
    from corral.identity.dpop import DPoPSettings
    from corral.identity.evaluation import AccessEvaluator
    from corral.identity.keys import SigningKeyring
    from corral.identity.replay import ReplayGuard

__all__ = ["EXEMPT_PATHS", "PRINCIPAL", "Authenticate", "principal_of"]

PRINCIPAL = "principal"
# WebSocket close code for a refused handshake where no HTTP answer can be sent (RFC 6455 7.4.1).
POLICY_VIOLATION = 1008


def principal_of(scope_or_request: Any) -> Caller | None:
    """The authenticated caller of a request (a Starlette Request/WebSocket or an ASGI scope)."""
    scope = (
        scope_or_request.scope if isinstance(scope_or_request, HTTPConnection) else scope_or_request
    )
    if not isinstance(scope, dict):
        return None
    state = scope.get("state")
    value = state.get(PRINCIPAL) if isinstance(state, dict) else None
    return value if isinstance(value, Caller) else None


def _url(scope: Scope, host: str | None) -> str:
    """The request's URL as the client addressed it (path undecoded, as signed in proofs)."""
    raw_path = scope.get("raw_path") or scope["path"].encode()
    return f"{scope.get('scheme', 'http')}://{host or ''}{raw_path.decode('latin-1')}"


class Authenticate:
    """ASGI middleware: authenticate every non-exempt HTTP request and WebSocket handshake."""

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
        self.authenticator = RequestAuthenticator(
            keyring=keyring,
            issuer=issuer,
            access=access,
            replay=replay,
            dpop_settings=dpop_settings,
            cookies=console,
        )
        self.dpop_settings = self.authenticator.dpop_settings
        #: console session cookies, on the few routes a browser uses them for
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):  # lifespan
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if _is_exempt(path) or (self.console is not None and self.console.is_public(path)):
            await self.app(scope, receive, send)
            return
        try:
            caller = await anyio.to_thread.run_sync(self._authenticate, scope)
        except CorralError as exc:  # an AuthError, or the store unavailable (503)
            if kind == "websocket":
                await self._refuse_websocket(exc, scope, receive, send)
                return
            login = (
                self.console.refusal(scope, exc)
                if self.console is not None and isinstance(exc, AuthError)
                else None
            )
            if login is not None:  # a browser without a console session: to the login form
                await login(scope, receive, send)
                return
            await self._answer(exc, scope)(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL] = caller
        nonces = self.dpop_settings.nonces
        if nonces is None or kind != "http":
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
        """The scope's facts to the transport-agnostic authenticator (in a worker thread)."""
        client = scope.get("client")
        headers = RequestHeaders.from_raw(scope.get("headers") or ())
        return self.authenticator.authenticate(
            scope.get("method", "GET"),
            _url(scope, headers.get("host")),
            headers,
            str(client[0]) if client else None,
        )

    def _answer(self, exc: CorralError, scope: Scope) -> Any:
        """A refusal as an RFC 9457 problem; an AuthError with its challenge headers."""
        if isinstance(exc, AuthError):
            return error_response(exc, self.authenticator.challenge(exc, scope["path"]))
        return error_response(exc, {"Cache-Control": "no-store"})

    async def _refuse_websocket(
        self, exc: CorralError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        message = await receive()  # websocket.connect: the handshake to answer
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": exc.code})
            return
        answer = self._answer(exc, scope)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": answer.status_code,
                "headers": answer.raw_headers,
            }
        )
        await send({"type": "websocket.http.response.body", "body": answer.body})

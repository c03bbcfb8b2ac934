"""The console session cookie in the authentication middleware: where a browser may use it.

A browser cannot make DPoP proofs, so the `corral_console` cookie stands in for a token, but
only where a browser needs it and a forged cross-site request can do no harm:

- GET and HEAD on the console pages (`/console...`), a session's viewer
  (`/sessions/{id}/viewer`) and the screenshots the viewer fetches
  (`/v1/sessions/{id}/screenshot`);
- POST under `/console/` with an `Origin` header of this server (CSRF: a browser always sends
  Origin on a POST, and another site cannot forge it).

Everywhere else the cookie is ignored and a DPoP-bound token is needed as before; a request
with an Authorization header never uses the cookie.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.requests import Request, cookie_parser
from starlette.responses import RedirectResponse, Response
from starlette.types import Scope

from corral.console.service import ConsoleService
from corral.domain.access import Caller
from corral.identity.authenticate import RequestHeaders
from corral.identity.errors import AuthError

__all__ = [
    "LOGIN_STATE_COOKIE",
    "SESSION_COOKIE",
    "ConsoleCookieAuth",
    "CrossOriginError",
    "same_origin",
]

SESSION_COOKIE = "corral_console"
LOGIN_STATE_COOKIE = "corral_oidc"
# Pages that must answer without a session: the login form and the OIDC round trip.
_PUBLIC = re.compile(r"^/console/(?:login|oidc/[a-z0-9][a-z0-9-]{0,62}/(?:start|callback))$")
# Where the cookie counts on GET/HEAD.
_SAFE_ROUTES = re.compile(
    r"^/(?:console(?:/[^/]+)*/?|sessions/[^/]+/viewer|v1/sessions/[^/]+/screenshot)$"
)
_SAFE_METHODS = frozenset({"GET", "HEAD"})


class CrossOriginError(AuthError):
    """A cookie-authenticated POST without this server's Origin: a possible CSRF."""

    title = "Cross-origin request refused"
    error = "invalid_request"
    status = 403


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(scope: Scope, issuer: str) -> bool:
    """The request's Origin is this server: its public URL, or the scheme and Host the
    browser addressed (a cross-site page cannot make a browser send another Origin)."""
    headers = Request(scope).headers
    return _same_origin(
        headers.get("origin"), headers.get("host"), scope.get("scheme", "http"), issuer
    )


def _same_origin(origin: str | None, host: str | None, scheme: str, issuer: str) -> bool:
    if not origin or origin == "null":
        return False
    allowed = {_origin(issuer)}
    if host:
        # A WebSocket handshake's Origin is the page's http(s) origin.
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        allowed.add(f"{scheme}://{host}".lower())
    return origin.strip().lower() in allowed


class ConsoleCookieAuth:
    """What `corral.identity.authenticate.RequestAuthenticator` asks about console sessions."""

    def __init__(self, console: ConsoleService) -> None:
        self.console = console
        self.issuer = console.issuer

    def is_public(self, path: str) -> bool:
        """The login pages answer without any identity."""
        return _PUBLIC.match(path) is not None

    def authenticate_cookie(
        self, method: str, scheme: str, path: str, headers: RequestHeaders
    ) -> Caller | None:
        """The user of a console session cookie, when this route accepts one; None when the
        request has no cookie or the route does not take it (then a token is required). A
        WebSocket handshake (scheme ws/wss) counts as a POST: a browser lets any site open
        one with the user's cookies, so it needs this server's Origin (no cross-site
        WebSocket hijacking)."""
        cookie = cookie_parser(headers.get("cookie") or "").get(SESSION_COOKIE)
        if not cookie:
            return None
        websocket = scheme in ("ws", "wss")
        if method in _SAFE_METHODS and _SAFE_ROUTES.match(path) and not websocket:
            pass
        elif (method == "POST" and path.startswith("/console/")) or (
            websocket and _SAFE_ROUTES.match(path)
        ):
            if not _same_origin(headers.get("origin"), headers.get("host"), scheme, self.issuer):
                raise CrossOriginError("cross-origin request refused: Origin is not this server")
        else:
            return None
        return self.console.authenticate(cookie)

    def refusal(self, scope: Scope, exc: AuthError) -> Response | None:
        """A browser opening a console page without a valid session goes to the login form
        (its dead cookie cleared); everything else gets the usual 401 answer."""
        path = scope["path"]
        if (
            scope["method"] not in _SAFE_METHODS
            or isinstance(exc, CrossOriginError)
            or not (path == "/console" or path.startswith("/console/"))
            or Request(scope).headers.get("authorization")
        ):
            return None
        answer = RedirectResponse("/console/login", status_code=303)
        answer.delete_cookie(SESSION_COOKIE, path="/")
        return answer

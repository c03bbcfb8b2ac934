"""Request authentication, whatever carried the request: (method, URL, headers, client
address) -> the caller, or an `AuthError` saying why not.

The HTTP middleware (`corral.api.authn`), WebSocket handshakes and in-memory tests all call
`RequestAuthenticator.authenticate`; none of them decides anything about identity. The steps
are numbered as in docs/authentication.md ("Request authentication").
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Protocol
from urllib.parse import unquote

from corral.domain.access import Caller
from corral.identity.dpop import DPoPSettings
from corral.identity.errors import AuthError, InvalidTokenError
from corral.identity.evaluation import AccessEvaluator
from corral.identity.keys import SigningKeyring
from corral.identity.replay import ReplayCache, ReplayGuard
from corral.identity.request import verify_request
from corral.identity.resource_metadata import metadata_url, resource_for_path
from corral.identity.token_endpoint import session_audience
from corral.identity.tokens import AccessTokenClaims, VerifiedTokenCache

__all__ = [
    "EXEMPT_PATHS",
    "CookieAuth",
    "RequestAuthenticator",
    "RequestHeaders",
    "is_exempt",
]

EXEMPT_PATHS = frozenset({"/healthz", "/v1/token", "/.well-known/jwks.json"})
# Shared Signals: a pushed SET is authenticated by its own signature; the metadata is public.
EXEMPT_PATHS |= {"/ssf/events", "/.well-known/ssf-configuration"}
# How to authenticate (RFC 9728, RFC 8414) must be readable before one can.
EXEMPT_PATHS |= {"/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server"}
_EXEMPT_PREFIX = "/.well-known/oauth-protected-resource/"
# The audit log's checkpoint, verifier key and hash tiles hold only hashes and signatures:
# public, so any witness or auditor can follow the log (entry bundles are not: records).
EXEMPT_PATHS |= {"/audit/checkpoint", "/audit/key"}
_PUBLIC_TILE = re.compile(r"^/audit/tile/[0-9]+/")
# The session a path belongs to: /sessions/<id>/... and /v1/sessions/<id>/...
_SESSION_PATH = re.compile(r"^/(?:v1/)?sessions/([^/]+)(?:/|$)")
# Acquiring from a pool: the one non-session URL a pool's bearer opt-in opens.
_ACQUIRE_PATH = re.compile(r"^/v1/pools/([^/]+)/sessions/?$")
_WEBSOCKET_SCHEMES = frozenset({"ws", "wss"})


def is_exempt(path: str) -> bool:
    """Paths that answer without an identity."""
    return (
        path in EXEMPT_PATHS
        or path.startswith(_EXEMPT_PREFIX)
        or _PUBLIC_TILE.match(path) is not None
    )


class RequestHeaders:
    """A request's headers: names case-insensitive, a name may repeat (a second `DPoP`
    header must be seen, to be refused). Kept as bytes, decoded only when read: the hot path
    reads three of them."""

    __slots__ = ("_raw",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._raw = [(n.lower().encode("latin-1"), v.encode()) for n, v in pairs]

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
        """From ASGI's raw headers (names already lowercase)."""
        headers = cls.__new__(cls)
        headers._raw = raw if isinstance(raw, list) else list(raw)
        return headers

    def get(self, name: str) -> str | None:
        key = name.lower().encode("latin-1")
        for n, value in self._raw:
            if n == key:
                return value.decode("latin-1")
        return None

    def getlist(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [value.decode("latin-1") for n, value in self._raw if n == key]


class CookieAuth(Protocol):
    """The console's session cookie (corral.api.console_auth), where a route takes one."""

    def authenticate_cookie(
        self, method: str, scheme: str, path: str, headers: RequestHeaders
    ) -> Caller | None: ...


def _split_url(url: str) -> tuple[str, str]:
    """(scheme, path as sent) of an absolute URL or an origin-form target; the query is
    dropped and nothing else is (a `#` in a raw path stays part of the path)."""
    scheme = ""
    if not url.startswith("/"):
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise InvalidTokenError("the request URL is malformed")
        slash = rest.find("/")
        url = rest[slash:] if slash >= 0 else "/"
    return scheme.lower(), url.split("?", 1)[0]


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


class RequestAuthenticator:
    """Verifies the token and DPoP proof of one request (or the console cookie where a
    route takes it), then the caller's standing in the store (continuous access evaluation).

    Thread-safe; blocking (it reads the store): async callers run it in a worker thread.
    """

    def __init__(
        self,
        *,
        keyring: SigningKeyring,
        issuer: str,
        access: AccessEvaluator,
        replay: ReplayGuard | None = None,
        dpop_settings: DPoPSettings | None = None,
        cookies: CookieAuth | None = None,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer.rstrip("/")
        self.access = access
        self.replay: ReplayGuard = replay if replay is not None else ReplayCache()
        self.dpop_settings = dpop_settings or DPoPSettings()
        self.token_cache = VerifiedTokenCache()
        self.cookies = cookies

    def authenticate(
        self,
        method: str,
        url: str,
        headers: RequestHeaders | Mapping[str, str] | Iterable[tuple[str, str]],
        client: str | None = None,
    ) -> Caller:
        """The caller of `method url` (absolute, or a path with its query) with `headers`,
        from `client` (its address); a WebSocket handshake (a ws/wss URL) is authenticated
        as the GET of its http(s) URL. Raises an `AuthError` when it is not authenticated."""
        if not isinstance(headers, RequestHeaders):
            headers = RequestHeaders(headers)
        scheme, raw_path = _split_url(url)
        path = unquote(raw_path)
        caller = self._caller(method, scheme, raw_path, path, headers)
        if client and caller.address is None:
            caller = replace(caller, address=client)
        return caller

    def _caller(
        self, method: str, scheme: str, raw_path: str, path: str, headers: RequestHeaders
    ) -> Caller:
        authorization = headers.get("authorization")
        # 0. No Authorization header: a console session cookie, where the route takes one
        #    (corral.api.console_auth); it then goes through the same access evaluation.
        if authorization is None and self.cookies is not None:
            console_caller = self.cookies.authenticate_cookie(method, scheme, path, headers)
            if console_caller is not None:
                return console_caller
        # 1. The audience this URL needs: a session's URLs take that session's token (or the
        #    caller's own token); every other URL only the caller's own token.
        audience = self.issuer
        match = _SESSION_PATH.match(path)
        if match is not None:
            wanted = session_audience(self.issuer, match.group(1))
            if _unverified_audience(authorization) == wanted:
                audience = wanted
        verified: dict[str, Caller] = {}

        def still_allowed(claims: AccessTokenClaims) -> bool:
            # 3. Continuous access evaluation (store-backed, every request).
            verified["caller"] = self.access.evaluate(claims, jkt=claims.jkt)
            return True

        # 2. Token, DPoP proof (this method and URL; a WebSocket handshake is a GET), key
        #    binding. Bearer tokens only where an admin allowed them: acquiring from, and the
        #    sessions of, a bearer pool.
        if scheme in _WEBSOCKET_SCHEMES:
            method = "GET"
        auth_scheme = (authorization or "").strip().partition(" ")[0].lower()
        allow_bearer = auth_scheme == "bearer" and self._bearer_pool(method, path, match)
        proofs = headers.getlist("dpop")
        principal = verify_request(
            method,
            self.issuer + raw_path,
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

    def _bearer_pool(self, method: str, path: str, session: re.Match[str] | None) -> bool:
        """Does the pool this URL belongs to accept bearer tokens? Unknown or unsure: no."""
        try:
            if session is not None:
                return self.access.session_allows_bearer(session.group(1))
            acquire = _ACQUIRE_PATH.match(path)
            if acquire is not None and method == "POST":
                return self.access.pool_allows_bearer(acquire.group(1))
        except Exception:  # the store is unreachable: fail closed (DPoP still works)
            return False
        return False

    def challenge(self, exc: AuthError, path: str) -> dict[str, str]:
        """The headers of a refusal of a request for `path`: the DPoP challenge (RFC 9449
        section 7.1) naming the resource's metadata (RFC 9728 section 5.1), a DPoP-Nonce
        where one is wanted, Retry-After for temporary refusals; never cached."""
        resource = metadata_url(self.issuer, resource_for_path(path))
        return {**exc.headers(resource_metadata=resource), "Cache-Control": "no-store"}

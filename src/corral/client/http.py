"""The agent's HTTP side of authentication: get DPoP-bound tokens and sign every request.

`TokenSource` trades the agent's credential for short-lived access tokens at `POST /v1/token`
and keeps one until shortly before it expires; `DPoPAuth` plugs into an httpx client and gives
each request `Authorization: DPoP <token>` and a proof made for that request alone. The MCP
SDK's client runs on `httpx2` (a renamed httpx), so `DPoPAuth.for_mcp()` and `mcp_http_client`
wrap the same flow for it. The proof key is generated here and never leaves memory: a stolen
token is useless without it.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
import httpx2
from mcp.shared._httpx_utils import create_mcp_http_client

from corral.errors import InvalidInputError, UnavailableError
from corral.identity.assertions import CLIENT_ASSERTION_TYPE
from corral.identity.client import DPoPKey, client_assertion
from corral.identity.directory import read_credential
from corral.identity.errors import AuthError, InvalidClientError

__all__ = ["AgentCredential", "DPoPAuth", "TokenSource", "mcp_http_client"]

# Refresh this long before expiry (at most half the lifetime), so a token never dies in flight.
DEFAULT_REFRESH_MARGIN = 30.0
# Either library's client may fetch tokens (Starlette's TestClient is an httpx2 one).
_AnyResponse = httpx.Response | httpx2.Response
_TRANSPORT_ERRORS = (httpx.TransportError, httpx2.TransportError)
_ERROR_PARAM = re.compile(r'(?:^|[\s,])error\s*=\s*"?([A-Za-z0-9_]+)')


@dataclass(frozen=True)
class AgentCredential:
    """An agent's credential file: who it is, where to get tokens, its private key."""

    agent_id: str
    client_id: str
    token_endpoint: str
    key: Mapping[str, Any] = field(repr=False)

    @classmethod
    def load(cls, path: Path) -> AgentCredential:
        """Read a credential file (refused if others can read it)."""
        return cls.from_mapping(read_credential(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AgentCredential:
        fields = {name: data.get(name) for name in ("agent_id", "client_id", "token_endpoint")}
        if fields["agent_id"] is None:  # a user's credential (CLI/API use) names its user
            fields["agent_id"] = data.get("user_id")
        if not all(isinstance(v, str) and v for v in fields.values()) or not isinstance(
            data.get("key"), Mapping
        ):
            raise InvalidInputError("not a Corral agent credential")
        return cls(key=dict(data["key"]), **{k: str(v) for k, v in fields.items()})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _challenge_error(response: _Response) -> str | None:
    """The `error` of a DPoP/Bearer challenge (RFC 6750 3, RFC 9449 7.1), if any."""
    match = _ERROR_PARAM.search(response.headers.get("www-authenticate", ""))
    return match.group(1) if match else None


class _Nonces:
    """The latest DPoP-Nonce each server origin handed us (RFC 9449 8 and 9)."""

    def __init__(self) -> None:
        self._by_origin: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> str | None:
        with self._lock:
            return self._by_origin.get(_origin(url))

    def remember(self, url: str, headers: Mapping[str, str]) -> str | None:
        nonce = headers.get("dpop-nonce")
        if nonce:
            with self._lock:
                self._by_origin[_origin(url)] = nonce
        return nonce


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float


class TokenSource:
    """Gets, caches and refreshes the agent's access token; safe across threads and tasks.

    One fetch at a time across threads (sync) or per event loop (async); callers arriving
    meanwhile reuse its token. Without injected clients (httpx or httpx2) each fetch opens its
    own, so one source serves any thread or loop. `clock` decides expiry only (tests move it;
    proofs use real time).
    """

    def __init__(
        self,
        credential: AgentCredential,
        *,
        key: DPoPKey | None = None,
        client: httpx.Client | httpx2.Client | None = None,
        async_client: httpx.AsyncClient | httpx2.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        timeout: float = 30.0,
    ) -> None:
        self.credential = credential
        self.key = key if key is not None else DPoPKey.generate()
        self.nonces = _Nonces()  # resource servers' nonces, per origin
        self._token_nonces = _Nonces()  # the token endpoint's own (RFC 9449 8 vs 9)
        self._client = client
        self._async_client = async_client
        self._clock = clock
        self._margin = refresh_margin
        self._timeout = timeout
        self._token: _Token | None = None
        self._state = threading.Lock()
        self._sync_fetch = threading.Lock()
        self._async_fetch: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._async_fetch = weakref.WeakKeyDictionary()
        self.fetches = 0  # how many tokens were issued to us (tests and logs)

    def __repr__(self) -> str:
        return f"TokenSource(client_id={self.credential.client_id!r})"

    def cached(self) -> str | None:
        """The current token if it is not due for refresh."""
        with self._state:
            token = self._token
        return token.value if token and self._clock() < token.refresh_at else None

    def invalidate(self, token: str) -> None:
        """Forget `token` (the server refused it); a newer one stays."""
        with self._state:
            if self._token is not None and self._token.value == token:
                self._token = None

    def get(self) -> str:
        """A usable access token, fetched (blocking) when needed."""
        token = self.cached()
        if token is not None:
            return token
        with self._sync_fetch:
            token = self.cached()
            if token is not None:
                return token
            if self._client is not None:
                return self._exchange_sync(self._client)
            with httpx.Client(timeout=self._timeout) as client:
                return self._exchange_sync(client)

    async def aget(self) -> str:
        """A usable access token, fetched when needed without blocking the loop."""
        token = self.cached()
        if token is not None:
            return token
        loop = asyncio.get_running_loop()
        with self._state:
            lock = self._async_fetch.setdefault(loop, asyncio.Lock())
        async with lock:
            token = self.cached()
            if token is not None:
                return token
            if self._async_client is not None:
                return await self._exchange_async(self._async_client)
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                return await self._exchange_async(client)

    # The token request: a fresh assertion and proof each time; one retry with a nonce.

    def _request(self) -> tuple[dict[str, str], dict[str, str]]:
        url, cred = self.credential.token_endpoint, self.credential
        form = {
            "grant_type": "client_credentials",
            "client_id": cred.client_id,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": client_assertion(cred.client_id, url, cred.key),
        }
        proof = self.key.proof("POST", url, nonce=self._token_nonces.get(url))
        return form, {"DPoP": proof}

    def _exchange_sync(self, client: httpx.Client | httpx2.Client) -> str:
        url = self.credential.token_endpoint
        for attempt in range(2):
            form, headers = self._request()
            try:
                response = client.post(url, data=form, headers=headers)
            except _TRANSPORT_ERRORS as exc:
                raise _unreachable(url, exc) from None
            if attempt == 0 and self._wants_nonce(response):
                continue
            break
        return self._accept(response)

    async def _exchange_async(self, client: httpx.AsyncClient | httpx2.AsyncClient) -> str:
        url = self.credential.token_endpoint
        for attempt in range(2):
            form, headers = self._request()
            try:
                response = await client.post(url, data=form, headers=headers)
            except _TRANSPORT_ERRORS as exc:
                raise _unreachable(url, exc) from None
            if attempt == 0 and self._wants_nonce(response):
                continue
            break
        return self._accept(response)

    def _wants_nonce(self, response: _AnyResponse) -> bool:
        nonce = self._token_nonces.remember(self.credential.token_endpoint, response.headers)
        return (
            response.status_code == 400
            and nonce is not None
            and _oauth_error(response)[0] == ("use_dpop_nonce")
        )

    def _accept(self, response: _AnyResponse) -> str:
        """Keep the issued token, or raise the token endpoint's refusal as an AuthError."""
        if response.status_code != 200:
            error, description = _oauth_error(response)
            message = f"the token endpoint refused the agent: {description or error}"
            exc = InvalidClientError(message) if error == "invalid_client" else AuthError(message)
            exc.code = error
            raise exc
        try:
            body = response.json()
            value, kind = body["access_token"], body["token_type"]
            lifetime = float(body["expires_in"])
        except (ValueError, KeyError, TypeError):
            raise AuthError("the token endpoint answered without a usable token") from None
        if not isinstance(value, str) or str(kind).lower() != "dpop" or lifetime <= 0:
            raise AuthError("the token endpoint did not issue a DPoP-bound token")
        refresh_at = self._clock() + lifetime - min(self._margin, lifetime / 2)
        with self._state:
            self._token = _Token(value, refresh_at)
            self.fetches += 1
        return value


def _oauth_error(response: _AnyResponse) -> tuple[str, str]:
    """(error, error_description) of an OAuth JSON error answer (RFC 6749 5.2)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return f"http_{response.status_code}", response.text[:200]
    return str(body.get("error", "invalid_request")), str(body.get("error_description", ""))


def _unreachable(url: str, exc: Exception) -> UnavailableError:
    return UnavailableError(
        f"cannot reach the token endpoint {url}: {exc}",
        hint="is Corral running? the credential names its token endpoint",
    )


# The auth flow, written once for httpx and httpx2 (same Request/Response shapes).


class _Request(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def url(self) -> object: ...
    @property
    def headers(self) -> MutableMapping[str, str]: ...


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


R = TypeVar("R", bound=_Request)


class DPoPAuth(httpx.Auth):
    """Signs every request with the token and a fresh proof (httpx's `Auth` protocol).

    On a refusal it retries once per reason: `use_dpop_nonce` (a new proof with the server's
    nonce) and `invalid_token` (a new token: it expired early or was revoked).
    """

    def __init__(self, tokens: TokenSource) -> None:
        self.tokens = tokens

    def __repr__(self) -> str:
        return f"DPoPAuth({self.tokens!r})"

    @classmethod
    def from_credential(cls, path: Path, **options: Any) -> DPoPAuth:
        return cls(TokenSource(AgentCredential.load(path), **options))

    def _sign(self, request: _Request, token: str) -> None:
        url = str(request.url)
        request.headers["Authorization"] = f"DPoP {token}"
        request.headers["DPoP"] = self.tokens.key.proof(
            request.method, url, access_token=token, nonce=self.tokens.nonces.get(url)
        )

    def _retry_reason(self, request: _Request, response: _Response, token: str) -> str | None:
        """Why to send the request again, if at all; drops a refused token."""
        nonce = self.tokens.nonces.remember(str(request.url), response.headers)
        error = _challenge_error(response)
        if response.status_code in (400, 401) and error == "use_dpop_nonce" and nonce:
            return "nonce"
        if response.status_code == 401 and error == "invalid_token":
            self.tokens.invalidate(token)
            return "token"
        return None

    def _flow(self, request: R) -> Generator[R, _Response, None]:
        token = self.tokens.get()
        self._sign(request, token)
        response = yield request
        tried: set[str] = set()
        while (reason := self._retry_reason(request, response, token)) and reason not in tried:
            tried.add(reason)
            token = self.tokens.get()
            self._sign(request, token)
            response = yield request

    async def _async_flow(self, request: R) -> AsyncGenerator[R, _Response]:
        token = await self.tokens.aget()
        self._sign(request, token)
        response = yield request
        tried: set[str] = set()
        while (reason := self._retry_reason(request, response, token)) and reason not in tried:
            tried.add(reason)
            token = await self.tokens.aget()
            self._sign(request, token)
            response = yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        return self._flow(request)

    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return self._async_flow(request)

    def for_mcp(self) -> httpx2.Auth:
        """The same flow for an `httpx2` client, which the MCP SDK's transports take."""
        return _Httpx2DPoPAuth(self)


class _Httpx2DPoPAuth(httpx2.Auth):
    """`DPoPAuth` for httpx2: it only accepts its own `Auth` subclasses."""

    def __init__(self, auth: DPoPAuth) -> None:
        self.auth = auth

    def sync_auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        return self.auth._flow(request)

    def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        return self.auth._async_flow(request)


def mcp_http_client(auth: DPoPAuth) -> httpx2.AsyncClient:
    """An httpx2 client with the MCP SDK's timeouts that signs every request, for
    `streamable_http_client(url, http_client=...)` (the caller enters and closes it)."""
    return create_mcp_http_client(auth=auth.for_mcp())

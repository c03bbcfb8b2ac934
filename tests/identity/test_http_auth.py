"""DPoPAuth and TokenSource against the real token router and a route that verifies every
request with `verify_request`, all in process (ASGI), on a real directory in SQLite."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel.server import Server as MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    TextContent,
    Tool,
)
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from corral.api.auth_routes import include_auth
from corral.client.http import AgentCredential, DPoPAuth, TokenSource, mcp_http_client
from corral.identity import (
    AuthError,
    DPoPSettings,
    InvalidClientError,
    NonceSource,
    Principal,
    ReplayCache,
    SigningKeyring,
    verify_request,
)
from corral.identity._jose import b64url_sha256
from corral.identity.directory import Directory, write_credential
from corral.identity.token_endpoint import AuthService
from corral.store import Store
from tests.identity.helpers import parts

pytestmark = pytest.mark.anyio

BASE = "http://testserver"
TOKEN_URL = f"{BASE}/v1/token"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Seen:
    """What the protected route saw, per request that reached it."""

    statuses: list[int] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    proofs: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)


class Server:
    """The token router plus `/v1/echo`, which authenticates each request as the Gate will."""

    def __init__(self, tmp: Path, *, nonces: bool = False, base: str = BASE) -> None:
        self.base = base
        self.store = Store(f"sqlite:///{tmp}/corral.db")
        self.store.migrate()
        directory = Directory(self.store)
        directory.create_user("alice", roles=["sponsor"])
        cred = directory.create_agent("bot", sponsors=["alice"], token_endpoint=f"{base}/v1/token")
        self.credential_path = write_credential(tmp / "agent.json", cred)
        self.agent_id: str = cred["agent_id"]
        self.keyring = SigningKeyring.generate()
        token_nonces = NonceSource() if nonces else None
        self.auth = AuthService(
            self.store, self.keyring, base, f"{base}/v1/token", nonces=token_nonces
        )
        # The resource server's nonces are its own (RFC 9449 section 9).
        self.settings = DPoPSettings(nonces=NonceSource() if nonces else None)
        self.replay = ReplayCache()
        self.revoked: set[str] = set()
        self.seen = Seen()
        self.app = FastAPI()
        include_auth(self.app, self.auth)
        self.app.add_api_route("/v1/echo", self.echo, methods=["GET", "POST"])

    def check(self, request: Request) -> JSONResponse | Principal:
        """Authenticate as the Gate will, recording what was seen; a refusal as RFC 9449 says."""
        authorization = request.headers.get("authorization")
        dpop = request.headers.get("dpop")
        try:
            principal = verify_request(
                request.method,
                str(request.url),
                authorization,
                dpop,
                keyring=self.keyring,
                issuer=self.base,
                audience=self.base,
                replay=self.replay,
                revocation=lambda claims: claims.token_id not in self.revoked,
                dpop_settings=self.settings,
            )
        except AuthError as exc:
            self.seen.statuses.append(exc.status)
            return JSONResponse({"error": exc.code}, exc.status, headers=exc.headers())
        assert authorization is not None and dpop is not None
        self.seen.statuses.append(200)
        self.seen.methods.append(request.method)
        self.seen.proofs.append(parts(dpop)[1])
        self.seen.tokens.append(authorization.split(" ", 1)[1])
        self.seen.subjects.append(principal.subject)
        return principal

    async def echo(self, request: Request) -> JSONResponse:
        principal = self.check(request)
        if isinstance(principal, JSONResponse):
            return principal
        return JSONResponse({"subject": principal.subject, "body": (await request.body()).decode()})

    def token_id(self, token: str) -> str:
        return str(parts(token)[1]["jti"])


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    yield srv
    srv.store.close()


@pytest.fixture
def nonce_server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path, nonces=True)
    yield srv
    srv.store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def clients(
    server: Server, clock: Clock
) -> AsyncIterator[tuple[TokenSource, httpx.AsyncClient]]:
    async with _clients(server, clock) as pair:
        yield pair


class _clients:
    """A token source on an unauthenticated client and an API client signing with DPoPAuth."""

    def __init__(self, server: Server, clock: Clock | None = None) -> None:
        transport = httpx.ASGITransport(app=server.app)
        self.plain = httpx.AsyncClient(transport=transport, base_url=BASE)
        self.tokens = TokenSource(
            AgentCredential.load(server.credential_path),
            async_client=self.plain,
            clock=clock or Clock(),
        )
        self.api = httpx.AsyncClient(transport=transport, base_url=BASE, auth=DPoPAuth(self.tokens))

    async def __aenter__(self) -> tuple[TokenSource, httpx.AsyncClient]:
        return self.tokens, self.api

    async def __aexit__(self, *exc: object) -> None:
        await self.api.aclose()
        await self.plain.aclose()


async def test_every_request_is_signed_and_verifies(
    server: Server, clients: tuple[TokenSource, httpx.AsyncClient]
) -> None:
    tokens, api = clients
    for i in range(3):
        r = await api.post("/v1/echo?page=2#frag", content=f"call {i}")
        assert r.status_code == 200, r.text
        assert r.json() == {"subject": server.agent_id, "body": f"call {i}"}
    r = await api.get("/v1/echo")
    assert r.status_code == 200, r.text

    assert server.seen.statuses == [200] * 4
    assert tokens.fetches == 1  # one token, cached
    (token,) = set(server.seen.tokens)
    proofs = server.seen.proofs
    assert len({p["jti"] for p in proofs}) == 4  # a fresh proof per request
    assert all(p["ath"] == b64url_sha256(token) for p in proofs)
    assert [p["htm"] for p in proofs] == ["POST", "POST", "POST", "GET"]
    assert all(p["htu"] == f"{BASE}/v1/echo" for p in proofs)  # no query, no fragment
    assert all("nonce" not in p for p in proofs)
    # The token is bound to the source's in-memory key, not the credential's key.
    assert parts(token)[1]["cnf"] == {"jkt": tokens.key.thumbprint}
    assert tokens.key.thumbprint != AgentCredential.load(server.credential_path).key["kid"]


async def test_a_token_is_refreshed_before_it_expires(
    server: Server, clock: Clock, clients: tuple[TokenSource, httpx.AsyncClient]
) -> None:
    tokens, api = clients
    assert (await api.get("/v1/echo")).status_code == 200
    clock.now += 300 - 31  # 5 minute tokens, refreshed 30 s early
    assert (await api.get("/v1/echo")).status_code == 200
    assert tokens.fetches == 1
    clock.now += 2
    assert (await api.get("/v1/echo")).status_code == 200
    assert tokens.fetches == 2
    first, second, third = server.seen.tokens
    assert first == second != third
    assert server.seen.statuses == [200, 200, 200]


async def test_a_refused_token_is_replaced_once(
    server: Server, clients: tuple[TokenSource, httpx.AsyncClient]
) -> None:
    tokens, api = clients
    assert (await api.get("/v1/echo")).status_code == 200
    server.revoked.add(server.token_id(server.seen.tokens[0]))  # e.g. revoked by an admin
    r = await api.get("/v1/echo")
    assert r.status_code == 200, r.text
    assert server.seen.statuses == [200, 401, 200]
    assert tokens.fetches == 2

    # A refusal that a new token does not cure is answered after one retry, not a loop.
    server.revoked.add(server.token_id(server.seen.tokens[-1]))
    server.auth.directory.disable_agent("bot")
    with pytest.raises(InvalidClientError, match="disabled"):
        await api.get("/v1/echo")


async def test_server_nonces_are_fetched_and_used(nonce_server: Server) -> None:
    async with _clients(nonce_server) as (tokens, api):
        r = await api.get("/v1/echo")
        assert r.status_code == 200, r.text
        # The resource server asked for its nonce once; the retry carried it.
        assert nonce_server.seen.statuses == [401, 200]
        assert "nonce" in nonce_server.seen.proofs[0]
        for _ in range(2):
            assert (await api.post("/v1/echo", content="x")).status_code == 200
        assert nonce_server.seen.statuses == [401, 200, 200, 200]
        assert tokens.fetches == 1
        assert len({p["jti"] for p in nonce_server.seen.proofs}) == 3


async def test_concurrent_requests_share_one_token(
    server: Server, clients: tuple[TokenSource, httpx.AsyncClient]
) -> None:
    tokens, api = clients
    answers = await asyncio.gather(*(api.get("/v1/echo") for _ in range(10)))
    assert [a.status_code for a in answers] == [200] * 10
    assert tokens.fetches == 1
    assert len({p["jti"] for p in server.seen.proofs}) == 10


async def test_the_mcp_sdks_httpx2_client_is_signed_the_same(server: Server) -> None:
    async with _clients(server) as (tokens, _):
        auth = DPoPAuth(tokens).for_mcp()
        transport = httpx2.ASGITransport(app=server.app)
        async with httpx2.AsyncClient(transport=transport, base_url=BASE, auth=auth) as mcp:
            for _ in range(2):
                r = await mcp.post("/v1/echo", content="from mcp")
                assert r.status_code == 200, r.text
    assert server.seen.statuses == [200, 200]
    assert len({p["jti"] for p in server.seen.proofs}) == 2


def test_sync_clients_and_threads(server: Server) -> None:
    with TestClient(server.app, base_url=BASE) as plain:
        tokens = TokenSource(AgentCredential.load(server.credential_path), client=plain)
        auth = DPoPAuth(tokens)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(3):
                    r = plain.get("/v1/echo", auth=auth.for_mcp())
                    assert r.status_code == 200, r.text
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert tokens.fetches == 1
    assert len({p["jti"] for p in server.seen.proofs}) == 12


def test_credential_file_and_refusals(server: Server, tmp_path: Path) -> None:
    cred = AgentCredential.load(server.credential_path)
    assert cred.agent_id == server.agent_id and cred.token_endpoint == TOKEN_URL
    assert cred.key["d"] not in repr(cred) and "key" not in repr(cred)

    server.auth.directory.disable_agent("bot")
    with TestClient(server.app, base_url=BASE) as plain:
        tokens = TokenSource(cred, client=plain)
        with pytest.raises(InvalidClientError, match="disabled") as caught:
            tokens.get()
    assert caught.value.code == "invalid_client"


def test_token_endpoint_nonce_is_retried(nonce_server: Server) -> None:
    with TestClient(nonce_server.app, base_url=BASE) as plain:
        tokens = TokenSource(AgentCredential.load(nonce_server.credential_path), client=plain)
        assert tokens.get()
        assert tokens.fetches == 1


async def test_the_mcp_sdk_client_signs_every_request_over_real_http(tmp_path: Path) -> None:
    """`streamable_http_client` with `mcp_http_client(auth)`: initialize, the GET stream, tool
    calls and the closing DELETE all carry a token and their own proof."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv = Server(tmp_path, base=base)

    async def tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name="ping", input_schema={"type": "object"})])

    async def call(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        return CallToolResult(content=[TextContent(text=f"pong {params.name}")])

    manager = StreamableHTTPSessionManager(
        app=MCPServer("t", on_list_tools=tools, on_call_tool=call)
    )

    async def mcp_app(scope: Scope, receive: Receive, send: Send) -> None:
        refusal = srv.check(Request(scope, receive))
        if isinstance(refusal, JSONResponse):
            await refusal(scope, receive, send)
        else:
            await manager.handle_request(scope, receive, send)

    srv.app.mount("/mcp", mcp_app)
    config = uvicorn.Config(srv.app, log_level="warning", lifespan="off")
    web = uvicorn.Server(config)
    try:
        async with manager.run():
            task = asyncio.create_task(web.serve(sockets=[sock]))
            auth = DPoPAuth.from_credential(srv.credential_path)
            with anyio.fail_after(30):
                async with (
                    mcp_http_client(auth) as http,
                    streamable_http_client(f"{base}/mcp/", http_client=http) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    assert [t.name for t in (await session.list_tools()).tools] == ["ping"]
                    for _ in range(2):
                        result = await session.call_tool("ping", {})
                        assert isinstance(result, CallToolResult) and not result.is_error
            web.should_exit = True
            await task
    finally:
        sock.close()
        srv.store.close()

    assert srv.seen.statuses and set(srv.seen.statuses) == {200}  # nothing went unsigned
    # initialize, initialized, the GET stream, list, two calls, the closing DELETE
    assert {"POST", "GET", "DELETE"} <= set(srv.seen.methods)
    assert srv.seen.methods.count("POST") >= 5
    assert len({p["jti"] for p in srv.seen.proofs}) == len(srv.seen.proofs)
    assert set(srv.seen.subjects) == {srv.agent_id}

"""The HTTP face of Corral: REST under /v1, MCP at /mcp and /sessions/{id}/mcp.

Thin: every route calls the ControlPlane and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Path, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral import __version__
from corral.api._answers import (
    Acquired,
    Health,
    PCOut,
    PoolOut,
    SessionDetail,
    SessionOut,
    ToolOut,
    ok,
)
from corral.api._openapi import install_openapi
from corral.api._problem import PROBLEM_JSON, problem_body, problems
from corral.api.auth_routes import include_auth
from corral.api.authn import EXEMPT_PATHS, Authenticate
from corral.api.console import include_console
from corral.api.console_auth import ConsoleCookieAuth
from corral.api.deps import Principal
from corral.api.directory_routes import include_directory
from corral.api.errors import install_error_handlers
from corral.api.policy_routes import include_policies
from corral.api.ssf_routes import include_ssf
from corral.domain.models import PoolSpec, Session
from corral.domain.text import visible
from corral.identity.directory import Directory
from corral.service.access import AccessEvaluator
from corral.service.auth import AuthService
from corral.service.console import ConsoleService, ConsoleSettings
from corral.service.control import ControlPlane, PoolStatus
from corral.service.events import EventDelivery
from corral.service.inbound_events import EventReceiver

__all__ = ["MAX_BODY_BYTES", "create_app"]

MAX_BODY_BYTES = 32 * 1024 * 1024
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
#: bounds of the path parameters (a pool name as PoolCreate takes it; ids as the store makes them)
PoolName = Annotated[str, Path(min_length=1, max_length=63)]
SessionId = Annotated[str, Path(min_length=1, max_length=128)]
ToolName = Annotated[str, Path(min_length=1, max_length=64, description="a tool (docs/tools.md)")]
_PNG: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the screen as PNG",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _ok(model: Any, status: int, *errors: int) -> dict[int | str, Any]:
    """`responses=`: the success answer and the problem answers particular to the route."""
    return {**ok(model, status), **problems(*errors)}


_YEAR_S = 366 * 86400  # timeouts and lifetimes: a year at most


class PoolCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)
    image: str = Field(min_length=1, max_length=128)
    region: str = Field("local", min_length=1, max_length=63, description="a label")
    size: str = Field("small", min_length=1, max_length=32, description="small, medium or large")
    warm: int = Field(2, ge=0, le=1000)
    max: int = Field(10, ge=1, le=1000)
    idle_timeout_s: int = Field(1800, ge=1, le=_YEAR_S)
    max_lifetime_s: int = Field(8 * 3600, ge=1, le=_YEAR_S)
    allow_bearer: bool = Field(
        False,
        description="accept plain bearer tokens (no DPoP) for acquiring from this pool and "
        "on its sessions' URLs; for MCP clients that cannot do proof of possession",
    )
    max_sessions_per_agent: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="active sessions one agent may hold in this pool at once (at most max); "
        "omitted: half the pool's max, at least one",
    )


class SessionControls(BaseModel):
    """Restrictions fixed for the session's whole life (on top of any a policy sets)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    read_only: bool = Field(False, description="no input tools: the agent can only look")
    no_clipboard: bool = Field(False, description="no get_clipboard / set_clipboard")
    no_file_transfer: bool = Field(False, description="no read_file / write_file")
    allowed_hosts: list[Annotated[str, Field(max_length=253)]] | None = Field(
        None, max_length=100, description="open_url only to these hosts (omit: any host)"
    )


class AcquireBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wait_s: float | None = Field(None, ge=0, le=120, description="how long to wait for a PC")
    controls: SessionControls | None = Field(
        None, description="session controls fixed at acquire (docs/policies.md)"
    )


class _TooLarge(Exception):
    """A streamed (chunked) body went over the limit."""


class _BodyLimit:
    """Refuse request bodies over the limit with 413, before anything reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _too_large(send, self.limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send, self.limit)


async def _too_large(send: Send, limit: int) -> None:
    problem = problem_body(
        413, "too_large", f"request body over {limit} bytes", "send less data per request"
    )
    body = json.dumps(problem).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _session_json(session: Session, base_url: str) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "session_id": session.id,
        "pool": session.pool,
        "pc_id": session.pc_id,
        "state": str(session.state),
        "mcp_url": f"{base_url}/sessions/{session.id}/mcp",
        "viewer_url": f"{base_url}/sessions/{session.id}/viewer",
        "created_at": iso(session.created_at),
        "expires_at": iso(session.expires_at),
        "last_activity": iso(session.last_activity),
        "released_at": iso(session.released_at),
        "release_reason": session.release_reason,
        "released_by": session.released_by,
    }


def _prefer_wait(prefer: str | None) -> float | None:
    """The `wait` preference of a Prefer header (RFC 7240), in seconds; None if absent."""
    for part in (prefer or "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                return max(0.0, float(value.strip().strip('"')))
            except ValueError:
                return None  # a malformed preference is ignored, as RFC 7240 says
    return None


def _pool_json(pool: PoolStatus) -> dict[str, Any]:
    return pool.to_json()


# The viewer's script is the same for every session (its screenshot URL is a data attribute), so
# the CSP can allow exactly this script by its hash and nothing else.
_VIEWER_SCRIPT = """
const url = document.body.dataset.screenshot;
async function tick(){
  const r = await fetch(url, {cache: "no-store"});
  if (r.ok) { document.getElementById("s").src = URL.createObjectURL(await r.blob()); }
  else { document.body.insertAdjacentText("beforeend", " session ended"); return; }
  setTimeout(tick, 1000);
}
tick();
"""
_VIEWER_STYLE = "body{margin:0;background:#222;color:#ddd;font:14px sans-serif}img{max-width:100%}"
_VIEWER = (
    '<!doctype html><meta charset="utf-8"><title>Corral session {sid}</title>'
    f"<style>{_VIEWER_STYLE}</style>"
    '<body data-screenshot="/v1/sessions/{sid}/screenshot">'
    "<p>Session {sid} (read-only view, refreshed every second)</p>"
    '<img id="s" alt="screen of session {sid}">'
    f"<script>{_VIEWER_SCRIPT}</script></body>"
)


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# Answers a browser renders (the viewer) or may be tricked into rendering (a screenshot): no
# content sniffing, no framing by another site (clickjacking), nothing loaded from elsewhere.
_VIEWER_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_csp_hash(_VIEWER_SCRIPT)}; "
        f"style-src {_csp_hash(_VIEWER_STYLE)}; connect-src 'self'; img-src blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_SCREENSHOT_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def create_app(
    control: ControlPlane,
    *,
    base_url: str = "http://127.0.0.1:8420",
    manage_pools: bool = True,
    destroy_on_exit: bool = True,
    default_pools: list[PoolSpec] | None = None,
    allowed_hosts: list[str] | None = None,
    auth: AuthService | None = None,
    event_receiver: EventReceiver | None = None,
    event_delivery: EventDelivery | None = None,
    console_settings: ConsoleSettings | None = None,
) -> FastAPI:
    """The ASGI app. Its lifespan starts the control plane (store migration, recovery), the
    pool manager and the MCP session managers, and on exit stops them (destroying PCs when
    `destroy_on_exit`)."""
    from corral.mcp.asgi import mount_mcp

    mcp_lifespan: list[contextlib.AbstractAsyncContextManager[Any]] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await control.start(default_pools or [])
        manager = asyncio.create_task(control.run()) if manage_pools else None
        delivery = asyncio.create_task(event_delivery.run()) if event_delivery else None
        async with contextlib.AsyncExitStack() as stack:
            for ctx in mcp_lifespan:
                await stack.enter_async_context(ctx)
            try:
                yield
            finally:
                for task in (manager, delivery):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                await control.stop(destroy_pcs=destroy_on_exit)

    app = FastAPI(title="Corral", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    console: ConsoleService | None = None
    if auth is not None:
        include_auth(app, auth)
        console = ConsoleService(
            control.store,
            auth.keyring,
            auth.issuer,
            federation=auth.federation,
            settings=console_settings or ConsoleSettings(),
        )
        include_console(app, console, control)
    directory = Directory(control.store, events=control.events)  # CAEP events (docs/events.md)
    include_directory(app, directory, token_endpoint=f"{base_url}/v1/token", policy=control.policy)
    if event_receiver is not None:  # Shared Signals (docs/events.md)
        include_ssf(app, event_receiver, event_receiver.audience)
    include_policies(app, control.policy)

    @app.get("/healthz", response_model=None, responses=ok(Health))
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/pools", response_model=None, responses=ok(list[PoolOut]))
    async def list_pools(who: Principal) -> list[dict[str, Any]]:
        pools = await asyncio.to_thread(lambda: control.list_pools(principal=who))
        return [_pool_json(p) for p in pools]

    @app.post("/v1/pools", status_code=201, response_model=None, responses=_ok(PoolOut, 201, 409))
    async def create_pool(body: PoolCreate, who: Principal) -> dict[str, Any]:
        spec = PoolSpec(**body.model_dump())
        return _pool_json(await control.create_pool(spec, principal=who))

    @app.get("/v1/pools/{name}", response_model=None, responses=_ok(PoolOut, 200, 404))
    async def get_pool(name: PoolName, who: Principal) -> dict[str, Any]:
        return _pool_json(await asyncio.to_thread(lambda: control.get_pool(name, principal=who)))

    @app.get("/v1/pools/{name}/pcs", response_model=None, responses=_ok(list[PCOut], 200, 404))
    async def list_pool_pcs(name: PoolName, who: Principal) -> list[dict[str, Any]]:
        pcs = await asyncio.to_thread(lambda: control.list_pool_pcs(name, principal=who))
        return [
            {
                "id": pc.id,
                "state": str(pc.state),
                "session_id": pc.session_id,
                "created_at": pc.created_at.isoformat(),
                "detail": pc.detail,
            }
            for pc in pcs
        ]

    @app.delete(
        "/v1/pools/{name}", status_code=202, response_model=None, responses=_ok(PoolOut, 202, 404)
    )
    async def delete_pool(name: PoolName, who: Principal) -> dict[str, Any]:
        return _pool_json(await control.delete_pool(name, principal=who))

    @app.post(
        "/v1/pools/{pool}/sessions",
        status_code=201,
        response_model=None,
        responses=_ok(Acquired, 201, 404, 409),
    )
    async def acquire(
        pool: PoolName,
        who: Principal,
        body: Annotated[AcquireBody | None, Body()] = None,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> dict[str, Any]:
        # The whole body is the request an Idempotency-Key stands for.
        request = body.model_dump(exclude_none=True) if body else {}
        session = await control.acquire(
            pool,
            idempotency_key=idempotency_key,
            request=request,
            wait_s=body.wait_s if body else None,
            principal=who,
        )
        answer = _session_json(session, base_url)
        answer["controls"] = control.policy.controls(session.id).to_json()
        if auth is not None:
            # A token for this session only, bound to the caller's own DPoP key (a bearer
            # caller, admitted only on a pool that allows bearer tokens, gets a bearer one).
            answer.update(auth.session_grant(who, session.id))
        return answer

    @app.get("/v1/sessions", response_model=None, responses=ok(list[SessionOut]))
    async def list_sessions(who: Principal, active: bool = True) -> list[dict[str, Any]]:
        sessions = await asyncio.to_thread(lambda: control.list_sessions(active, principal=who))
        return [_session_json(s, base_url) for s in sessions]

    @app.get(
        "/v1/sessions/{session_id}", response_model=None, responses=_ok(SessionDetail, 200, 404)
    )
    async def get_session(session_id: SessionId, who: Principal) -> dict[str, Any]:
        session = await asyncio.to_thread(lambda: control.get_session(session_id, principal=who))
        answer = _session_json(session, base_url)
        answer["controls"] = control.policy.controls(session.id).to_json()
        return answer

    @app.delete(
        "/v1/sessions/{session_id}", response_model=None, responses=_ok(SessionOut, 200, 404)
    )
    async def release(session_id: SessionId, who: Principal) -> dict[str, Any]:
        return _session_json(await control.release(session_id, principal=who), base_url)

    @app.post(
        "/v1/sessions/{session_id}/actions/{tool}",
        response_model=None,
        responses=_ok(ToolOut, 200, 404, 409, 422, 502, 504, 507),
    )
    async def act(
        session_id: SessionId,
        tool: ToolName,
        who: Principal,
        args: Annotated[dict[str, Any] | None, Body()] = None,
        prefer: Annotated[str | None, Header(max_length=200)] = None,
    ) -> dict[str, Any]:
        # `Prefer: wait=N` (RFC 7240): wait up to N s for a sponsor's approval, if one is due.
        wait = _prefer_wait(prefer)
        result = await control.act(session_id, tool, args, principal=who, approval_wait_s=wait)
        return result.to_json()

    @app.get(
        "/v1/sessions/{session_id}/screenshot",
        response_class=Response,
        responses=_PNG | problems(404, 409, 422, 502, 504),
    )
    async def screenshot(session_id: SessionId, who: Principal) -> Response:
        png = await control.peek_screenshot(session_id, principal=who)
        return Response(png, media_type="image/png", headers=_SCREENSHOT_HEADERS)

    @app.get("/sessions/{session_id}/viewer", response_class=HTMLResponse, responses=problems(404))
    async def viewer(session_id: SessionId, who: Principal) -> HTMLResponse:
        session = await asyncio.to_thread(lambda: control.get_session(session_id, principal=who))
        page = _VIEWER.replace("{sid}", html.escape(visible(session.id)))
        return HTMLResponse(page, headers=_VIEWER_HEADERS)

    install_openapi(app, public=EXEMPT_PATHS)
    mcp_hosts = [f"{h}:*" for h in allowed_hosts] if allowed_hosts else None
    grant = auth.session_grant if auth is not None else None
    mcp_lifespan.append(mount_mcp(app, control, allowed_hosts=mcp_hosts, session_grant=grant))
    if auth is not None:
        # Every request but /healthz, /v1/token and the JWKS needs a verified identity.
        app.add_middleware(
            Authenticate,
            keyring=auth.keyring,
            issuer=auth.issuer,
            access=AccessEvaluator(control.store),
            dpop_settings=auth.dpop_settings,
            console=ConsoleCookieAuth(console) if console is not None else None,
        )
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    # DNS rebinding: a web page must not reach the loopback API under its own host name.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or LOCAL_NAMES))
    return app

"""The HTTP face of Corral: REST under /v1, MCP at /mcp and /sessions/{id}/mcp.

Thin: every route hands its operation to the Gate and renders the answer; the server's parts
around the Gate are assembled by `corral.gate.server`.
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
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, FastAPI, Header, Path, Response
from fastapi.responses import HTMLResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral import __version__
from corral.api._answers import (
    Acquired,
    Health,
    PCOut,
    PoolOut,
    ReleasedOut,
    SessionDetail,
    SessionOut,
    ToolOut,
    ok,
)
from corral.api._openapi import install_openapi
from corral.api._problem import problems
from corral.api.audit_routes import include_audit
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
from corral.errors import PROBLEM_MEDIA_TYPE, TooLargeError, problem
from corral.gate import Gate, operation, tool_operation
from corral.gate.incoming import trace_from, traced
from corral.gate.operations import Acquire, AcquireRequest, ListSessions, PoolCreate
from corral.gate.server import assemble

if TYPE_CHECKING:
    from corral.audit.service import AuditService
    from corral.console.service import ConsoleSettings
    from corral.identity.event_emitter import EventDelivery
    from corral.identity.event_receiver import EventReceiver
    from corral.identity.token_endpoint import AuthService
    from corral.lifecycle.control import ControlPlane, PoolStatus, SessionGrant

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
    return {**ok(model, status), **problems(*errors)}


class _TooLarge(Exception):
    """A streamed (chunked) body went over the limit."""


class _Traced:
    """W3C trace context from the request's headers, for every operation the request causes
    (`corral.gate.incoming`; MCP's `params._meta` takes over inside the MCP servers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        if not any(name == b"traceparent" for name, _ in headers):
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if name in (b"traceparent", b"tracestate", b"baggage")
        }
        with traced(trace_from(carrier)):
            await self.app(scope, receive, send)


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
    error = TooLargeError(f"request body over {limit} bytes", hint="send less data per request")
    body = json.dumps(problem(error)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
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


def _grant_json(grant: SessionGrant, base_url: str) -> dict[str, Any]:
    """A session as REST shows it, with its controls and (acquire) its token."""
    answer = _session_json(grant.session, base_url)
    answer["controls"] = grant.controls.to_json()
    answer.update(grant.token)
    return answer


_LIST_POOLS = operation("list_pools")
_SHOW_POOL = operation("show_pool")
_LIST_POOL_PCS = operation("list_pool_pcs")
_CREATE_POOL = operation("create_pool")
_DELETE_POOL = operation("delete_pool")
_ACQUIRE = operation("acquire")
_RELEASE = operation("release")
_LIST_SESSIONS = operation("list_sessions")
_SHOW_SESSION = operation("show_session")
_OBSERVE = operation("observe")


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
    audit: AuditService | None = None,
) -> FastAPI:
    """The ASGI app. Its lifespan starts the control plane (store migration, recovery), the
    pool manager and the MCP session managers, and on exit stops them (destroying PCs when
    `destroy_on_exit`)."""
    from corral.mcp.asgi import mount_mcp

    mcp_lifespan: list[contextlib.AbstractAsyncContextManager[Any]] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if audit is not None:
            audit.start()  # before any call: the Gate records every one
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
                if audit is not None:
                    await asyncio.to_thread(audit.stop)  # the last records, a last checkpoint

    app = FastAPI(title="Corral", version=__version__, lifespan=lifespan)
    parts = assemble(
        control, base_url=base_url, auth=auth, console_settings=console_settings, audit=audit
    )
    gate: Gate = parts.gate
    app.state.gate = gate
    install_error_handlers(app)
    console = parts.console
    if auth is not None:
        include_auth(app, auth)
    if console is not None:
        include_console(app, console, gate)
    include_directory(app, gate)
    if event_receiver is not None:  # Shared Signals (docs/events.md)
        include_ssf(app, event_receiver, event_receiver.audience)
    include_policies(app, gate)
    if audit is not None:
        include_audit(app, gate, audit)

    @app.get("/healthz", response_model=None, responses=ok(Health))
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/pools", response_model=None, responses=ok(list[PoolOut]))
    async def list_pools(who: Principal) -> list[dict[str, Any]]:
        pools = await gate.handle(who, _LIST_POOLS)
        return [_pool_json(p) for p in pools]

    @app.post("/v1/pools", status_code=201, response_model=None, responses=_ok(PoolOut, 201, 409))
    async def create_pool(body: PoolCreate, who: Principal) -> dict[str, Any]:
        return _pool_json(await gate.handle(who, _CREATE_POOL, None, body))

    @app.get("/v1/pools/{name}", response_model=None, responses=_ok(PoolOut, 200, 404))
    async def get_pool(name: PoolName, who: Principal) -> dict[str, Any]:
        return _pool_json(await gate.handle(who, _SHOW_POOL, name))

    @app.get("/v1/pools/{name}/pcs", response_model=None, responses=_ok(list[PCOut], 200, 404))
    async def list_pool_pcs(name: PoolName, who: Principal) -> list[dict[str, Any]]:
        pcs = await gate.handle(who, _LIST_POOL_PCS, name)
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
        return _pool_json(await gate.handle(who, _DELETE_POOL, name))

    @app.post(
        "/v1/pools/{pool}/sessions",
        status_code=201,
        response_model=None,
        responses=_ok(Acquired, 201, 404, 409),
    )
    async def acquire(
        pool: PoolName,
        who: Principal,
        body: Annotated[AcquireRequest | None, Body()] = None,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> dict[str, Any]:
        # The whole body is the request an Idempotency-Key stands for.
        args = Acquire.model_construct(
            wait_s=body.wait_s if body else None,
            controls=body.controls if body else None,
            idempotency_key=idempotency_key,
        )
        grant: SessionGrant = await gate.handle(who, _ACQUIRE, pool, args)
        return _grant_json(grant, base_url)

    @app.get("/v1/sessions", response_model=None, responses=ok(list[SessionOut]))
    async def list_sessions(who: Principal, active: bool = True) -> list[dict[str, Any]]:
        args = ListSessions.model_construct(active=active)
        sessions = await gate.handle(who, _LIST_SESSIONS, None, args)
        return [_session_json(s, base_url) for s in sessions]

    @app.get(
        "/v1/sessions/{session_id}", response_model=None, responses=_ok(SessionDetail, 200, 404)
    )
    async def get_session(session_id: SessionId, who: Principal) -> dict[str, Any]:
        return _grant_json(await gate.handle(who, _SHOW_SESSION, session_id), base_url)

    @app.delete(
        "/v1/sessions/{session_id}", response_model=None, responses=_ok(ReleasedOut, 200, 404)
    )
    async def release(session_id: SessionId, who: Principal) -> dict[str, Any]:
        done = await gate.call(who, _RELEASE, session_id)
        body = _session_json(done.result, base_url)
        if done.receipt is not None:
            body["audit"] = done.receipt
        return body

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
        op = tool_operation(tool)
        result = await gate.handle(who, op, session_id, args, wait_s=wait)
        return result.to_json()  # type: ignore[no-any-return]

    @app.get(
        "/v1/sessions/{session_id}/screenshot",
        response_class=Response,
        responses=_PNG | problems(404, 409, 422, 502, 504),
    )
    async def screenshot(session_id: SessionId, who: Principal) -> Response:
        png = await gate.handle(who, _OBSERVE, session_id)
        return Response(png, media_type="image/png", headers=_SCREENSHOT_HEADERS)

    @app.get("/sessions/{session_id}/viewer", response_class=HTMLResponse, responses=problems(404))
    async def viewer(session_id: SessionId, who: Principal) -> HTMLResponse:
        grant: SessionGrant = await gate.handle(who, _SHOW_SESSION, session_id)
        page = _VIEWER.replace("{sid}", html.escape(visible(grant.session.id)))
        return HTMLResponse(page, headers=_VIEWER_HEADERS)

    # the public hash tiles too (their path is a pattern in EXEMPT_PATHS' rule)
    install_openapi(app, public=EXEMPT_PATHS | {"/audit/tile/{path}"})
    mcp_hosts = [f"{h}:*" for h in allowed_hosts] if allowed_hosts else None
    mcp_lifespan.append(mount_mcp(app, gate, allowed_hosts=mcp_hosts, handles=parts.handles))
    if auth is not None:
        if parts.access is None:  # never: assemble() gives one with authentication
            raise RuntimeError("authentication configured without access evaluation")
        # Every request but /healthz, /v1/token and the JWKS needs a verified identity.
        app.add_middleware(
            Authenticate,
            keyring=auth.keyring,
            issuer=auth.issuer,
            access=parts.access,
            dpop_settings=auth.dpop_settings,
            console=ConsoleCookieAuth(console) if console is not None else None,
        )
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(_Traced)
    # DNS rebinding: a web page must not reach the loopback API under its own host name.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or LOCAL_NAMES))
    return app

"""Mount Corral's two MCP servers on the control plane's ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import Route

from corral.mcp._http import security_settings
from corral.mcp.gateway import GatewayMCP, SessionHandleCodec
from corral.mcp.session_server import SessionMCP

if TYPE_CHECKING:
    from corral.gate import Gate

__all__ = [
    "DEFAULT_IDLE_TIMEOUT_S",
    "GATEWAY_PATH",
    "MAX_REQUEST_BYTES",
    "SESSION_PATH",
    "mount_mcp",
]

GATEWAY_PATH = "/mcp"
SESSION_PATH = "/sessions/{session_id}/mcp"
DEFAULT_IDLE_TIMEOUT_S = 30 * 60.0
# As for REST: room for write_file's 16 MiB as base64 in one JSON-RPC message.
MAX_REQUEST_BYTES = 32 * 1024 * 1024


def mount_mcp(
    app: Starlette,
    gate: Gate,
    *,
    allowed_hosts: Sequence[str] | None = None,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    handles: SessionHandleCodec,
) -> AbstractAsyncContextManager[None]:
    """Serve the gateway at `/mcp` and the per-session servers at `/sessions/{id}/mcp`
    (streamable HTTP), both acting only through the Gate (`gate`).

    The routes go first in `app`'s table, so a catch-all mounted at `/` (the console) cannot
    shadow them. Returns the context that runs the MCP session managers; it must be entered
    during the app's lifespan, inside the control plane's own lifetime (closing an MCP session
    releases its PC through the Gate), and only once (a restart needs a new app):

        mcp_lifespan = mount_mcp(app, gate, handles=parts.handles)

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            ...  # start the control plane
            async with mcp_lifespan:
                yield
            ...  # stop the control plane

    `allowed_hosts`: the Host header values accepted (DNS-rebinding protection, with the
    matching http(s) origins); default this machine's names on any port, `["*"]` accepts any.
    `handles`: mints and opens the gateway's session handles; give every control-plane
    process the same (`SessionHandles.from_keyring` with the shared keyring), so any of them
    opens a handle another minted (`corral.gate.server.assemble` does; `SessionHandles.ephemeral()`
    is a key of this process only).
    `idle_timeout_s`: a gateway MCP session with no request for this long is closed, which
    releases its PC (a client that vanished without closing).
    """
    security = security_settings(allowed_hosts)
    gateway = GatewayMCP(
        gate,
        security,
        idle_timeout_s=idle_timeout_s,
        max_request_bytes=MAX_REQUEST_BYTES,
        handles=handles,
    )
    per_session = SessionMCP(gate, security, max_request_bytes=MAX_REQUEST_BYTES)
    app.router.routes[0:0] = [
        Route(GATEWAY_PATH, endpoint=gateway, name="mcp_gateway", include_in_schema=False),
        Route(SESSION_PATH, endpoint=per_session, name="mcp_session", include_in_schema=False),
    ]

    @asynccontextmanager
    async def run() -> AsyncIterator[None]:
        async with gateway.manager.run(), per_session.manager.run():
            yield

    return run()

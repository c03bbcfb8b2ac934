"""The gateway MCP server, `/mcp`: the whole lifecycle from one plain MCP client configuration.

`list_pools`, `acquire_pc`, `release_pc`, and the computer tools acting on the PC that
`acquire_pc` bound to *this MCP session* (the streamable-HTTP `Mcp-Session-Id`). One MCP
session holds at most one PC.

Nothing leaks when a client goes away: the binding lives in the MCP connection's own state,
and releasing the PC is pushed on the connection's teardown stack, which the SDK unwinds
however the MCP session ends (the client's DELETE on close, the idle timeout (30 minutes by
default) for a client that vanished, a crash, server shutdown). The control plane's own idle
eviction is the backstop under all of it.

The binding needs an MCP session, which only the initialize-handshake era of the protocol
has: requests of the stateless 2026-07-28 era are refused with "unsupported protocol version"
naming the handshake versions, which makes the official client (`mode="auto"`) fall back to
the handshake. Clients that need the stateless era use the per-session URL instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import (
    UNSUPPORTED_PROTOCOL_VERSION,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    UnsupportedProtocolVersionErrorData,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from corral import __version__
from corral.domain.access import SYSTEM, Caller
from corral.errors import ConflictError, CorralError, InvalidInputError, NotFoundError
from corral.mcp._http import jsonrpc_refusal, principal_of
from corral.mcp._tools import (
    computer_tools,
    guarded,
    input_schema,
    mcp_tool,
    parse_model,
    run_computer_tool,
    text_result,
)

if TYPE_CHECKING:
    from corral.service.control import ControlPlane, SessionInfo

__all__ = ["GatewayMCP", "SessionGrant"]

#: Issues the session-token fields for (caller, session id): `AuthService.session_grant`.
SessionGrant = Callable[[Caller, str], dict[str, Any]]

log = logging.getLogger("corral.mcp")

BOUND: Final = "corral.session_id"  # Connection.state key: the session this MCP session holds
RELEASE_ON_CLOSE: Final = "corral.release_on_close"  # Connection.state key: teardown pushed
ACQUIRER: Final = "corral.acquirer"  # Connection.state key: the caller that bound the PC
CLOSED_REASON: Final = "mcp_connection_closed"  # release reason when the connection ends
LOCK: Final = "corral.lock"  # Connection.state key: serialises acquire_pc and release_pc

INSTRUCTIONS = (
    "Corral lends you an isolated Linux desktop PC. Call `list_pools`, then `acquire_pc` "
    "(it binds one PC to this MCP session), drive it with the computer tools (start with "
    "`screenshot`; coordinates are pixels of the latest screenshot), and call `release_pc` "
    "when done. The PC is reset on release; closing the MCP session releases it too."
)


class _ListPoolsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Controls(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    read_only: bool = False
    no_clipboard: bool = False
    no_file_transfer: bool = False
    allowed_hosts: list[str] | None = Field(None, max_length=100)


class _AcquireArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pool: str = Field(
        "default", min_length=1, max_length=63, description="pool name from list_pools"
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="retrying with the same key returns the same PC, never a second one",
    )
    wait_s: float | None = Field(
        None, ge=0, le=120, description="seconds to wait for a free PC (server default if omitted)"
    )
    controls: _Controls | None = Field(
        None,
        description="restrictions fixed for the session's whole life, on top of any a policy "
        "sets: read_only (no input), no_clipboard, no_file_transfer, allowed_hosts for open_url",
    )


class _ReleaseArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


LIFECYCLE_TOOLS = (
    mcp_tool(
        "list_pools",
        "List the pools of PCs you may acquire from: name, image, region, size, and how many "
        "PCs are ready / in use / booting.",
        _ListPoolsArgs,
    ),
    mcp_tool(
        "acquire_pc",
        "Acquire a PC from a pool and bind it to this MCP session; the computer tools then act "
        "on it. Waits for a free PC up to wait_s. One PC per MCP session: release_pc first to "
        "get another.",
        _AcquireArgs,
    ),
    mcp_tool(
        "release_pc",
        "Release the PC bound to this MCP session; it is reset, and everything on it is lost. "
        "Safe to call twice.",
        _ReleaseArgs,
    ),
)


def _connection(ctx: ServerRequestContext[Any]) -> Connection | None:
    """The MCP connection (one per MCP session) that carried this request.

    `Connection.state` and `Connection.exit_stack` are the SDK's documented per-connection
    scratch space and teardown, but mcp 2.3.0 hands lowlevel handlers a ServerRequestContext
    whose session proxies the Connection only privately; this is the one place that reaches
    it (tests/mcp cover it, so an SDK change shows up there).
    """
    conn = getattr(ctx.session, "_connection", None)
    return conn if isinstance(conn, Connection) else None


def _session_json(s: SessionInfo, base_url: str) -> dict[str, Any]:
    return {
        "session_id": s.id,
        "pool": s.pool,
        "pc_id": s.pc_id,
        "expires_at": s.expires_at.isoformat(),
        "mcp_url": f"{base_url}/sessions/{s.id}/mcp",
    }


class GatewayMCP:
    """ASGI app for `/mcp`; run `manager.run()` during the app lifespan."""

    def __init__(
        self,
        control: ControlPlane,
        security: TransportSecuritySettings,
        *,
        idle_timeout_s: float,
        max_request_bytes: int,
        session_grant: SessionGrant | None = None,
    ) -> None:
        self.control = control
        self.session_grant = session_grant
        self.server: Server[Any] = Server(
            "corral",
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            get_tool_input_schema=self._input_schema,
        )
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            security_settings=security,
            session_idle_timeout=idle_timeout_s,
            max_request_body_size=max_request_bytes,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        requested = Request(scope).headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if requested is not None and requested not in HANDSHAKE_PROTOCOL_VERSIONS:
            data = UnsupportedProtocolVersionErrorData(
                supported=list(HANDSHAKE_PROTOCOL_VERSIONS), requested=requested
            ).model_dump(mode="json")
            message = (
                "the gateway binds a PC to an MCP session, so it speaks the initialize-handshake "
                "protocol versions; use one of them, or the per-session URL /sessions/{id}/mcp"
            )
            await jsonrpc_refusal(400, UNSUPPORTED_PROTOCOL_VERSION, message, data)(
                scope, receive, send
            )
            return
        await self.manager.handle_request(scope, receive, send)

    @staticmethod
    def _input_schema(name: str) -> dict[str, Any] | None:
        for tool in LIFECYCLE_TOOLS:
            if tool.name == name:
                return tool.input_schema
        return input_schema(name)

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=[*LIFECYCLE_TOOLS, *computer_tools()])

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        name, args = params.name, params.arguments
        conn = _connection(ctx)
        who = principal_of(ctx.request)
        if name == "list_pools":
            return await guarded(name, lambda: self._list_pools(args, who))
        if conn is None or conn.session_id is None:
            return await guarded(name, _no_mcp_session)
        if name == "acquire_pc":
            return await guarded(name, lambda: self._acquire(conn, ctx.request, args, who))
        if name == "release_pc":
            return await guarded(name, lambda: self._release(conn, args, who))
        session_id = conn.state.get(BOUND)
        if session_id is None:
            return await guarded(name, _not_acquired)
        result = await run_computer_tool(self.control, session_id, name, args, who)
        if result.is_error and _gone(result):
            conn.state.pop(BOUND, None)  # released elsewhere or evicted: acquire_pc may rebind
        return result

    async def _list_pools(self, args: dict[str, Any] | None, who: Caller | None) -> CallToolResult:
        parse_model("list_pools", _ListPoolsArgs, args)
        pools = [
            {
                "name": p.name,
                "image": p.image,
                "region": p.region,
                "size": p.size,
                "warm": p.warm,
                "max": p.max,
                "counts": dict(p.counts),
            }
            for p in await asyncio.to_thread(lambda: self.control.list_pools(principal=who))
        ]
        lines = [
            f"{p['name']}: image {p['image']}, region {p['region']}, size {p['size']}; "
            + ", ".join(f"{n} {state}" for state, n in sorted(p["counts"].items()))
            for p in pools
        ]
        return text_result("\n".join(lines) or "no pools", {"pools": pools})

    @staticmethod
    def _lock(conn: Connection) -> asyncio.Lock:
        """One acquire or release at a time per MCP session: two racing acquire_pc calls
        must not both take a PC (the first would leak until idle eviction)."""
        lock = conn.state.get(LOCK)
        if lock is None:
            lock = conn.state[LOCK] = asyncio.Lock()
        assert isinstance(lock, asyncio.Lock)
        return lock

    async def _acquire(
        self, conn: Connection, request: object, args: dict[str, Any] | None, who: Caller | None
    ) -> CallToolResult:
        async with self._lock(conn):
            return await self._acquire_locked(conn, request, args, who)

    async def _acquire_locked(
        self, conn: Connection, request: object, args: dict[str, Any] | None, who: Caller | None
    ) -> CallToolResult:
        a = parse_model("acquire_pc", _AcquireArgs, args)
        base_url = str(request.base_url).rstrip("/") if isinstance(request, Request) else ""
        held = conn.state.get(BOUND)
        if held is not None:
            try:
                current = await asyncio.to_thread(
                    lambda: self.control.get_session(held, principal=who)
                )
            except NotFoundError:
                conn.state.pop(BOUND, None)
            else:
                if current.pool != a.pool:
                    raise ConflictError(
                        f"this MCP session already holds PC {current.pc_id} from pool "
                        f"{current.pool!r}",
                        hint="call release_pc first, or open another MCP session",
                    )
                return text_result(
                    f"already holding PC {current.pc_id} (session {current.id}); the computer "
                    "tools act on it",
                    self._answer(current, base_url, who),
                )
        request = {"controls": a.controls.model_dump(exclude_none=True)} if a.controls else None
        session = await self.control.acquire(
            a.pool,
            idempotency_key=a.idempotency_key,
            request=request,
            wait_s=a.wait_s,
            principal=who,
        )
        conn.state[BOUND] = session.id
        conn.state[ACQUIRER] = who
        if not conn.state.get(RELEASE_ON_CLOSE):
            conn.state[RELEASE_ON_CLOSE] = True
            conn.exit_stack.push_async_callback(self._release_on_close, conn)
        return text_result(
            f"acquired PC {session.pc_id} from pool {session.pool} (session {session.id}, "
            f"expires {session.expires_at.isoformat()}); the computer tools now act on it. "
            "Call release_pc when done.",
            self._answer(session, base_url, who),
        )

    def _answer(self, session: SessionInfo, base_url: str, who: Caller | None) -> dict[str, Any]:
        """The session as JSON (with its controls, if any), and a token for its per-session
        URL: another MCP client holding the same DPoP key can drive this PC there (`mcp_url`),
        until release."""
        answer = _session_json(session, base_url)
        controls = self.control.policy.controls(session.id)
        if controls.any:
            answer["controls"] = controls.to_json()
        if self.session_grant is not None and who is not None:
            answer.update(self.session_grant(who, session.id))
        return answer

    async def _release(
        self, conn: Connection, args: dict[str, Any] | None, who: Caller | None
    ) -> CallToolResult:
        parse_model("release_pc", _ReleaseArgs, args)
        async with self._lock(conn):
            return await self._release_locked(conn, who)

    async def _release_locked(self, conn: Connection, who: Caller | None) -> CallToolResult:
        session_id = conn.state.pop(BOUND, None)
        conn.state.pop(ACQUIRER, None)
        if session_id is None:
            return text_result("no PC is bound to this MCP session; nothing to release")
        session = await self.control.release(session_id, principal=who)
        return text_result(
            f"released PC {session.pc_id} (session {session.id}); it is being reset",
            {"session_id": session.id, "pc_id": session.pc_id, "released": True},
        )

    async def _release_on_close(self, conn: Connection) -> None:
        session_id = conn.state.pop(BOUND, None)
        acquirer = conn.state.pop(ACQUIRER, None)
        if session_id is None:
            return
        try:
            # The MCP session is gone, and with it its caller: the server releases what it held,
            # recorded as released by the agent whose connection it was, with the reason.
            await self.control.release(
                session_id,
                CLOSED_REASON,
                principal=SYSTEM,
                on_behalf_of=acquirer if isinstance(acquirer, Caller) else None,
            )
            log.info("MCP session %s closed: released %s", conn.session_id, session_id)
        except CorralError as exc:
            log.warning("MCP session closed; releasing %s failed: %s", session_id, exc)


def _gone(result: CallToolResult) -> bool:
    problem = result.structured_content or {}
    return bool(result.is_error) and problem.get("code") == "session_gone"


async def _not_acquired() -> CallToolResult:
    raise InvalidInputError(
        "no PC is bound to this MCP session", hint="call acquire_pc first (see list_pools)"
    )


async def _no_mcp_session() -> CallToolResult:
    raise InvalidInputError(
        "this request has no MCP session, so no PC can be bound to it",
        hint="connect with the initialize handshake (streamable HTTP), or use the per-session "
        "URL /sessions/{id}/mcp",
    )

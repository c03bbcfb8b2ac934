"""The per-session MCP server, `/sessions/{session_id}/mcp`: the "computer URL".

The computer tools act on the session named in the URL. Before MCP sees a request, the session
is looked up: a released or unknown session answers HTTP 404 at once, so a released session's
URL stops working immediately (and a tool call that races a release gets a tool error from the
control plane). The server is stateless (no MCP session id to keep or leak): the URL carries
all the state, so any MCP client, of either protocol era, can use it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import (
    INVALID_REQUEST,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
)
from starlette.types import Receive, Scope, Send

from corral import __version__
from corral.errors import InvalidInputError, NotFoundError
from corral.gate.incoming import traced
from corral.gate.operations import operation
from corral.mcp._http import (
    check_routing_headers,
    jsonrpc_refusal,
    principal_of,
    session_id_of,
    trace_of,
)
from corral.mcp._tools import computer_tools, error_result, input_schema, run_computer_tool

if TYPE_CHECKING:
    from corral.gate import Gate

__all__ = ["SessionMCP"]

log = logging.getLogger("corral.mcp")
_DOOR = operation("show_session")  # read_session, before MCP sees a request

INSTRUCTIONS = (
    "This server is one Linux desktop PC lent to you by Corral. Start with `screenshot`; "
    "coordinates are pixels of the latest screenshot (origin top-left). The PC is reset when "
    "its session is released, so nothing you write survives it."
)


class SessionMCP:
    """ASGI app for `/sessions/{session_id}/mcp`; run `manager.run()` during the app lifespan."""

    def __init__(
        self, gate: Gate, security: TransportSecuritySettings, *, max_request_bytes: int
    ) -> None:
        self.gate = gate
        self.max_request_bytes = max_request_bytes
        self.server: Server[Any] = Server(
            "corral-pc",
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            get_tool_input_schema=input_schema,
        )
        # Plain JSON answers, not one SSE stream per POST (see GatewayMCP).
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            stateless=True,
            json_response=True,
            security_settings=security,
            max_request_body_size=max_request_bytes,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = scope.get("path_params", {}).get("session_id", "")
        try:
            await self.gate.handle(principal_of(scope), _DOOR, session_id)
        except NotFoundError as exc:
            data = {"code": exc.code, "hint": exc.hint or "acquire a new PC"}
            await jsonrpc_refusal(404, INVALID_REQUEST, exc.message, data)(scope, receive, send)
            return
        checked = await check_routing_headers(scope, receive, send, self.max_request_bytes)
        if checked is None:
            return
        await self.manager.handle_request(scope, checked, send)

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=list(computer_tools()))

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        session_id = session_id_of(ctx.request)
        if session_id is None:  # only reachable if mounted without the {session_id} path
            return error_result(InvalidInputError("no session id in the URL"))
        with traced(trace_of(ctx)):
            return await run_computer_tool(
                self.gate, session_id, params.name, params.arguments, principal_of(ctx.request)
            )

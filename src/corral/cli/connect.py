"""`corral connect`: a stdio MCP server that proxies to the gateway and holds the credential.

Many MCP clients can only run a command or send a static header; none of them can make DPoP
proofs. This bridge runs next to the agent, trades the agent's credential for short-lived
DPoP-bound tokens and signs every request to the gateway `/mcp`, so the MCP client holds no
secret at all. It republishes the gateway's tools as its own and forwards each call unchanged.
stdout is the MCP protocol: every log line goes to stderr.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.cli._common import handle_errors
from corral.errors import CorralError

if TYPE_CHECKING:  # the MCP SDK loads when the bridge runs, not for `corral --help`
    import mcp_types as types
    from mcp import ClientSession
    from mcp.server.context import ServerRequestContext

    from corral.client.http import AgentCredential

__all__ = ["connect", "serve"]

DEFAULT_URL = "http://127.0.0.1:8420"
log = logging.getLogger("corral.connect")


def _tool_error(message: str) -> types.CallToolResult:
    import mcp_types as types

    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


class _Proxy:
    """The stdio side's handlers, each one request to the gateway's MCP session."""

    def __init__(self, upstream: ClientSession) -> None:
        self.upstream = upstream

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        import mcp_types as types

        listed = await self.upstream.list_tools(params=params)
        return types.ListToolsResult(tools=listed.tools, next_cursor=listed.next_cursor)

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        import mcp_types as types
        from mcp.shared.exceptions import MCPError

        request = types.CallToolRequest(
            params=types.CallToolRequestParams(name=params.name, arguments=params.arguments)
        )
        try:
            # The raw request, not `call_tool`: results pass through as the gateway made them
            # (the MCP client on the other side validates them against the schemas itself).
            return await self.upstream.send_request(request, types.CallToolResult)
        except MCPError as exc:
            log.warning("%s: the gateway answered an error: %s", params.name, exc.message)
            return _tool_error(exc.message)
        except CorralError as exc:  # the token could not be had (disabled agent, server down)
            log.warning("%s: %s", params.name, exc.message)
            hint = f"\nhint: {exc.hint}" if exc.hint else ""
            return _tool_error(f"error ({exc.code}): {exc.message}{hint}")
        except Exception as exc:
            log.exception("%s: forwarding failed", params.name)
            return _tool_error(f"corral connect could not forward {params.name}: {exc}")


async def serve(credential: AgentCredential, url: str) -> None:
    """Connect to the gateway as the agent, then serve MCP on stdin/stdout until EOF.

    Steps: 1. get a first token now, so a bad credential or an unreachable server fails at
    start with a clear message; 2. open the gateway MCP session (one PC binding lives in it);
    3. serve the stdio client. Closing stdin ends the gateway session, which releases its PC.
    """
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.lowlevel.server import Server
    from mcp.server.stdio import stdio_server

    from corral import __version__
    from corral.client.http import DPoPAuth, TokenSource, mcp_http_client

    tokens = TokenSource(credential)
    await tokens.aget()  # 1.
    gateway = url.rstrip("/") + "/mcp"
    async with (
        mcp_http_client(DPoPAuth(tokens)) as http,
        streamable_http_client(gateway, http_client=http) as (read, write),
        ClientSession(read, write) as upstream,
    ):
        init = await upstream.initialize()  # 2.
        log.info("connected to %s as %s", gateway, credential.client_id)
        proxy = _Proxy(upstream)
        server: Server[Any] = Server(
            "corral",
            version=__version__,
            instructions=init.instructions,
            on_list_tools=proxy.list_tools,
            on_call_tool=proxy.call_tool,
        )
        async with stdio_server() as (stdin, stdout):  # 3.
            await server.run(stdin, stdout, server.create_initialization_options())
    log.info("stdin closed; gateway session ended")


@handle_errors
def connect(
    credential: Annotated[
        Path,
        typer.Option(
            "--credential", "-c", help="The agent's credential file (corral agent create)."
        ),
    ],
    url: Annotated[
        str, typer.Option("--url", envvar="CORRAL_URL", help="The Corral server.")
    ] = DEFAULT_URL,
) -> None:
    """Serve the gateway's tools over stdio MCP, signing for the agent (DPoP)."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="corral connect: %(levelname)s %(message)s"
    )
    for noisy in ("httpx", "httpx2", "mcp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import anyio

    from corral.client.http import AgentCredential

    anyio.run(serve, AgentCredential.load(credential), url)

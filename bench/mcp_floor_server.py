"""A bare MCP server from the official SDK with one no-op tool, served like Corral's gateway
(streamable HTTP, JSON answers, sessions): the MCP transport's own cost on this machine, the
floor `bench control` sets Corral's gateway beside. `python -m bench.mcp_floor_server PORT`."""

from __future__ import annotations

import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("floor")


@server.tool()
def noop() -> str:
    """Do nothing."""
    return "ok"


if __name__ == "__main__":
    app = server.streamable_http_app(json_response=True)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")

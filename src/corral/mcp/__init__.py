"""Corral over MCP (official SDK, streamable HTTP), in both protocol eras: the gateway at `/mcp`
runs the whole lifecycle (stateless, by session handle, or within one MCP session);
`/sessions/{id}/mcp` is one lent PC's computer URL."""

from corral.mcp.asgi import mount_mcp

__all__ = ["mount_mcp"]

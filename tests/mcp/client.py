"""The official MCP client, as an agent would use it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp import Client, ClientSession
from mcp.client.client import ConnectMode
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from corral.client.http import DPoPAuth, mcp_http_client


@asynccontextmanager
async def connect(url: str, auth: DPoPAuth | None = None) -> AsyncIterator[ClientSession]:
    """An MCP session at `url`; with `auth`, every request is signed (token + DPoP proof)."""
    async with (
        mcp_http_client(auth) if auth is not None else contextlib.nullcontext() as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


#: The two protocol eras, as the official client's `mode` forces them.
STATELESS = "2026-07-28"
HANDSHAKE = "legacy"


@asynccontextmanager
async def client(
    url: str, auth: DPoPAuth | None = None, *, mode: ConnectMode
) -> AsyncIterator[Client]:
    """The official high-level client at `url` in one protocol era (`mode`): STATELESS adopts
    2026-07-28 without a handshake, HANDSHAKE runs `initialize` (an MCP session)."""
    async with (
        mcp_http_client(auth) if auth is not None else contextlib.nullcontext() as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as c,
    ):
        yield c


async def call(
    session: ClientSession | Client, tool: str, args: dict[str, Any] | None = None
) -> CallToolResult:
    result = await session.call_tool(tool, args or {})
    assert isinstance(result, CallToolResult)
    return result


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))

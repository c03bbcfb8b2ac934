"""`corral connect` against the real server: the official MCP stdio client drives the bridge,
which signs for an agent made with the CLI and proxies to the gateway `/mcp`."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, ImageContent, TextContent, Tool

from corral.client.http import DPoPAuth, mcp_http_client

from .conftest import Server


def _agent(server: Server, tmp: Path, name: str) -> Path:
    made = server.corral("user", "create", f"{name}-sponsor", "--role", "sponsor")
    assert made.returncode == 0, made.stderr
    path = tmp / "agent.json"
    made = server.corral("agent", "create", name, "--sponsor", f"{name}-sponsor", "-o", str(path))
    assert made.returncode == 0, made.stderr
    return path


def _bridge(server: Server, credential: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "corral", "connect", "--credential", str(credential), "--url", server.url],
        env=dict(server.env),
    )


def _text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def _shape(tools: list[Tool]) -> dict[str, Any]:
    return {t.name: (t.description, t.input_schema) for t in tools}


async def _gateway_tools(server: Server, credential: Path) -> list[Tool]:
    """The gateway's own listing, straight over HTTP with the same agent's credential."""
    async with (
        mcp_http_client(DPoPAuth.from_credential(credential)) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as direct,
    ):
        await direct.initialize()
        return (await direct.list_tools()).tools


def test_connect_proxies_the_gateway(server: Server, tmp_path: Path) -> None:
    credential = _agent(server, tmp_path, "connectbot")
    server.create_pool("bridge", warm=1, max=2)
    assigned = server.http.post("/v1/pools/bridge/assignments", json={"agent": "connectbot"})
    assert assigned.status_code == 200, assigned.text
    server.wait_ready("bridge", 1)
    log = tmp_path / "connect.log"

    async def session() -> None:
        expected = await _gateway_tools(server, credential)
        with open(log, "w") as errlog, anyio.fail_after(180):
            async with (
                stdio_client(_bridge(server, credential), errlog=errlog) as (read, write),
                ClientSession(read, write) as mcp,
            ):
                await mcp.initialize()
                tools = (await mcp.list_tools()).tools
                assert {"list_pools", "acquire_pc", "release_pc", "screenshot"} <= {
                    t.name for t in tools
                }
                assert _shape(tools) == _shape(expected)  # names, descriptions, schemas as is

                async def call(tool: str, **args: Any) -> CallToolResult:
                    result = await mcp.call_tool(tool, args)
                    assert isinstance(result, CallToolResult)
                    return result

                acquired = await call("acquire_pc", pool="bridge")
                assert not acquired.is_error, _text(acquired)
                assert acquired.structured_content is not None
                assert acquired.structured_content["pool"] == "bridge"

                ran = await call("run_command", command="echo hello from connect")
                assert not ran.is_error, _text(ran)
                assert ran.structured_content is not None
                assert ran.structured_content["stdout"] == "hello from connect\n"

                shot = await call("screenshot", max_width=640)
                assert not shot.is_error, _text(shot)
                (image,) = [c for c in shot.content if isinstance(c, ImageContent)]
                assert image.mime_type == "image/png"
                assert base64.b64decode(image.data).startswith(b"\x89PNG\r\n\x1a\n")

                # A refusal by the server reaches the MCP client as a tool error, message intact.
                bad = await call("click", x=-5, y=3)
                assert bad.is_error and "invalid_input" in _text(bad)
                unknown = await call("no_such_tool")
                assert unknown.is_error and _text(unknown)

                released = await call("release_pc")
                assert not released.is_error, _text(released)
                assert released.structured_content is not None
                assert released.structured_content["released"] is True

    try:
        anyio.run(session)
    finally:
        print(log.read_text() if log.exists() else "(no connect log)", file=sys.stderr)
    assert not [s for s in server.http.get("/v1/sessions").json() if s["pool"] == "bridge"]


def test_connect_refuses_a_disabled_agent_at_start(server: Server, tmp_path: Path) -> None:
    credential = _agent(server, tmp_path, "offbot")
    assert server.corral("agent", "disable", "offbot").returncode == 0
    ran = subprocess.run(
        [sys.executable, "-m", "corral", "connect", "-c", str(credential), "--url", server.url],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert ran.returncode == 4, ran.stderr
    assert "disabled" in ran.stderr and ran.stdout == ""  # stdout is the protocol: untouched

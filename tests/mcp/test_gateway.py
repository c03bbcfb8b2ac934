"""The gateway MCP server at /mcp over real HTTP with the official client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ImageContent

from corral.service.tools import TOOLS
from tests.mcp.client import call, connect, text
from tests.mcp.conftest import Served, serve

pytestmark = pytest.mark.anyio


async def test_lists_lifecycle_and_computer_tools(served: Served) -> None:
    async with connect(served.gateway_url) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
    assert set(tools) == {"list_pools", "acquire_pc", "release_pc", *TOOLS}
    assert len(tools) == 22
    assert tools["acquire_pc"].input_schema["properties"]["pool"]["default"] == "default"
    assert tools["click"].input_schema == TOOLS["click"].args.model_json_schema()


async def test_whole_lifecycle_in_one_mcp_session(served: Served) -> None:
    control = served.control
    async with connect(served.gateway_url) as s:
        pools = await call(s, "list_pools")
        assert "default: image desktop" in text(pools)
        assert pools.structured_content is not None
        assert [p["name"] for p in pools.structured_content["pools"]] == ["default", "busy"]

        early = await call(s, "screenshot")
        assert early.is_error and "call acquire_pc first" in text(early)

        acquired = await call(s, "acquire_pc", {"pool": "default"})
        assert not acquired.is_error, text(acquired)
        info = acquired.structured_content
        assert info is not None
        sid = info["session_id"]
        assert info["mcp_url"] == f"{served.url}/sessions/{sid}/mcp"
        assert control.get_session(sid).pc_id == info["pc_id"]

        shot = await call(s, "screenshot", {"max_width": 1024})
        assert any(isinstance(c, ImageContent) for c in shot.content)
        await call(s, "launch_app", {"command": ["xterm"]})
        assert control.calls == [
            (sid, "screenshot", {"max_width": 1024}),
            (sid, "launch_app", {"command": ["xterm"]}),
        ]

        released = await call(s, "release_pc")
        assert not released.is_error and sid in text(released)
        assert control.released == [sid]

        after = await call(s, "click", {"x": 1, "y": 1})
        assert after.is_error and "acquire_pc first" in text(after)
        again = await call(s, "release_pc")
        assert not again.is_error and "nothing to release" in text(again)
    assert control.released == [sid]  # closing the MCP session released nothing more


async def test_acquire_errors_are_tool_errors(served: Served) -> None:
    async with connect(served.gateway_url) as s:
        unknown = await call(s, "acquire_pc", {"pool": "nope"})
        assert unknown.is_error and "no pool 'nope'" in text(unknown)
        assert "hint: see list_pools" in text(unknown)
        busy = await call(s, "acquire_pc", {"pool": "busy"})
        assert busy.is_error and "retry after 7 s" in text(busy)
        problem = {
            "type": "urn:corral:error:unavailable",
            "title": "Unavailable",
            "status": 503,
            "detail": "no PC of pool 'busy' became free",
            "code": "unavailable",
            "retry_after_s": 7,
        }
        legacy = {
            "code": "unavailable",
            "message": "no PC of pool 'busy' became free",
            "retry_after_s": 7,
        }
        assert busy.structured_content == {**problem, "error": legacy}
        bad = await call(s, "acquire_pc", {"pool": "default", "wait_s": -1})
        assert bad.is_error and "wait_s: Input should be greater than or equal to 0" in text(bad)
        extra = await call(s, "list_pools", {"all": True})
        assert extra.is_error and "all: Extra inputs are not permitted" in text(extra)
        assert not (await call(s, "acquire_pc")).is_error  # the session is not stuck


async def test_one_pc_per_mcp_session(served: Served) -> None:
    async with connect(served.gateway_url) as s:
        first = await call(s, "acquire_pc", {"idempotency_key": "k1"})
        again = await call(s, "acquire_pc")
        assert first.structured_content is not None and again.structured_content is not None
        assert again.structured_content["session_id"] == first.structured_content["session_id"]
        assert "already holding" in text(again)
        other_pool = await call(s, "acquire_pc", {"pool": "busy"})
        assert other_pool.is_error and "release_pc first" in text(other_pool)
    assert len(served.control.sessions) == 1


async def test_two_mcp_sessions_hold_two_pcs(served: Served) -> None:
    async with connect(served.gateway_url) as a, connect(served.gateway_url) as b:
        sa = (await call(a, "acquire_pc")).structured_content
        sb = (await call(b, "acquire_pc")).structured_content
        assert sa is not None and sb is not None
        assert sa["session_id"] != sb["session_id"]
        await call(a, "type_text", {"text": "a"})
        await call(b, "type_text", {"text": "b"})
    assert served.control.calls == [
        (sa["session_id"], "type_text", {"text": "a"}),
        (sb["session_id"], "type_text", {"text": "b"}),
    ]


async def test_closing_the_mcp_session_releases_the_pc(served: Served) -> None:
    async with connect(served.gateway_url) as s:
        acquired = (await call(s, "acquire_pc")).structured_content
        assert acquired is not None
    # the client's DELETE ends the MCP session; its teardown releases the PC
    with anyio.fail_after(5):
        await served.control.release_event.wait()
    assert served.control.released == [acquired["session_id"]]
    assert served.control.reasons == ["mcp_connection_closed"]


@asynccontextmanager
async def vanishing_client(url: str) -> AsyncIterator[ClientSession]:
    """A client that goes away without ending its MCP session (no DELETE)."""
    async with (
        streamable_http_client(url, terminate_on_close=False) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_a_vanished_client_releases_its_pc_after_the_idle_timeout() -> None:
    async with serve(idle_timeout_s=0.5) as served:
        async with vanishing_client(served.gateway_url) as s:
            acquired = (await call(s, "acquire_pc")).structured_content
            assert acquired is not None
        assert served.control.released == []
        with anyio.fail_after(5):
            await served.control.release_event.wait()
        assert served.control.released == [acquired["session_id"]]


async def test_server_shutdown_releases_held_pcs(served: Served) -> None:
    async with vanishing_client(served.gateway_url) as s:
        acquired = (await call(s, "acquire_pc")).structured_content
        assert acquired is not None
    assert served.control.released == []
    await served.stop()
    assert served.control.released == [acquired["session_id"]]


async def test_evicted_session_gives_a_tool_error_and_can_rebind(served: Served) -> None:
    async with connect(served.gateway_url) as s:
        first = (await call(s, "acquire_pc")).structured_content
        assert first is not None
        await served.control.release(first["session_id"])  # idle eviction, REST release...
        gone = await call(s, "screenshot")
        assert gone.is_error and "was released" in text(gone)
        assert "hint: acquire a new PC" in text(gone)
        second = (await call(s, "acquire_pc")).structured_content
        assert second is not None and second["session_id"] != first["session_id"]
        assert not (await call(s, "screenshot")).is_error


async def test_default_client_mode_falls_back_to_the_handshake(served: Served) -> None:
    async with Client(served.gateway_url) as client:  # mode="auto" probes 2026-07-28 first
        assert client.protocol_version != "2026-07-28"
        acquired = await client.call_tool("acquire_pc", {})
        assert not acquired.is_error
        result = await client.call_tool("read_file", {"path": "demo.txt"})
        assert text(result) == "hello from corral\n"


async def test_stateless_era_requests_are_refused_with_the_versions_to_use(
    served: Served,
) -> None:
    async with httpx2.AsyncClient() as http:
        r = await http.post(
            served.gateway_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "server/discover"},
            headers={
                "accept": "application/json, text/event-stream",
                "mcp-protocol-version": "2026-07-28",
            },
        )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == -32022
    assert "2025-11-25" in error["data"]["supported"]

"""The gateway MCP server at /mcp over real HTTP with the official client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import anyio
import httpx2
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.connection import Connection
from mcp_types import ImageContent, RequestParamsMeta

from corral.domain.trace import TraceContext
from corral.gate import GateCall
from corral.lifecycle.tools import TOOLS
from tests.mcp.client import HANDSHAKE, STATELESS, call, client, connect, text
from tests.mcp.conftest import Served, serve

pytestmark = pytest.mark.anyio


async def test_lists_lifecycle_and_computer_tools(served: Served) -> None:
    async with connect(served.gateway_url) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
    assert set(tools) == {"list_pools", "acquire_pc", "release_pc", *TOOLS}
    assert len(tools) == 22
    assert tools["acquire_pc"].input_schema["properties"]["pool"]["default"] == "default"
    # the catalogue's schema, plus the session handle (mirrored into Mcp-Param-Session)
    click = TOOLS["click"].args.model_json_schema()
    handle = tools["click"].input_schema["properties"].pop("session")
    assert tools["click"].input_schema == click
    assert handle["type"] == "string" and handle["x-mcp-header"] == "Session"
    assert tools["release_pc"].input_schema["properties"]["session"] == handle


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


async def test_default_client_mode_speaks_the_stateless_era(served: Served) -> None:
    # Contract change (issue 10): the gateway used to refuse 2026-07-28, so mode="auto" fell
    # back to the handshake; it now serves it, and the client stays stateless.
    async with Client(served.gateway_url) as c:  # mode="auto" probes server/discover first
        assert c.protocol_version == STATELESS
        acquired = await c.call_tool("acquire_pc", {})
        assert acquired.structured_content is not None, text(acquired)
        handle = acquired.structured_content["session"]
        result = await c.call_tool("read_file", {"path": "demo.txt", "session": handle})
        assert text(result) == "hello from corral\n"


async def test_stateless_lifecycle_by_handle(served: Served) -> None:
    control = served.control
    async with client(served.gateway_url, mode=STATELESS) as c:
        assert c.protocol_version == STATELESS
        # every tool's x-mcp-header annotation is valid: a 2026-07-28 client drops none
        assert len((await c.list_tools()).tools) == 22
        acquired = await call(c, "acquire_pc", {"pool": "default"})
        info = acquired.structured_content
        assert info is not None, text(acquired)
        sid, handle = info["session_id"], info["session"]
        assert handle.startswith(f"{sid}.")
        assert "pass `session`" in text(acquired)

        # no MCP session to bind to: a computer tool without the handle says what to pass
        bare = await call(c, "screenshot")
        assert bare.is_error and "pass `session`" in text(bare)
        problem = bare.structured_content or {}
        assert problem["code"] == "invalid_input" and problem["status"] == 400
        assert problem["detail"] == "no PC named: pass `session`, the handle acquire_pc answered"
        assert problem["hint"] == (
            "without an MCP session (stateless MCP, 2026-07-28) every computer "
            "tool takes the handle as its `session` argument; call acquire_pc first if "
            "you have none"
        )
        shot = await call(c, "screenshot", {"max_width": 1024, "session": handle})
        assert any(isinstance(x, ImageContent) for x in shot.content), text(shot)
        # the handle is the gateway's: the control plane sees the catalogue's arguments only
        assert control.calls == [(sid, "screenshot", {"max_width": 1024})]

        forged = await call(c, "click", {"x": 1, "y": 1, "session": f"{sid}.{'A' * 22}"})
        assert forged.is_error and forged.structured_content is not None
        assert forged.structured_content["code"] == "invalid_session_handle"
        malformed = await call(c, "click", {"x": 1, "y": 1, "session": sid})
        assert malformed.is_error and "malformed" in text(malformed)

        unnamed = await call(c, "release_pc")
        assert unnamed.is_error and "pass `session`" in text(unnamed)
        released = await call(c, "release_pc", {"session": handle})
        assert not released.is_error and control.released == [sid]
        gone = await call(c, "screenshot", {"session": handle})
        assert gone.is_error and "was released" in text(gone)
    assert control.released == [sid]


async def test_stateless_client_reconnects_and_keeps_its_pc_by_handle(served: Served) -> None:
    async with client(served.gateway_url, mode=STATELESS) as c:
        info = (await call(c, "acquire_pc")).structured_content
        assert info is not None
    # the client is gone, and its PC with nothing: no connection held it
    assert served.control.released == []
    async with client(served.gateway_url, mode=STATELESS) as again:
        # a fresh client calls at once, without listing the tools first
        typed = await call(again, "type_text", {"text": "back", "session": info["session"]})
        assert not typed.is_error, text(typed)
    assert served.control.calls == [(info["session_id"], "type_text", {"text": "back"})]
    assert served.control.released == []


async def test_handshake_client_back_on_a_new_mcp_session_takes_its_pc_over(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    torn_down = anyio.Event()  # the first MCP session's teardown ran
    teardown = served.gateway._release_on_close

    async def spy(conn: Connection) -> None:
        await teardown(conn)
        torn_down.set()

    monkeypatch.setattr(served.gateway, "_release_on_close", spy)
    async with vanishing_client(served.gateway_url) as old:  # its MCP session lingers
        info = (await call(old, "acquire_pc")).structured_content
        assert info is not None
    (lost,) = served.open_mcp_sessions()
    async with client(served.gateway_url, mode=HANDSHAKE) as new:
        assert new.protocol_version != STATELESS
        took = await call(new, "type_text", {"text": "x", "session": info["session"]})
        assert not took.is_error, text(took)
        # bound now to the new MCP session: the handle may be left out
        assert not (await call(new, "type_text", {"text": "y"})).is_error
        # the lost MCP session ends (here its DELETE; an idle timeout alike) and is torn
        # down: it no longer held the PC, so it released nothing
        async with httpx2.AsyncClient() as http:
            headers = {"mcp-session-id": lost, "mcp-protocol-version": "2025-11-25"}
            assert (await http.delete(served.gateway_url, headers=headers)).status_code == 200
        with anyio.fail_after(10):
            await torn_down.wait()
        assert served.control.released == []
    # the new MCP session's end releases it, as the handshake era does
    with anyio.fail_after(5):
        await served.control.release_event.wait()
    assert served.control.released == [info["session_id"]]


async def test_server_discover_and_per_request_meta(served: Served) -> None:
    async with httpx2.AsyncClient() as http:
        r = await http.post(
            served.gateway_url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "server/discover",
                "params": {"_meta": META},
            },
            headers={**HEADERS, "mcp-method": "server/discover"},
        )
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result["supportedVersions"] == [STATELESS]
        assert "tools" in result["capabilities"]
        assert "session" in result["instructions"]
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "corral"
        # a request without the per-request _meta is malformed: -32602, HTTP 400
        r = await http.post(
            served.gateway_url,
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={**HEADERS, "mcp-method": "tools/list"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == -32602
        # an era the server does not speak: the versions it does
        r = await http.post(
            served.gateway_url,
            json={
                "jsonrpc": "2.0",
                "id": 3,
                "method": "server/discover",
                "params": {"_meta": {**META, PV: "2099-01-01"}},
            },
            headers={**HEADERS, "mcp-protocol-version": "2099-01-01", "mcp-method": "x"},
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] in (-32020, -32022)


async def test_routing_headers_must_match_the_body(served: Served) -> None:
    call_body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "list_pools", "arguments": {}, "_meta": META},
    }
    async with httpx2.AsyncClient() as http:
        # 2026-07-28: Mcp-Method and Mcp-Name are required and must say what the body says
        for extra in (
            {"mcp-method": "tools/list", "mcp-name": "list_pools"},
            {"mcp-method": "tools/call", "mcp-name": "acquire_pc"},
            {"mcp-method": "tools/call"},
        ):
            r = await http.post(served.gateway_url, json=call_body, headers={**HEADERS, **extra})
            assert r.status_code == 400, (extra, r.text)
            assert r.json()["error"]["code"] == -32020, r.text
        ok = {"mcp-method": "tools/call", "mcp-name": "list_pools"}
        r = await http.post(served.gateway_url, json=call_body, headers={**HEADERS, **ok})
        assert r.status_code == 200 and "default" in r.text
        # the handshake era sends none, but one that does is held to them too
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        legacy = {"accept": "application/json, text/event-stream"}
        r = await http.post(
            served.gateway_url, json=init, headers={**legacy, "mcp-method": "tools/list"}
        )
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == -32020
        assert (
            "Mcp-Method is 'tools/list' but the body's method is 'initialize'" in (error["message"])
        )
        r = await http.post(
            served.gateway_url, json=init, headers={**legacy, "mcp-method": "initialize"}
        )
        assert r.status_code == 200, r.text


PV = "io.modelcontextprotocol/protocolVersion"
META = {PV: STATELESS, "io.modelcontextprotocol/clientCapabilities": {}}
HEADERS = {
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": STATELESS,
}


class _Traces:
    """A record stage that keeps each call's incoming trace (and forwards nothing)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    async def admit(self, call: GateCall) -> None:
        return None

    async def record(self, call: GateCall) -> None:
        self.seen.append((call.operation.name, call.trace))


@pytest.mark.parametrize("mode", [STATELESS, HANDSHAKE])
async def test_the_callers_trace_reaches_the_record_stage(served: Served, mode: str) -> None:
    """W3C trace context in `params._meta` (what MCP clients set per call), in both eras;
    a call without one has none (the record stage then continues its session's trace)."""
    traces = _Traces()
    served.gateway.gate.recorder = traces
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    # RequestParamsMeta takes any key (extra_items); mypy does not know PEP 728 yet
    meta = cast(
        RequestParamsMeta,
        {"traceparent": f"00-{trace_id}-{parent}-01", "tracestate": "corral=t1"},
    )
    async with client(served.gateway_url, mode=mode) as c:
        acquired = await c.call_tool("acquire_pc", {}, meta=meta)
        assert acquired.structured_content is not None, text(acquired)
        handle = acquired.structured_content["session"]
        await c.call_tool("screenshot", {"session": handle}, meta=meta)
        await c.call_tool("screenshot", {"session": handle})
        bad = cast(RequestParamsMeta, {"traceparent": f"00-{'0' * 32}-{parent}-01"})  # invalid
        await c.call_tool("screenshot", {"session": handle}, meta=bad)
    ops = [(name, t) for name, t in traces.seen if name in ("acquire", "screenshot")]
    assert [name for name, _ in ops] == ["acquire", "screenshot", "screenshot", "screenshot"]
    for _, t in ops[:2]:
        assert isinstance(t, TraceContext)
        assert (t.trace_id, t.parent_id, t.tracestate) == (trace_id, parent, "corral=t1")
    assert ops[2][1] is None and ops[3][1] is None

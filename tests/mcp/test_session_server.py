"""The per-session MCP server over real HTTP with the official client."""

from __future__ import annotations

import base64

import anyio
import httpx2
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import ImageContent, TextContent

from corral.lifecycle.tools import TOOLS
from tests.mcp.client import call, connect, text
from tests.mcp.conftest import Served

pytestmark = pytest.mark.anyio

NAMES = [
    "screenshot", "mouse_move", "click", "double_click", "drag", "scroll", "type_text",
    "press_keys", "run_command", "read_file", "write_file", "list_directory", "get_clipboard",
    "set_clipboard", "list_windows", "focus_window", "launch_app", "open_url", "wait",
]  # fmt: skip


async def _session(served: Served) -> str:
    return (await served.control.acquire("default")).id


async def test_lists_the_19_tools_with_descriptions_and_schemas(served: Served) -> None:
    async with connect(served.session_url(await _session(served))) as s:
        tools = (await s.list_tools()).tools
    assert [t.name for t in tools] == NAMES
    for tool in tools:
        assert tool.description == TOOLS[tool.name].description
        assert tool.input_schema == TOOLS[tool.name].args.model_json_schema()
        assert tool.input_schema["type"] == "object"


async def test_screenshot_is_image_content(served: Served) -> None:
    sid = await _session(served)
    async with connect(served.session_url(sid)) as s:
        result = await call(s, "screenshot")
    assert not result.is_error
    images = [c for c in result.content if isinstance(c, ImageContent)]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data).startswith(b"\x89PNG\r\n\x1a\n")
    assert any(isinstance(c, TextContent) for c in result.content)
    assert result.structured_content == {"width": 4, "height": 3}
    assert served.control.calls == [(sid, "screenshot", {})]


@pytest.mark.parametrize(
    ("tool", "args", "expect"),
    [
        ("click", {"x": -5, "y": 10}, "x: Input should be greater than or equal to 0"),
        ("mouse_move", {"x": 5000, "y": 10}, "off the screen"),
        ("press_keys", {"keys": "ctrl+nosuchkey"}, "unknown key 'nosuchkey'"),
        ("type_text", {"text": "a", "speed": 3}, "speed: Extra inputs are not permitted"),
        ("wait", {"seconds": 600}, "seconds: Input should be less than or equal to 60"),
        ("teleport", {}, "unknown tool 'teleport'"),
    ],
)
async def test_bad_arguments_are_tool_errors_saying_what_to_change(
    served: Served, tool: str, args: dict[str, object], expect: str
) -> None:
    async with connect(served.session_url(await _session(served))) as s:
        result = await call(s, tool, args)
        assert result.is_error
        assert expect in text(result)
        assert text(result).startswith("error (")
        # the session is not stuck: the next call works
        assert not (await call(s, "get_clipboard")).is_error


async def test_hint_is_in_the_error_text(served: Served) -> None:
    async with connect(served.session_url(await _session(served))) as s:
        result = await call(s, "press_keys", {"keys": "nosuchkey"})
    assert "hint: use X key names" in text(result)
    legacy = {
        "code": "bad_key",
        "message": "unknown key 'nosuchkey'",
        "hint": "use X key names such as Return",
    }
    assert result.structured_content == {
        "type": "urn:corral:error:bad_key",  # the PC's own code, in an action_failed row
        "title": "Action failed",
        "status": 422,
        "detail": "unknown key 'nosuchkey'",
        "code": "bad_key",
        "hint": "use X key names such as Return",
        "error": legacy,
    }


async def test_a_crash_is_a_tool_error_not_a_500(served: Served) -> None:
    async with connect(served.session_url(await _session(served))) as s:
        served.control.crash = True
        result = await call(s, "list_windows")
        served.control.crash = False
        assert result.is_error and "failed inside Corral" in text(result)
        assert not (await call(s, "list_windows")).is_error


async def test_released_and_unknown_sessions_answer_404(served: Served) -> None:
    sid = await _session(served)
    await served.control.release(sid)
    for url in (served.session_url(sid), served.session_url("ses-nope")):
        async with httpx2.AsyncClient() as http:
            r = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"accept": "application/json, text/event-stream"},
            )
        assert r.status_code == 404
        assert r.json()["error"]["data"]["code"] == "session_gone"
    async with (
        streamable_http_client(served.session_url(sid)) as (read, write),
        ClientSession(read, write) as session,
    ):
        with pytest.raises(MCPError, match="was released"):
            await session.initialize()


async def test_a_released_session_stops_working_mid_connection(served: Served) -> None:
    sid = await _session(served)
    async with connect(served.session_url(sid)) as s:
        assert not (await call(s, "screenshot")).is_error
        await served.control.release(sid)
        with pytest.raises(MCPError, match="was released"):
            await call(s, "screenshot")
    assert [c[1] for c in served.control.calls] == ["screenshot"]


async def test_actions_arrive_in_order_and_never_overlap(served: Served) -> None:
    sid = await _session(served)
    async with connect(served.session_url(sid)) as s:
        for i in range(5):
            await call(s, "type_text", {"text": str(i)})
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(call, s, "wait", {"seconds": 0.05})
    typed = [c[2]["text"] for c in served.control.calls if c[1] == "type_text"]
    assert typed == ["0", "1", "2", "3", "4"]
    assert [c[1] for c in served.control.calls].count("wait") == 4
    assert served.control.max_parallel == 1


async def test_the_stateless_protocol_era_works_too(served: Served) -> None:
    sid = await _session(served)
    async with Client(served.session_url(sid)) as client:
        assert client.protocol_version == "2026-07-28"
        tools = await client.list_tools()
        assert len(tools.tools) == 19
        result = await client.call_tool("read_file", {"path": "demo.txt"})
    assert text(result) == "hello from corral\n"
    assert served.control.calls == [(sid, "read_file", {"path": "demo.txt"})]


async def test_dns_rebinding_protection_refuses_foreign_hosts(served: Served) -> None:
    sid = await _session(served)
    async with httpx2.AsyncClient() as http:
        r = await http.post(
            served.session_url(sid),
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"host": "evil.example:80", "accept": "application/json, text/event-stream"},
        )
    assert r.status_code == 421


async def test_big_writes_fit_and_oversized_bodies_are_refused(served: Served) -> None:
    sid = await _session(served)
    async with connect(served.session_url(sid)) as s:
        big = "x" * (12 * 1024 * 1024)
        result = await call(s, "write_file", {"path": "big.txt", "content": big})
        assert not result.is_error, text(result)
    async with httpx2.AsyncClient() as http:
        r = await http.post(
            served.session_url(sid),
            content=b"x" * (33 * 1024 * 1024),
            headers={
                "accept": "application/json, text/event-stream",
                "content-type": "application/json",
            },
        )
    assert r.status_code == 413

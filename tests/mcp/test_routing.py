"""The routing headers (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-Session`): on the scope before
the body is read, and checked against the body where the SDK does not check them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.types import Message, Receive

from corral.mcp._http import McpRouting, check_routing_headers, routing_of

pytestmark = pytest.mark.anyio

CALL = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {"name": "click", "arguments": {"x": 1, "y": 2, "session": "ses-1.tag"}},
}


class Exchange:
    """One ASGI request: its body in chunks, and what the app sent back."""

    def __init__(self, headers: dict[str, str], body: bytes, chunk: int = 5) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "method": "POST",
            "path": "/mcp",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
        self.chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
        self.read = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.read += 1
        if self.read <= len(self.chunks):
            more = self.read < len(self.chunks)
            return {"type": "http.request", "body": self.chunks[self.read - 1], "more_body": more}
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    def answer(self) -> dict[str, Any]:
        return dict(json.loads(b"".join(m.get("body", b"") for m in self.sent[1:])))


async def drain(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def test_stateless_requests_pass_unread_with_their_routing_on_the_scope() -> None:
    headers = {
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": "=?base64?Y2xpY2s=?=",  # "click", as a client may encode it
        "mcp-param-session": "ses-1.tag",
    }
    ex = Exchange(headers, json.dumps(CALL).encode())
    receive = await check_routing_headers(ex.scope, ex.receive, ex.send, 1 << 20)
    assert receive == ex.receive and ex.read == 0  # the SDK checks these against the body
    assert routing_of(ex.scope) == McpRouting("2026-07-28", "tools/call", "click", "ses-1.tag")


async def test_handshake_requests_with_agreeing_headers_get_their_body_replayed() -> None:
    body = json.dumps(CALL).encode()
    headers = {"mcp-method": "tools/call", "mcp-name": "click", "mcp-param-session": "ses-1.tag"}
    ex = Exchange(headers, body)
    receive = await check_routing_headers(ex.scope, ex.receive, ex.send, 1 << 20)
    assert receive is not None and receive != ex.receive
    assert await drain(receive) == body and ex.sent == []


async def test_handshake_requests_without_headers_pass_unread() -> None:
    ex = Exchange({"mcp-protocol-version": "2025-11-25"}, json.dumps(CALL).encode())
    assert await check_routing_headers(ex.scope, ex.receive, ex.send, 1 << 20) == ex.receive
    assert ex.read == 0 and routing_of(ex.scope) == McpRouting(version="2025-11-25")


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"mcp-method": "tools/list"}, "Mcp-Method is 'tools/list' but the body's method is"),
        ({"mcp-method": "tools/call", "mcp-name": "drag"}, "Mcp-Name is 'drag' but the body's"),
        ({"mcp-name": "=?base64?!!?="}, "Mcp-Name is '=?base64?!!?='"),  # a broken sentinel
        ({"mcp-param-session": "ses-2.tag"}, "Mcp-Param-Session does not match"),
    ],
)
async def test_handshake_requests_whose_headers_lie_are_refused(
    headers: dict[str, str], says: str
) -> None:
    ex = Exchange(headers, json.dumps(CALL).encode())
    assert await check_routing_headers(ex.scope, ex.receive, ex.send, 1 << 20) is None
    assert ex.status == 400
    error = ex.answer()["error"]
    assert error["code"] == -32020 and says in error["message"], error
    assert "leave the header out" in error["message"]


async def test_an_oversized_body_is_refused_while_read() -> None:
    ex = Exchange({"mcp-method": "tools/call"}, b"x" * 100)
    assert await check_routing_headers(ex.scope, ex.receive, ex.send, 50) is None
    assert ex.status == 413 and ex.read < len(ex.chunks)

"""HTTP-layer helpers shared by the MCP endpoints: refusals before MCP sees a request, and the
routing headers (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-Session`) read before the body is."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PARAM_HEADER_PREFIX,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    decode_header_value,
)
from mcp_types import HEADER_MISMATCH, ErrorData
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from corral.domain.access import Caller
from corral.domain.trace import TraceContext
from corral.gate.incoming import trace_from

__all__ = [
    "LOCAL_HOSTS",
    "ROUTING",
    "McpRouting",
    "check_routing_headers",
    "jsonrpc_refusal",
    "principal_of",
    "routing_of",
    "security_settings",
    "session_id_of",
]

LOCAL_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")


def jsonrpc_refusal(
    status: int, code: int, message: str, data: dict[str, Any] | None = None
) -> Response:
    """A JSON-RPC error body at an HTTP status: the official client surfaces the body's error
    (code and message) to the caller instead of a bare status."""
    error = ErrorData(code=code, message=message, data=data)
    # `id` must be present as null (refused before the request's id was read): the client reads
    # only a body that validates as a JSON-RPC error, and dumping the SDK model would drop it.
    body = {"jsonrpc": "2.0", "id": None, "error": error.model_dump(mode="json", exclude_none=True)}
    return JSONResponse(body, status_code=status)


def security_settings(allowed_hosts: Sequence[str] | None) -> TransportSecuritySettings:
    """DNS-rebinding protection: only the given Host values (default: this machine's names on
    any port) and matching browser origins may reach the MCP endpoints; "*" turns it off."""
    hosts = list(LOCAL_HOSTS if allowed_hosts is None else allowed_hosts)
    if "*" in hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=origins)


def principal_of(request: object) -> Caller | None:
    """The caller the authentication middleware put on the request's scope (None if none:
    the ControlPlane then refuses, so a missing middleware fails closed)."""
    scope = request.scope if isinstance(request, Request) else request
    state = scope.get("state") if isinstance(scope, dict) else None
    value = state.get("principal") if isinstance(state, dict) else None
    return value if isinstance(value, Caller) else None


def trace_of(ctx: Any) -> TraceContext | None:
    """The caller's trace for one MCP request: `params._meta` (what MCP clients set per call,
    2026-07-28) first, else the HTTP request's `traceparent` headers; None if neither."""
    meta = getattr(ctx, "meta", None)
    found = trace_from(meta) if isinstance(meta, dict) else None
    if found is None:
        request = getattr(ctx, "request", None)
        if isinstance(request, Request):
            found = trace_from(request.headers)
    return found


def session_id_of(request: object) -> str | None:
    """The Corral session id in the URL path of the HTTP request that carried an MCP message."""
    if isinstance(request, Request):
        value = request.path_params.get("session_id")
        return value if isinstance(value, str) else None
    return None


ROUTING: Final = "mcp_routing"  # scope["state"] key: the request's McpRouting
_SESSION_PARAM_HEADER = (MCP_PARAM_HEADER_PREFIX + "Session").lower().encode("latin-1")
_WANTED = {
    MCP_PROTOCOL_VERSION_HEADER.encode("latin-1"): "version",
    MCP_METHOD_HEADER.encode("latin-1"): "method",
    MCP_NAME_HEADER.encode("latin-1"): "name",
    _SESSION_PARAM_HEADER: "session",
}


@dataclass(frozen=True)
class McpRouting:
    """What an MCP request's headers say it is, readable before its body is parsed (by the
    Gate, a proxy, a rate limiter). Trustworthy once the request reaches a tool: a body that
    disagrees with them is refused before any handler runs (`check_routing_headers` for the
    handshake era, the SDK's header rung for 2026-07-28, where the headers are required)."""

    version: str | None = None
    method: str | None = None
    #: `Mcp-Name`, decoded: the tool called (`tools/call`), the prompt or the resource URI
    name: str | None = None
    #: `Mcp-Param-Session`, decoded: the gateway session handle a 2026-07-28 client mirrors
    session: str | None = None


def routing_of(scope: Scope) -> McpRouting | None:
    """The routing headers of an MCP request (None before `check_routing_headers` ran)."""
    state = scope.get("state")
    value = state.get(ROUTING) if isinstance(state, dict) else None
    return value if isinstance(value, McpRouting) else None


async def check_routing_headers(
    scope: Scope, receive: Receive, send: Send, max_bytes: int
) -> Receive | None:
    """Put the request's `McpRouting` on the scope, and refuse a handshake-era request whose
    `Mcp-Method` or `Mcp-Name` header disagrees with its body: 400 with a `HeaderMismatch`
    JSON-RPC error naming both values. Returns the `receive` to serve the request with (the
    body replayed when it had to be read here), or None when the answer was sent.

    A 2026-07-28 request passes unread: the SDK checks its headers against its body (and its
    `Mcp-Param-*` headers against the tool's schema) before dispatch, with the same error, so
    the hot path parses each body once. A handshake-era request without these headers (stock
    clients of that era send none) passes unread too.
    """
    found: dict[str, str] = {}
    for key, raw in scope.get("headers", ()):
        field = _WANTED.get(key)
        if field is not None and field not in found:
            found[field] = raw.decode("latin-1")
    routing = McpRouting(
        version=found.get("version"),
        method=found.get("method"),
        name=decode_header_value(found.get("name")),
        session=decode_header_value(found.get("session")),
    )
    scope.setdefault("state", {})[ROUTING] = routing
    if (
        scope.get("method") != "POST"
        or routing.version in MODERN_PROTOCOL_VERSIONS
        or not ({"method", "name", "session"} & found.keys())
    ):
        return receive
    # A handshake-era request that carries routing headers: read the body (bounded) once here.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return receive  # the client went away; nothing to answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            await Response(status_code=413)(scope, receive, send)
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    problem = _mismatch(body, routing, found)
    if problem is not None:
        await jsonrpc_refusal(400, HEADER_MISMATCH, problem)(scope, receive, send)
        return None
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _mismatch(body: bytes, routing: McpRouting, raw: dict[str, str]) -> str | None:
    """What disagrees between the routing headers and the body, as a message saying what to
    change; None when they agree (or the body is not one JSON-RPC request: the SDK answers)."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, dict):
        return None
    method = decoded.get("method")
    if routing.method is not None and routing.method != method:
        return (
            f"header mismatch: Mcp-Method is {routing.method!r} but the body's method is "
            f"{method!r}; send the body's method in Mcp-Method, or leave the header out"
        )
    key = NAME_BEARING_METHODS.get(method) if isinstance(method, str) else None
    params = decoded.get("params")
    value = params.get(key) if key is not None and isinstance(params, dict) else None
    if "name" in raw and (routing.name is None or routing.name != value):
        shown = routing.name if routing.name is not None else raw["name"]
        return (
            f"header mismatch: Mcp-Name is {shown!r} but the body's "
            f"{key or 'name'!r} is {value!r}; send the body's value in Mcp-Name (base64 "
            "sentinel for non-ASCII), or leave the header out"
        )
    if "session" in raw:
        arguments = params.get("arguments") if isinstance(params, dict) else None
        value = arguments.get("session") if isinstance(arguments, dict) else None
        if routing.session is None or routing.session != value:
            return (
                "header mismatch: Mcp-Param-Session does not match the `session` argument; "
                "send the argument's value in the header, or leave the header out"
            )
    return None

"""HTTP-layer helpers shared by the MCP endpoints: refusals before MCP sees a request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ErrorData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.domain.access import Caller

__all__ = ["LOCAL_HOSTS", "jsonrpc_refusal", "principal_of", "security_settings", "session_id_of"]

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


def session_id_of(request: object) -> str | None:
    """The Corral session id in the URL path of the HTTP request that carried an MCP message."""
    if isinstance(request, Request):
        value = request.path_params.get("session_id")
        return value if isinstance(value, str) else None
    return None

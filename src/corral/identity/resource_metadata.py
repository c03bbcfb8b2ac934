"""What a client needs to find out how to authenticate to a Corral resource, before it has a
token: RFC 9728 protected resource metadata and RFC 8414 authorization server metadata.

Corral's protected resources are the server itself (REST under `/v1`), the MCP gateway at
`/mcp` and each session's MCP server at `/sessions/{id}/mcp`. Each has a metadata document at
`/.well-known/oauth-protected-resource` followed by the resource's path (RFC 9728 section 3.1);
a 401 answer names it in the `resource_metadata` parameter of its `WWW-Authenticate` challenge
(section 5.1). Corral is its own authorization server (the issuer), whose metadata names the
token endpoint. Pure functions of the issuer: no I/O, so a session's document says nothing
about whether that session exists.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from corral.identity.errors import SUPPORTED_ALGS

__all__ = [
    "AUTHORIZATION_SERVER_PATH",
    "METADATA_PATH",
    "authorization_server_metadata",
    "metadata_url",
    "protected_resource_metadata",
    "resource_for_path",
]

METADATA_PATH = "/.well-known/oauth-protected-resource"
AUTHORIZATION_SERVER_PATH = "/.well-known/oauth-authorization-server"
GATEWAY_RESOURCE_PATH = "/mcp"
# A session's MCP server; its id as the session URLs accept it (no slash).
_SESSION_RESOURCE = re.compile(r"^/sessions/([^/]{1,200})/mcp$")
_SESSION_MCP = re.compile(r"^/sessions/([^/]+)/mcp/?$")


def resource_for_path(path: str) -> str:
    """The resource path (relative to the issuer) a request path belongs to: the gateway,
    a session's MCP server, or the server itself ("")."""
    if path.rstrip("/") == GATEWAY_RESOURCE_PATH:
        return GATEWAY_RESOURCE_PATH
    match = _SESSION_MCP.match(path)
    if match is not None:
        return f"/sessions/{match.group(1)}/mcp"
    return ""


def metadata_url(issuer: str, resource_path: str) -> str:
    """Where the metadata of `issuer + resource_path` is: the well-known path inserted
    between the issuer's host and the resource's path (RFC 9728 section 3.1)."""
    parts = urlsplit(issuer.rstrip("/"))
    return f"{parts.scheme}://{parts.netloc}{METADATA_PATH}{parts.path}{resource_path}"


def is_resource_path(resource_path: str) -> bool:
    """Does Corral serve a protected resource at this path (for the metadata route)?"""
    return resource_path in ("", GATEWAY_RESOURCE_PATH) or bool(
        _SESSION_RESOURCE.match(resource_path)
    )


def protected_resource_metadata(issuer: str, resource_path: str) -> dict[str, Any]:
    """RFC 9728 section 2 metadata of `issuer + resource_path`: DPoP-bound tokens only
    (RFC 9449 section 5.2's `dpop_bound_access_tokens_required`), presented in the
    Authorization header, from Corral's own authorization server."""
    issuer = issuer.rstrip("/")
    return {
        "resource": issuer + resource_path,
        "authorization_servers": [issuer],
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "dpop_bound_access_tokens_required": True,
        "resource_name": _name(resource_path),
    }


def _name(resource_path: str) -> str:
    if resource_path == GATEWAY_RESOURCE_PATH:
        return "Corral MCP gateway"
    if resource_path:
        return "Corral session MCP server"
    return "Corral API"


def authorization_server_metadata(issuer: str) -> dict[str, Any]:
    """RFC 8414 metadata of Corral's own authorization server: client credentials with a
    private_key_jwt assertion (RFC 7523) at the token endpoint, DPoP-bound tokens."""
    issuer = issuer.rstrip("/")
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/v1/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "dpop_signing_alg_values_supported": list(SUPPORTED_ALGS),
        # RFC 8414 requires the member; no authorization endpoint, so no response types.
        "response_types_supported": [],
    }

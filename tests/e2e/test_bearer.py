"""Bearer tokens against the real `corral up`: refused everywhere except where an admin opted a
pool in (acquiring from it, and its sessions' URLs); and the session token the MCP gateway's
`acquire_pc` answers with."""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import ImageContent

from corral.client.http import DPoPAuth, mcp_http_client
from corral.identity import CLIENT_ASSERTION_TYPE, DPoPKey, client_assertion
from corral.identity.directory import read_credential

from .conftest import Server

CLOSED, OPEN = "dpoponly", "bearerok"


def _claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims


def _token_without_proof(server: Server) -> httpx.Response:
    cred = read_credential(server.agent_file)
    token_url = str(cred["token_endpoint"])
    form = {
        "grant_type": "client_credentials",
        "client_id": cred["client_id"],
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(cred["client_id"], token_url, cred["key"]),
    }
    return server.anon.post("/v1/token", data=form)


def _bearer(server: Server, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
    return server.anon.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)


def test_bearer_tokens_work_only_where_a_pool_allows_them(server: Server) -> None:
    server.create_pool(CLOSED, warm=1, max=2)
    # While no pool accepts bearer tokens, the token endpoint insists on a DPoP proof.
    refused = _token_without_proof(server)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_dpop_proof"

    opened = server.create_pool(OPEN, warm=1, max=2, allow_bearer=True)
    assert opened["allow_bearer"] is True
    server.wait_ready(OPEN, 1)
    server.wait_ready(CLOSED, 1)
    issued = _token_without_proof(server)
    assert issued.status_code == 200, issued.text
    assert issued.json()["token_type"] == "Bearer"  # noqa: S105
    bearer = issued.json()["access_token"]
    assert "cnf" not in _claims(bearer)

    # Everything but the opted-in pool refuses it: the gateway's routes, the MCP gateway,
    # acquiring from another pool.
    for method, path in (("GET", "/v1/pools"), ("GET", "/v1/sessions"), ("POST", "/mcp")):
        r = _bearer(server, method, path, bearer)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("DPoP"), path
    assert _bearer(server, "POST", f"/v1/pools/{CLOSED}/sessions", bearer).status_code == 401

    # The opted-in pool: acquire, act and release with bearer tokens only.
    acquired = _bearer(server, "POST", f"/v1/pools/{OPEN}/sessions", bearer)
    assert acquired.status_code == 201, acquired.text
    session = acquired.json()
    sid, session_token = session["session_id"], session["session_token"]
    assert session["session_token_type"] == "Bearer"  # noqa: S105
    assert _claims(session_token)["aud"] == f"{server.url}/sessions/{sid}"
    shot = _bearer(server, "POST", f"/v1/sessions/{sid}/actions/screenshot", session_token, json={})
    assert shot.status_code == 200, shot.text
    assert _bearer(server, "GET", f"/v1/sessions/{sid}", bearer).status_code == 200

    # A DPoP-bound token presented as bearer stays refused, even on the open pool.
    bound = server.agent_auth.tokens.get()
    stolen = _bearer(server, "GET", f"/v1/sessions/{sid}", bound)
    assert (
        stolen.status_code == 401 and 'error="invalid_token"' in stolen.headers["WWW-Authenticate"]
    )

    # A session of the closed pool does not take bearer tokens, even its owner's.
    closed = server.acquire(CLOSED).json()
    assert _bearer(server, "GET", f"/v1/sessions/{closed['session_id']}", bearer).status_code == 401
    assert server.agent.delete(f"/v1/sessions/{closed['session_id']}").status_code == 200

    assert _bearer(server, "DELETE", f"/v1/sessions/{sid}", session_token).status_code == 200
    assert _bearer(server, "GET", f"/v1/sessions/{sid}", session_token).status_code == 401


def test_an_mcp_client_with_a_static_bearer_header_drives_a_bearer_pool_session(
    server: Server,
) -> None:
    server.wait_ready(OPEN, 1)
    bearer = _token_without_proof(server).json()["access_token"]
    acquired = _bearer(server, "POST", f"/v1/pools/{OPEN}/sessions", bearer)
    assert acquired.status_code == 201, acquired.text
    session = acquired.json()
    headers = {"Authorization": f"Bearer {session['session_token']}"}

    async def drive() -> None:
        with anyio.fail_after(120):
            async with (
                create_mcp_http_client(headers=headers) as http,
                streamable_http_client(session["mcp_url"], http_client=http) as (read, write),
                ClientSession(read, write) as mcp,
            ):
                await mcp.initialize()
                result = await mcp.call_tool("screenshot", {})
                assert not result.is_error, result
                assert any(isinstance(c, ImageContent) for c in result.content)

    anyio.run(drive)
    assert (
        _bearer(server, "DELETE", f"/v1/sessions/{session['session_id']}", bearer).status_code
        == 200
    )


def test_gateway_acquire_answers_with_a_session_token_bound_to_the_same_key(server: Server) -> None:
    server.wait_ready(CLOSED, 1)
    auth = DPoPAuth.from_credential(server.agent_file)
    key: DPoPKey = auth.tokens.key

    async def drive() -> None:
        with anyio.fail_after(120):
            async with (
                mcp_http_client(auth) as http,
                streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
                ClientSession(read, write) as mcp,
            ):
                await mcp.initialize()
                result = await mcp.call_tool("acquire_pc", {"pool": CLOSED})
                assert not result.is_error, result
                data = result.structured_content
                assert data is not None
                sid, token = data["session_id"], data["session_token"]
                assert data["session_token_type"] == "DPoP"  # noqa: S105
                claims = _claims(token)
                assert claims["sid"] == sid and claims["cnf"] == {"jkt": key.thumbprint}
                path = f"/v1/sessions/{sid}"
                proof = key.proof("GET", server.url + path, access_token=token)
                got = server.anon.get(
                    path, headers={"Authorization": f"DPoP {token}", "DPoP": proof}
                )
                assert got.status_code == 200, got.text
                # another key cannot use it
                other = DPoPKey.generate().proof("GET", server.url + path, access_token=token)
                stolen = server.anon.get(
                    path, headers={"Authorization": f"DPoP {token}", "DPoP": other}
                )
                assert stolen.status_code == 401
                released = await mcp.call_tool("release_pc", {})
                assert not released.is_error
                proof = key.proof("GET", server.url + path, access_token=token)
                dead = server.anon.get(
                    path, headers={"Authorization": f"DPoP {token}", "DPoP": proof}
                )
                assert dead.status_code == 401

    anyio.run(drive)

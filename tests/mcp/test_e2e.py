"""MCP against the real `corral up` server (real PCs), with the official client, on SQLite and
PostgreSQL: the demo flow, the per-session URL, the gateway's release on close, and the
gateway's stateless era: a PC kept by handle across clients, and handles refused to another
agent, to another DPoP key, and forged."""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import ImageContent
from typer.testing import CliRunner

from corral.client.http import DPoPAuth
from tests.e2e.conftest import Server
from tests.mcp.client import HANDSHAKE, STATELESS, call, client, connect, text

pytestmark = [pytest.mark.runtime, pytest.mark.anyio]

POOL = "mcp"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.fail("end-to-end tests need root (CI is root)")
    srv = Server(request.param, tmp_path_factory.mktemp(f"e2e-mcp-{request.param}"))
    srv.start()
    srv.create_pool(POOL, warm=1, max=2)
    yield srv
    srv.close()


def _released(server: Server, session_id: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.http.get(f"/v1/sessions/{session_id}").status_code == 404:
            return True
        time.sleep(0.05)
    return False


def test_demo(server: Server, tmp_path: Path) -> None:
    import typer

    from corral.cli.demo import demo

    server.wait_ready(POOL, 1)
    cli = typer.Typer()
    cli.command()(demo)
    out = tmp_path / "demo.png"
    args = ["--url", server.url, "--pool", POOL, "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--credential", str(server.agent_file)])
    assert result.exit_code == 0, result.output
    for step in ("acquire_pc", "launch_app", "type_text", "screenshot", "release_pc"):
        assert step in result.output
    assert "demo.txt: 'hello from corral'" in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert server.http.get("/v1/sessions").json() == []  # released


def test_demo_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    import typer

    from corral.cli.demo import demo

    cli = typer.Typer()
    cli.command()(demo)
    result = CliRunner().invoke(cli, ["--url", "http://127.0.0.1:9", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "start it with `corral up`" in result.output


async def test_per_session_url(server: Server) -> None:
    server.wait_ready(POOL, 1)
    s = server.acquire(POOL).json()
    async with connect(s["mcp_url"], server.agent_auth) as mcp:
        assert len((await mcp.list_tools()).tools) == 19
        shot = await call(mcp, "screenshot", {"max_width": 1024, "max_height": 768})
        image = next(c for c in shot.content if isinstance(c, ImageContent))
        assert base64.b64decode(image.data)[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.structured_content is not None and shot.structured_content["width"] == 1024
        ran = await call(mcp, "run_command", {"command": "echo hi"})
        assert ran.structured_content is not None and ran.structured_content["stdout"] == "hi\n"
        off = await call(mcp, "click", {"x": 1024, "y": 5})  # off the scaled screenshot
        assert off.is_error and "off the screen" in text(off)
        key = await call(mcp, "press_keys", {"keys": "ctrl+nosuchkey"})
        assert key.is_error and "nosuchkey" in text(key)
        assert server.http.delete(f"/v1/sessions/{s['session_id']}").status_code == 200
        with pytest.raises(MCPError, match="released"):
            await call(mcp, "screenshot")
    async with httpx2.AsyncClient(auth=server.agent_auth.for_mcp()) as http:
        r = await http.post(
            s["mcp_url"],
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream"},
        )
    assert r.status_code == 404


async def test_gateway_releases_the_pc_when_the_mcp_session_closes(server: Server) -> None:
    server.wait_ready(POOL, 1)
    async with connect(f"{server.url}/mcp", server.agent_auth) as mcp:
        acquired = await call(mcp, "acquire_pc", {"pool": POOL})
        assert acquired.structured_content is not None, text(acquired)
        sid = acquired.structured_content["session_id"]
        wrote = await call(mcp, "write_file", {"path": "x.txt", "content": "x"})
        assert not wrote.is_error, text(wrote)
    assert _released(server, sid)
    # Recorded as the agent's own release, with the reason (issue 9): not "system", which
    # would also read as a revocation of the agent's session by policy.
    (record,) = [
        s for s in server.http.get("/v1/sessions?active=false").json() if s["session_id"] == sid
    ]
    assert record["released_by"] == server.agent_id
    assert record["release_reason"] == "mcp_connection_closed"


async def test_gateway_stateless_era_keeps_the_pc_by_handle(server: Server) -> None:
    server.wait_ready(POOL, 1)
    async with client(f"{server.url}/mcp", server.agent_auth, mode=STATELESS) as mcp:
        assert mcp.protocol_version == STATELESS
        acquired = await call(mcp, "acquire_pc", {"pool": POOL})
        info = acquired.structured_content
        assert info is not None, text(acquired)
        handle = info["session"]
        wrote = await call(
            mcp, "write_file", {"path": "x.txt", "content": "kept", "session": handle}
        )
        assert not wrote.is_error, text(wrote)
    # no connection held the PC: it is still the agent's, in the store every process reads
    assert server.agent.get(f"/v1/sessions/{info['session_id']}").status_code == 200
    async with client(f"{server.url}/mcp", server.agent_auth, mode=STATELESS) as again:
        read = await call(again, "read_file", {"path": "x.txt", "session": handle})
        assert text(read) == "kept", text(read)
        released = await call(again, "release_pc", {"session": handle})
        assert not released.is_error, text(released)
    assert _released(server, info["session_id"])


async def test_gateway_handles_are_bound_to_the_agent_and_its_key(
    server: Server, tmp_path: Path
) -> None:
    server.wait_ready(POOL, 1)
    url = f"{server.url}/mcp"
    other_file = tmp_path / "other-agent.json"
    server.make_agent(f"other-{secrets.token_hex(3)}", other_file)
    other_agent = DPoPAuth.from_credential(other_file)
    same_agent_other_key = DPoPAuth.from_credential(server.agent_file)
    async with client(url, server.agent_auth, mode=STATELESS) as mine:
        info = (await call(mine, "acquire_pc", {"pool": POOL})).structured_content
        assert info is not None
        handle, sid = info["session"], info["session_id"]
        tag = handle.split(".")[1]
        forged = f"{sid}.{'A' if tag[0] != 'A' else 'B'}{tag[1:]}"
        attempts = [
            (other_agent, handle),  # replayed by another agent
            (same_agent_other_key, handle),  # by the same agent holding another DPoP key
            (server.agent_auth, forged),  # forged
        ]
        for auth, presented in attempts:
            for mode in (STATELESS, HANDSHAKE):
                async with client(url, auth, mode=mode) as thief:
                    for tool in ("screenshot", "release_pc"):
                        refused = await call(thief, tool, {"session": presented})
                        assert refused.is_error, (mode, tool, text(refused))
                        problem = refused.structured_content or {}
                        assert problem.get("code") == "invalid_session_handle", text(refused)
        # nothing of it touched the PC: still the agent's, and its handle works in both eras
        async with client(url, server.agent_auth, mode=HANDSHAKE) as legacy:
            ran = await call(legacy, "run_command", {"command": "echo hi", "session": handle})
            assert ran.structured_content is not None, text(ran)
            assert ran.structured_content["stdout"] == "hi\n"
        assert not (await call(mine, "release_pc", {"session": handle})).is_error
    assert _released(server, sid)

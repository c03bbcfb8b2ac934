"""Session controls and policy arguments hold against the ways around them (issue 9, section 5):
the real `corral up`, a real PC, the agent on the official MCP client over streamable HTTP.

- A session with no_clipboard or allowed_hosts refuses run_command (`xclip -o`) and
  `launch_app chromium URL`, which would step around the control.
- A program rule forbidding curl holds against `FOO=1 curl`, `/usr/bin/env curl`, `sh -c`,
  pipelines (shell mode is refused while a policy restricts programs) and argv spellings.
- A path rule on `/home/user/.ssh/*` holds for `.ssh/id_rsa` and `~/.ssh/id_rsa`.
- open_url refuses `file:` and `javascript:` URLs, and reads hosts as the browser does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from corral.client.http import DPoPAuth, mcp_http_client

from .conftest import Server

Call = Callable[..., Awaitable[CallToolResult]]
POOL = "guarded"

NO_CURL = (
    'forbid (principal, action in [Action::"run_command", Action::"launch_app"], resource)\n'
    'when { context has args && context.args has program && context.args.program == "curl" };'
)
NO_SSH_KEYS = (
    'forbid (principal, action in [Action::"read_file", Action::"write_file"], resource)\n'
    "when { context has args && context.args has path &&\n"
    '  context.args.path like "/home/user/.ssh/*" };'
)


@pytest.fixture(scope="module")
def pool(server: Server) -> Iterator[str]:
    server.create_pool(POOL, warm=1, max=1)
    yield POOL


def _text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def _error(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, _text(result)
    assert result.structured_content is not None
    error = result.structured_content
    assert isinstance(error, dict)
    return error


def _refused_by(result: CallToolResult, policy: str) -> dict[str, Any]:
    error = _error(result)
    assert error["code"] == "permission_denied", _text(result)
    assert policy in error["detail"], error
    return error


@asynccontextmanager
async def _session(server: Server, **acquire: Any) -> AsyncIterator[Call]:
    """The e2e agent on the gateway holding a fresh session of the pool; released after."""
    server.wait_ready(POOL, 1, timeout=120)
    async with (
        mcp_http_client(DPoPAuth.from_credential(server.agent_file)) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as mcp,
    ):
        await mcp.initialize()

        async def call(tool: str, **args: Any) -> CallToolResult:
            result = await mcp.call_tool(tool, args)
            assert isinstance(result, CallToolResult)
            return result

        acquired = await call("acquire_pc", pool=POOL, **acquire)
        assert not acquired.is_error, _text(acquired)
        try:
            yield call
        finally:
            released = await call("release_pc")
            assert not released.is_error, _text(released)


def test_controls_hold_against_commands_and_launches(server: Server, pool: str) -> None:
    async def flow() -> None:
        async with _session(server, controls={"no_clipboard": True}) as call:
            _refused_by(await call("get_clipboard"), "system-session-no-clipboard")
            for args in ({"argv": ["xclip", "-o"]}, {"command": "xclip -o -selection clipboard"}):
                error = _refused_by(
                    await call("run_command", **args), "system-session-controls-hold"
                )
                assert "allow_alongside" in error["hint"], error
            shot = await call("screenshot", max_width=320)
            assert not shot.is_error, _text(shot)
        async with _session(server, controls={"allowed_hosts": ["allowed.example"]}) as call:
            _refused_by(
                await call("launch_app", command=["chromium", "http://other.example/"]),
                "system-session-controls-hold",
            )
            _refused_by(
                await call("open_url", url="http://other.example\\@allowed.example/"),
                "system-session-allowed-hosts",
            )
            _refused_by(await call("run_command", argv=["true"]), "system-session-controls-hold")

    anyio.run(flow)


def test_a_program_rule_holds_against_shells_and_paths(server: Server, pool: str) -> None:
    async def flow() -> None:
        async with _session(server) as call:
            ran = await call("run_command", argv=["echo", "$HOME; id"])
            assert not ran.is_error, _text(ran)
            assert ran.structured_content is not None
            assert ran.structured_content["stdout"] == "$HOME; id\n"  # no shell in argv mode
            added = server.corral("policy", "add", "e2e-no-curl", "--text", NO_CURL)
            assert added.returncode == 0, added.stderr
            try:
                for line in (
                    "curl -s http://127.0.0.1/",
                    "FOO=1 curl -s http://127.0.0.1/",
                    "/usr/bin/env curl -s http://127.0.0.1/",
                    "sh -c 'curl -s http://127.0.0.1/'",
                    "true | curl -s http://127.0.0.1/",
                    "ls",
                ):
                    error = _refused_by(
                        await call("run_command", command=line), "system-program-rules-need-argv"
                    )
                    assert "argv" in error["hint"], error
                for argv in (["curl", "-s", "x"], ["/usr/bin/curl", "-s", "x"]):
                    _refused_by(await call("run_command", argv=argv), "e2e-no-curl")
                for argv in (["/usr/bin/env", "curl"], ["sh", "-c", "curl x"]):
                    _refused_by(
                        await call("run_command", argv=argv), "system-program-rules-need-argv"
                    )
                _refused_by(await call("launch_app", command=["curl", "x"]), "e2e-no-curl")
                ran = await call("run_command", argv=["ls", "/"])
                assert not ran.is_error, _text(ran)
            finally:
                removed = server.corral("policy", "remove", "e2e-no-curl")
                assert removed.returncode == 0, removed.stderr
            ran = await call("run_command", command="echo shell-again")
            assert not ran.is_error, _text(ran)

    anyio.run(flow)


def test_path_rules_and_url_schemes(server: Server, pool: str) -> None:
    async def flow() -> None:
        async with _session(server) as call:
            added = server.corral("policy", "add", "e2e-no-ssh-keys", "--text", NO_SSH_KEYS)
            assert added.returncode == 0, added.stderr
            try:
                for path in (".ssh/id_rsa", "~/.ssh/id_rsa", "/home/user/.ssh/id_rsa"):
                    _refused_by(
                        await call("write_file", path=path, content="key"), "e2e-no-ssh-keys"
                    )
                    _refused_by(await call("read_file", path=path), "e2e-no-ssh-keys")
                wrote = await call("write_file", path="notes.txt", content="fine")
                assert not wrote.is_error, _text(wrote)
                read = await call("read_file", path="~/notes.txt")
                assert _text(read) == "fine"
            finally:
                removed = server.corral("policy", "remove", "e2e-no-ssh-keys")
                assert removed.returncode == 0, removed.stderr
            for url in ("file:///etc/passwd", "javascript:alert(1)", "JavaScript:alert(1)"):
                error = _refused_by(await call("open_url", url=url), "system-open-url-web-schemes")
                assert "http and https" in error["hint"], error

    anyio.run(flow)

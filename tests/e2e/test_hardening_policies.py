"""Issue 9 end to end (the real `corral up`, real PCs, the official MCP client; admins and
sponsors on the CLI):

- section 3: an approval covers exactly the request the sponsor saw (the text typed), once;
- section 6: a forbid naming an agent by id or by name holds for real MCP calls, and
  `corral policy test` agrees with the live decision for every way to write the principal;
  refused tokens say why (disabled, revoked, at high risk), each with its own code;
- section 2: a call waiting for a sponsor's answer does not run once its agent is disabled.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from corral.client.http import DPoPAuth, mcp_http_client

from .conftest import Server

Call = Callable[..., Awaitable[CallToolResult]]
POOL = "hardening"

#: typing and commands in this pool wait for a sponsor (single use, the default)
NEEDS_APPROVAL = (
    'forbid (principal is Agent, action in [Action::"type_text", Action::"run_command"], '
    "resource)\n"
    f'when {{ resource.pool == Pool::"{POOL}" }}\n'
    "unless { context.approved };"
)


def _text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def _error(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, _text(result)
    assert result.structured_content is not None
    error = result.structured_content
    assert isinstance(error, dict)
    return error


def _pending(result: CallToolResult) -> str:
    error = _error(result)
    assert error["code"] == "approval_pending", _text(result)
    return str(error["approval_id"])


@asynccontextmanager
async def _mcp(server: Server, credential: Path) -> AsyncIterator[Call]:
    async with (
        mcp_http_client(DPoPAuth.from_credential(credential)) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as mcp,
    ):
        await mcp.initialize()

        async def call(tool: str, **args: Any) -> CallToolResult:
            result = await mcp.call_tool(tool, args)
            assert isinstance(result, CallToolResult)
            return result

        yield call


class Signed:
    """Requests signed with one token and a fresh proof each, never retried: what a refused
    token gets back is exactly what the server answered (DPoPAuth would fetch a new token)."""

    def __init__(self, server: Server, credential: Path) -> None:
        self.server = server
        self.auth = DPoPAuth.from_credential(credential)
        self.token = self.auth.tokens.get()

    def send(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        url = self.server.url + path
        proof = self.auth.tokens.key.proof(method, url, access_token=self.token)
        signed = {"Authorization": f"DPoP {self.token}", "DPoP": proof, **(headers or {})}
        return httpx.request(method, url, headers=signed, timeout=330, **kw)


@pytest.fixture(scope="module")
def setup(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A sponsor with a key credential (for agent-e2e), the approval policy, one pool."""
    tmp = tmp_path_factory.mktemp("hardening")
    sponsor = tmp / "approver.json"
    made = server.corral(
        "user", "create", "approver", "--role", "sponsor", "--key", "-o", str(sponsor)
    )
    assert made.returncode == 0, made.stderr
    added = server.corral("agent", "sponsor", "add", "agent-e2e", "approver")
    assert added.returncode == 0, added.stderr
    done = server.corral("policy", "add", "e2e-hardening-approvals", "--text", NEEDS_APPROVAL)
    assert done.returncode == 0, done.stderr
    server.create_pool(POOL, warm=1, max=1)
    yield sponsor


def _approve(server: Server, sponsor: Path, approval_id: str) -> None:
    done = server.corral("approvals", "--credential", str(sponsor), "approve", approval_id)
    assert done.returncode == 0, done.stderr


def test_an_approval_covers_one_exact_text_once(server: Server, setup: Path) -> None:
    """The attack: the sponsor approves typing "hello"; the agent types something else under
    that approval, or "hello" again and again."""
    server.wait_ready(POOL, 1, timeout=120)

    async def flow() -> None:
        async with _mcp(server, server.agent_file) as call:
            acquired = await call("acquire_pc", pool=POOL)
            assert not acquired.is_error, _text(acquired)
            first = _pending(await call("type_text", text="hello"))
            # the sponsor reads the text itself before answering
            listed = server.corral("approvals", "--credential", str(setup), "list")
            assert listed.returncode == 0, listed.stderr
            (row,) = [ln for ln in listed.stdout.splitlines() if first in ln]
            assert "text=hello" in row and "type_text" in row
            _approve(server, setup, first)

            other = _pending(await call("type_text", text="sudo rm -rf ~\n"))
            assert other != first  # a different text is held again
            typed = await call("type_text", text="hello")
            assert not typed.is_error, _text(typed)
            again = _pending(await call("type_text", text="hello"))  # used once: asks again
            assert again not in (first, other)
            released = await call("release_pc")
            assert not released.is_error, _text(released)

    anyio.run(flow)
    records = {a["id"]: a for a in server.http.get("/v1/approvals?state=all").json()}
    typed = [a for a in records.values() if a["action"] == "type_text"]
    used = [a for a in typed if a["uses"] == 1]
    assert len(used) == 1 and used[0]["detail"]["text"] == "hello" and used[0]["used_up"]
    assert used[0]["detail"]["text_sha256"] == (
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )


def _agent_id(server: Server) -> str:
    return server.agent_id


@pytest.mark.parametrize("form", ["id", "name"])
def test_a_forbid_by_id_or_name_holds_and_policy_test_agrees(
    server: Server, setup: Path, form: str
) -> None:
    """The attack: `corral policy add` accepted a forbid naming the agent by the id `corral
    agent create` printed, `corral policy test` said deny, and the agent's calls went
    through (enforcement looked the caller up by its name)."""
    written = server.agent_id if form == "id" else "agent-e2e"
    text = f'forbid (principal == Agent::"{written}", action == Action::"screenshot", resource);'
    added = server.corral("policy", "add", "e2e-no-screenshots", "--text", text)
    assert added.returncode == 0, added.stderr
    if form == "name":
        assert f'Agent::"agent-e2e" is stored as Agent::"{server.agent_id}"' in added.stderr
    shown = server.corral("policy", "show", "e2e-no-screenshots")
    assert f'Agent::"{server.agent_id}"' in shown.stdout
    server.wait_ready(POOL, 1, timeout=120)
    try:

        async def flow() -> None:
            async with _mcp(server, server.agent_file) as call:
                acquired = await call("acquire_pc", pool=POOL)
                assert not acquired.is_error, _text(acquired)
                assert acquired.structured_content is not None
                pc = acquired.structured_content["pc_id"]
                shot = await call("screenshot", max_width=320)
                error = _error(shot)
                assert error["code"] == "permission_denied", _text(shot)
                assert "denied by e2e-no-screenshots" in error["detail"]
                windows = await call("list_windows")
                assert not windows.is_error, _text(windows)
                # `policy test` agrees with the live decisions, however the principal is written
                for principal in (f'Agent::"{server.agent_id}"', 'Agent::"agent-e2e"'):
                    for action, live in (("screenshot", "deny"), ("list_windows", "allow")):
                        tested = server.corral(
                            "policy",
                            "test",
                            "--principal",
                            principal,
                            "--action",
                            action,
                            "--resource",
                            f'PC::"{pc}"',
                            "--json",
                        )
                        answer = json.loads(tested.stdout)
                        assert answer["decision"] == live, (principal, action, answer)
                        if live == "deny":
                            assert answer["policies"] == ["e2e-no-screenshots"]
                released = await call("release_pc")
                assert not released.is_error, _text(released)

        anyio.run(flow)
    finally:
        removed = server.corral("policy", "remove", "e2e-no-screenshots")
        assert removed.returncode == 0, removed.stderr


def test_policy_add_warns_about_what_matches_nothing(server: Server) -> None:
    added = server.corral(
        "policy",
        "add",
        "e2e-typo",
        "--text",
        'forbid (principal == Agent::"agnet-e2e", action, resource == Pool::"nowhere");',
    )
    assert added.returncode == 0, added.stderr
    assert 'warning: Agent::"agnet-e2e" matches nothing in the directory' in added.stderr
    assert 'warning: Pool::"nowhere" matches nothing in the directory' in added.stderr
    assert server.corral("policy", "remove", "e2e-typo").returncode == 0


def test_refused_tokens_say_why(server: Server, tmp_path: Path) -> None:
    """The attack on clarity: after `corral agent disable` a live token was refused with
    "revocation state unavailable". Disabled, revoked and high-risk identities each get their
    own message and code (the challenge's OAuth error stays invalid_token)."""
    credential = tmp_path / "refused.json"
    server.make_agent("agent-refused", credential)
    # (revoking last: a token issued in the same second as a revoke is refused too)
    for command, code, message in (
        (("disable", "agent-refused"), "identity_disabled", "the identity is disabled"),
        (("risk", "agent-refused", "high"), "identity_high_risk", "at high risk"),
        (("revoke", "agent-refused"), "token_revoked", "revoked"),
    ):
        signed = Signed(server, credential)
        works = signed.send("GET", "/v1/pools")
        assert works.status_code == 200, works.text
        changed = server.corral("agent", *command)
        assert changed.returncode == 0, changed.stderr
        refused = signed.send("GET", "/v1/pools")
        assert refused.status_code == 401, refused.text
        body = refused.json()
        assert body["code"] == code, body
        assert message in body["detail"] and "unavailable" not in body["detail"]
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        undo = {"disable": ("enable", "agent-refused"), "risk": ("risk", "agent-refused", "none")}
        if command[0] in undo:
            assert server.corral("agent", *undo[command[0]]).returncode == 0


def test_a_call_waiting_for_approval_does_not_run_once_disabled(
    server: Server, setup: Path, tmp_path: Path
) -> None:
    """The attack: a call waits for its sponsor's answer; an admin disables the agent; the
    sponsor, not knowing, approves; the call ran anyway."""
    credential = tmp_path / "waiter.json"
    agent_id = server.make_agent("agent-waiter", credential)
    assert server.corral("agent", "sponsor", "add", "agent-waiter", "approver").returncode == 0
    assigned = server.http.post(f"/v1/pools/{POOL}/assignments", json={"agent": "agent-waiter"})
    assert assigned.status_code == 200, assigned.text
    server.wait_ready(POOL, 1, timeout=120)
    signed = Signed(server, credential)
    acquired = signed.send("POST", f"/v1/pools/{POOL}/sessions")
    assert acquired.status_code in (200, 201), acquired.text
    session_id = acquired.json()["session_id"]
    try:
        with server.client(setup) as sponsor, ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(
                signed.send,
                "POST",
                f"/v1/sessions/{session_id}/actions/run_command",
                headers={"Prefer": "wait=300"},
                json={"command": "echo ran"},
            )
            deadline = time.monotonic() + 30
            while True:  # the waiting call asks for approval: it was authenticated
                found = [
                    a for a in sponsor.get("/v1/approvals").json() if a["agent_id"] == agent_id
                ]
                if found:
                    break
                assert time.monotonic() < deadline, "the waiting call never asked for approval"
                time.sleep(0.1)
            disabled = server.corral("agent", "disable", "agent-waiter")
            assert disabled.returncode == 0, disabled.stderr
            _approve(server, setup, found[0]["id"])
            answer = waiting.result(timeout=330)
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == "identity_disabled"
        record = server.http.get("/v1/approvals?state=all").json()
        (approval,) = [a for a in record if a["id"] == found[0]["id"]]
        assert approval["state"] == "approved" and approval["uses"] == 0  # it never ran
        assert re.fullmatch(r"ap-[0-9a-f]{16}", approval["id"])
    finally:
        server.http.delete(f"/v1/sessions/{session_id}")
        server.corral("agent", "enable", "agent-waiter")

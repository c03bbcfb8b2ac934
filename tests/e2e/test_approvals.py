"""Sponsor approvals and session controls end to end: the real `corral up`, the agent on the
official MCP client over streamable HTTP (`/mcp`), the admin and the sponsors on the CLI.

A policy holds `run_command` in one pool for a sponsor: the agent gets a pending answer naming
the approval, its sponsor sees and answers it with `corral approvals`, and the agent's identical
call then runs (or is refused, once denied). Session controls fixed by policy annotations hold
in the sessions they were acquired for."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, ImageContent, TextContent

from corral.identity.http_auth import DPoPAuth, mcp_http_client

from .conftest import Server

Call = Callable[..., Awaitable[CallToolResult]]

#: the approval idiom of docs/policies.md: a forbid that a sponsor's approval lifts
NEEDS_APPROVAL = (
    'forbid (principal is Agent, action == Action::"run_command", resource)\n'
    'when { resource.pool == Pool::"approvals" }\n'
    "unless { context.approved };"
)
#: session controls from the permits that allow an acquire (annotations)
READ_ONLY = (
    '@controls("read_only")\n'
    'permit (principal == Agent::"agent-e2e", action == Action::"acquire", '
    'resource == Pool::"readonly");'
)
HOSTS = (
    '@allowed_hosts("allowed.example")\n'
    'permit (principal == Agent::"agent-e2e", action == Action::"acquire", '
    'resource == Pool::"hosts");'
)
POOLS = ("approvals", "readonly", "hosts")


@dataclass(frozen=True)
class Sponsors:
    """Users with key credentials: `approver` sponsors agent-e2e, `bystander` sponsors nobody."""

    approver: Path
    approver_id: str
    bystander: Path


@pytest.fixture(scope="module")
def sponsors(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sponsors]:
    """Set the module up: the sponsors, the policies (added by the admin on the CLI) and the
    pools, which then boot their PCs side by side."""
    tmp = tmp_path_factory.mktemp("approvals")
    paths = {}
    for name in ("approver", "bystander"):
        paths[name] = tmp / f"{name}.json"
        made = server.corral(
            "user", "create", name, "--role", "sponsor", "--key", "-o", str(paths[name])
        )
        assert made.returncode == 0, made.stderr
    added = server.corral("agent", "sponsor", "add", "agent-e2e", "approver")
    assert added.returncode == 0, added.stderr
    for name, text in (
        ("e2e-approve-commands", NEEDS_APPROVAL),
        ("e2e-readonly-pool", READ_ONLY),
        ("e2e-hosts-pool", HOSTS),
    ):
        done = server.corral("policy", "add", name, "--text", text)
        assert done.returncode == 0, done.stderr
    for pool in POOLS:
        server.create_pool(pool, warm=1, max=1)
    yield Sponsors(
        approver=paths["approver"],
        approver_id=str(json.loads(paths["approver"].read_text())["user_id"]),
        bystander=paths["bystander"],
    )


def _text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def _error(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, _text(result)
    assert result.structured_content is not None
    error = result.structured_content["error"]
    assert isinstance(error, dict)
    return error


@asynccontextmanager
async def _agent(server: Server) -> AsyncIterator[Call]:
    """The e2e agent on the gateway: `call(tool, **args)` returns the tool's result."""
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

        yield call


def _approvals(server: Server, credential: Path, *args: str) -> Any:
    """`corral approvals --credential FILE ARGS...` (the CLI a sponsor uses)."""
    return server.corral("approvals", "--credential", str(credential), *args)


def _pending_id(result: CallToolResult) -> str:
    """The approval a pending answer names; the answer must say clearly what happens next."""
    error = _error(result)
    text = _text(result)
    assert error["code"] == "approval_pending", text
    approval_id = str(error["approval_id"])
    assert re.fullmatch(r"ap-[0-9a-f]{16}", approval_id), approval_id
    assert "error (approval_pending): run_command on PC::" in text
    assert f"waits for a sponsor's approval (approval {approval_id})" in text
    assert f"corral approvals approve {approval_id}" in error["hint"]
    assert "same arguments" in error["hint"]  # what the agent does next
    return approval_id


def test_sponsor_approves_and_denies_run_command(server: Server, sponsors: Sponsors) -> None:
    server.wait_ready("approvals", 1, timeout=120)
    started = datetime.now(UTC)

    async def flow() -> None:
        async with _agent(server) as call:
            acquired = await call("acquire_pc", pool="approvals")
            assert not acquired.is_error, _text(acquired)

            # Held for a sponsor: a clear pending answer naming the approval; asking again is
            # the same request, not a second one.
            first = _pending_id(await call("run_command", command="echo approved-once"))
            assert _pending_id(await call("run_command", command="echo approved-once")) == first
            # Other tools are not held.
            shot = await call("screenshot", max_width=320)
            assert not shot.is_error, _text(shot)

            # Only the agent's sponsors (and admins) see and answer it; the agent cannot.
            assert first not in _approvals(server, sponsors.bystander, "list").stdout
            refused = _approvals(server, sponsors.bystander, "approve", first)
            assert refused.returncode != 0 and "not allowed" in refused.stderr, refused.stderr
            assert server.agent.post(f"/v1/approvals/{first}/approve").status_code == 403
            listed = _approvals(server, sponsors.approver, "list")
            assert listed.returncode == 0, listed.stderr
            (row,) = [ln for ln in listed.stdout.splitlines() if first in ln]
            assert server.agent_id in row and "run_command" in row and "pending" in row
            assert "command=echo approved-once" in row and "program=echo" in row
            approved = _approvals(server, sponsors.approver, "approve", first)
            assert approved.returncode == 0, approved.stderr
            assert f"approved {first}" in approved.stderr

            # The identical call now runs; an approval covers that one request only.
            ran = await call("run_command", command="echo approved-once")
            assert not ran.is_error, _text(ran)
            assert ran.structured_content is not None
            assert ran.structured_content["stdout"] == "approved-once\n"
            second = _pending_id(await call("run_command", command="echo something-else"))
            assert second != first

            # Denied: the retry is refused outright, no longer pending.
            denied = _approvals(server, sponsors.approver, "deny", second)
            assert denied.returncode == 0, denied.stderr
            refusal = await call("run_command", command="echo something-else")
            error = _error(refusal)
            assert error["code"] == "permission_denied", _text(refusal)
            assert f"denied by a sponsor ({second})" in error["message"]
            assert "approval_id" not in error
            # Answered once: a second answer is refused, naming the state.
            again = _approvals(server, sponsors.approver, "approve", second)
            assert again.returncode != 0 and "already denied" in again.stderr, again.stderr

            released = await call("release_pc")
            assert not released.is_error, _text(released)

    anyio.run(flow)

    # The record of who answered what, and when (REST and CLI).
    with server.client(sponsors.approver) as sponsor:
        answered = sponsor.get("/v1/approvals", params={"state": "all"})
    assert answered.status_code == 200, answered.text
    records = {a["id"]: a for a in answered.json()}
    finished = datetime.now(UTC)
    for state in ("approved", "denied"):
        (record,) = [a for a in records.values() if a["state"] == state]
        assert record["agent_id"] == server.agent_id and record["action"] == "run_command"
        assert record["policies"] == ["e2e-approve-commands"]
        assert record["decided_by"] == sponsors.approver_id
        decided = datetime.fromisoformat(record["decided_at"])
        assert started - timedelta(seconds=1) <= decided <= finished
        # an answer stands for 15 minutes from when it was given
        expires = datetime.fromisoformat(record["expires_at"])
        assert expires - decided == timedelta(minutes=15)
    shown = _approvals(server, sponsors.approver, "list", "--state", "all")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count(sponsors.approver_id) == 2
    assert "approved" in shown.stdout and "denied" in shown.stdout
    # An admin sees them all; the bystander none.
    assert {a["id"] for a in server.http.get("/v1/approvals?state=all").json()} == set(records)
    with server.client(sponsors.bystander) as bystander:
        assert bystander.get("/v1/approvals?state=all").json() == []


def test_read_only_session_from_policy(server: Server, sponsors: Sponsors) -> None:
    server.wait_ready("readonly", 1, timeout=120)

    async def flow() -> None:
        async with _agent(server) as call:
            acquired = await call("acquire_pc", pool="readonly")
            assert not acquired.is_error, _text(acquired)
            shot = await call("screenshot", max_width=320)
            assert not shot.is_error, _text(shot)
            assert [c for c in shot.content if isinstance(c, ImageContent)]
            for tool, args in (
                ("click", {"x": 10, "y": 10}),
                ("type_text", {"text": "hello"}),
                ("run_command", {"command": "echo no"}),
            ):
                refused = await call(tool, **args)
                error = _error(refused)
                assert error["code"] == "permission_denied", _text(refused)
                assert f"{tool} on PC::" in error["message"]
                assert "system-session-read-only" in error["message"]
                assert "read-only" in error["hint"], error
            released = await call("release_pc")
            assert not released.is_error, _text(released)

    anyio.run(flow)


def test_allowed_hosts_from_policy(server: Server, sponsors: Sponsors) -> None:
    server.wait_ready("hosts", 1, timeout=120)

    async def flow() -> None:
        async with _agent(server) as call:
            acquired = await call("acquire_pc", pool="hosts")
            assert not acquired.is_error, _text(acquired)
            refused = await call("open_url", url="https://elsewhere.example/page")
            error = _error(refused)
            assert error["code"] == "permission_denied", _text(refused)
            assert "system-session-allowed-hosts" in error["message"]
            assert "allowed.example" in error["hint"], error
            # The allowed host passes policy (the minimal image may have no browser to open it).
            opened = await call("open_url", url="https://allowed.example/page")
            if opened.is_error:
                assert _error(opened)["code"] != "permission_denied", _text(opened)
            # Only open_url is restricted: the rest of the session is not read-only.
            ran = await call("run_command", command="echo free")
            assert not ran.is_error, _text(ran)
            released = await call("release_pc")
            assert not released.is_error, _text(released)

    anyio.run(flow)

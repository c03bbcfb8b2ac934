"""Issue 9, section 2: a call that waited (for its session's lock, or for a sponsor's answer)
is checked again against the directory and revocations before it runs. Real store (SQLite),
fake runtime (as in test_control), the real ControlPlane and AccessEvaluator."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from corral.domain.access import Caller, CallerKind
from corral.domain.identity import Risk
from corral.identity.errors import (
    IdentityDisabledError,
    IdentityHighRiskError,
    InvalidTokenError,
    TokenRevokedError,
)
from corral.runtime.client import CommandResult
from corral.store import Store
from tests.service.test_control_policy import Gate, anyio_backend, gate
from tests.support.fakes import FakeClient, FakeDriver

__all__ = ["anyio_backend", "gate"]  # fixtures, shared with test_control_policy

pytestmark = pytest.mark.anyio

CHANGES: dict[str, tuple[type[InvalidTokenError], str]] = {
    "disabled": (IdentityDisabledError, "identity_disabled"),
    "revoked": (TokenRevokedError, "token_revoked"),
    "high_risk": (IdentityHighRiskError, "identity_high_risk"),
}


def _change(store: Store, agent_id: str, change: str) -> None:
    """What an admin (or a detection) does to the agent while its call waits."""
    if change == "disabled":
        store.set_agent_enabled(agent_id, False)
    elif change == "revoked":
        store.revoke_tokens(agent_id)
    else:
        store.set_agent_risk(agent_id, Risk.HIGH)


class _HoldingClient(FakeClient):
    """`hold` blocks on the PC until the test lets it go, so the next call queues."""

    def run(
        self, argv: list[str] | None = None, *, shell: str | None = None, **kw: Any
    ) -> CommandResult:
        rt = self.runtime
        assert isinstance(rt, _HoldingRuntime)
        if shell == "hold":
            rt.started.set()
            assert rt.go.wait(30)
        return super().run(argv, shell=shell, **kw)


class _HoldingRuntime(FakeDriver):
    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.go = threading.Event()

    # A client that holds each call (duck-typed like the PcdClient the plane expects).
    def client(self, pc_id: str, timeout: float = 30.0) -> FakeClient:  # type: ignore[override]
        return _HoldingClient(self)


def _token_caller(gate: Gate) -> Caller:
    """The bot as authentication makes it: with its token's issue time (a second ago)."""
    return Caller(CallerKind.AGENT, gate.bot.id, jkt="k", issued_at=int(time.time()) - 1)


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_call_queued_behind_the_lock_does_not_run_once_refused(
    gate: Gate, change: str
) -> None:
    """The attack: an agent queues calls behind a long one; an admin disables it (or revokes
    its tokens, or a detection raises its risk); the queued calls still ran."""
    c = gate.control
    runtime = _HoldingRuntime()
    c.manager.runtime = runtime  # type: ignore[assignment]
    c.policy.assign_pool("p", agent="bot", principal=gate.admin)
    bot = _token_caller(gate)
    mine = await c.acquire("p", wait_s=5, principal=bot)
    first = asyncio.create_task(c.act(mine.id, "run_command", {"command": "hold"}, principal=bot))
    assert await asyncio.to_thread(runtime.started.wait, 10)
    queued = asyncio.create_task(
        c.act(mine.id, "run_command", {"command": "queued:0"}, principal=bot)
    )
    await asyncio.sleep(0)  # one turn of the loop: the queued call reaches the session's lock
    assert not queued.done() and c.sessions._live[mine.id].lock.locked()
    _change(c.store, gate.bot.id, change)
    runtime.go.set()
    await first  # it had started before the change: it finishes
    error, code = CHANGES[change]
    with pytest.raises(error) as refused:
        await queued
    assert refused.value.code == code
    assert runtime.ran == ["hold"]


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_call_waiting_for_approval_does_not_run_once_refused(
    gate: Gate, change: str
) -> None:
    """The attack: a call waits for a sponsor's answer; meanwhile the agent is disabled (or
    revoked, or at high risk); the sponsor, not knowing, approves; the call ran."""
    c = gate.control
    c.policy.assign_pool("p", agent="bot", principal=gate.admin)
    c.policy.add_policy(
        "curl-needs-approval",
        'forbid (principal is Agent, action == Action::"run_command", resource)\n'
        'when { context has args && context.args has command && context.args.command like "curl*" }'
        "\nunless { context.approved };",
        principal=gate.admin,
    )
    bot = _token_caller(gate)
    mine = await c.acquire("p", wait_s=5, principal=bot)

    async def meanwhile() -> None:
        while True:  # the sponsor sees the request appear; the change lands; it approves
            pending = c.policy.list_approvals(principal=gate.sam)
            if pending:
                _change(c.store, gate.bot.id, change)
                c.policy.decide_approval(pending[0].id, approve=True, principal=gate.sam)
                return
            await asyncio.sleep(0.05)

    answering = asyncio.create_task(meanwhile())
    error, code = CHANGES[change]
    with pytest.raises(error) as refused:
        await c.act(mine.id, "run_command", {"argv": ["curl:0"]}, principal=bot, approval_wait_s=10)
    await answering
    assert refused.value.code == code
    assert gate.runtime.ran == []

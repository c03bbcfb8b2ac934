"""The Gate asks policy: pool assignments, own sessions (404 for others'), admin routes (403),
session controls fixed at acquire, risk on the next request, approvals. Real store (SQLite),
fake runtime (as in test_control)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.domain.access import Caller, CallerKind
from corral.domain.identity import Risk, Role
from corral.domain.models import PoolSpec
from corral.errors import (
    ApprovalPendingError,
    InvalidInputError,
    PermissionDeniedError,
    SessionGoneError,
)
from corral.lifecycle.control import ControlPlane
from corral.store import Store
from tests.support.fakes import FakeDriver

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Gate:
    def __init__(self, control: ControlPlane, runtime: FakeDriver) -> None:
        self.control = control
        self.runtime = runtime
        store = control.store
        admin = store.create_user("root", roles=[Role.ADMIN])
        sam = store.create_user("sam", roles=[Role.SPONSOR])
        store.create_group("team")
        bot = store.create_agent("bot", sponsors=["sam"], groups=["team"])
        other = store.create_agent("other", sponsors=["sam"])
        self.admin = Caller(CallerKind.USER, admin.id, frozenset({Role.ADMIN}))
        self.sam = Caller(CallerKind.USER, sam.id, frozenset({Role.SPONSOR}))
        self.bot = Caller(CallerKind.AGENT, bot.id, jkt="k")
        self.other = Caller(CallerKind.AGENT, other.id, jkt="k")


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[Gate]:
    runtime = FakeDriver()
    control = ControlPlane(Store(f"sqlite:///{tmp_path}/c.db"), runtime)
    await control.start()
    manager = asyncio.create_task(control.run())
    g = Gate(control, runtime)
    await control.create_pool(PoolSpec("p", "minimal", warm=2, max=4), principal=g.admin)
    yield g
    manager.cancel()
    with pytest.raises(asyncio.CancelledError):
        await manager
    await control.stop()


async def test_acquire_needs_an_assignment(gate: Gate) -> None:
    c = gate.control
    with pytest.raises(PermissionDeniedError, match="no policy permits it"):
        await c.acquire("p", wait_s=5, principal=gate.bot)
    c.policy.assign_pool("p", group="team", principal=gate.admin)
    session = await c.acquire("p", wait_s=5, principal=gate.bot)
    assert session.owner == gate.bot.id
    with pytest.raises(PermissionDeniedError):
        await c.acquire("p", wait_s=5, principal=gate.other)
    assert [p.name for p in c.list_pools(principal=gate.other)] == ["p"]  # agents read pools
    assert c.list_pools(principal=gate.sam) == []  # a plain sponsor reads none


async def test_admin_routes_refuse_others(gate: Gate) -> None:
    c = gate.control
    with pytest.raises(PermissionDeniedError):
        await c.create_pool(PoolSpec("mine", "minimal"), principal=gate.bot)
    with pytest.raises(PermissionDeniedError):
        c.list_pool_pcs("p", principal=gate.bot)
    with pytest.raises(PermissionDeniedError):
        await c.delete_pool("p", principal=gate.sam)
    with pytest.raises(PermissionDeniedError, match="no authenticated principal"):
        c.list_pools(principal=None)


async def test_others_sessions_do_not_exist(gate: Gate) -> None:
    c = gate.control
    c.policy.assign_pool("p", agent="bot", principal=gate.admin)
    mine = await c.acquire("p", wait_s=5, principal=gate.bot)
    await c.act(mine.id, "run_command", {"command": "ok:0"}, principal=gate.bot)
    for attempt in (
        c.act(mine.id, "run_command", {"command": "x:0"}, principal=gate.other),
        c.release(mine.id, principal=gate.other),
    ):
        with pytest.raises(SessionGoneError):
            await attempt
    with pytest.raises(SessionGoneError):
        c.get_session(mine.id, principal=gate.other)
    assert c.list_sessions(principal=gate.other) == []
    assert [s.id for s in c.list_sessions(principal=gate.bot)] == [mine.id]
    assert [s.id for s in c.list_sessions(principal=gate.sam)] == [mine.id]  # its sponsor
    assert c.get_session(mine.id, principal=gate.sam).id == mine.id
    with pytest.raises(PermissionDeniedError):  # a sponsor watches (sees it), it does not drive
        await c.act(mine.id, "run_command", {"command": "x:0"}, principal=gate.sam)
    await c.act(mine.id, "run_command", {"command": "admin:0"}, principal=gate.admin)
    assert gate.runtime.ran == ["ok", "admin"]
    await c.release(mine.id, principal=gate.bot)


async def test_risk_counts_on_the_next_action(gate: Gate) -> None:
    c = gate.control
    c.policy.assign_pool("p", agent="bot", principal=gate.admin)
    mine = await c.acquire("p", wait_s=5, principal=gate.bot)
    await c.act(mine.id, "run_command", {"command": "one:0"}, principal=gate.bot)
    c.store.set_agent_risk("bot", Risk.HIGH)
    with pytest.raises((PermissionDeniedError, SessionGoneError)):
        await c.act(mine.id, "run_command", {"command": "two:0"}, principal=gate.bot)
    c.store.set_agent_risk("bot", Risk.NONE)
    await c.act(mine.id, "run_command", {"command": "three:0"}, principal=gate.bot)
    assert gate.runtime.ran == ["one", "three"]


async def test_session_controls_are_fixed_at_acquire(gate: Gate) -> None:
    c = gate.control
    c.policy.add_policy(
        "team-read-only",
        '@controls("read_only")\n'
        'permit (principal in Group::"team", action == Action::"acquire", resource);',
        principal=gate.admin,
    )
    locked = await c.acquire("p", wait_s=5, principal=gate.bot)
    with pytest.raises(PermissionDeniedError, match="system-session-read-only"):
        await c.act(locked.id, "run_command", {"command": "x:0"}, principal=gate.bot)
    with pytest.raises(PermissionDeniedError, match="system-session-read-only"):
        await c.act(locked.id, "run_command", {"command": "x:0"}, principal=gate.admin)
    # removing the policy later does not lift the controls of a session already lent
    c.policy.remove_policy("team-read-only", principal=gate.admin)
    with pytest.raises(PermissionDeniedError):
        await c.act(locked.id, "run_command", {"command": "x:0"}, principal=gate.bot)
    # a caller may ask for controls itself
    c.policy.assign_pool("p", agent="other", principal=gate.admin)
    asked = await c.acquire(
        "p", wait_s=5, request={"controls": {"no_clipboard": True}}, principal=gate.other
    )
    with pytest.raises(PermissionDeniedError, match="system-session-no-clipboard"):
        await c.act(asked.id, "get_clipboard", {}, principal=gate.other)
    # a shell would step around the control (xclip -o): refused in that session too
    with pytest.raises(PermissionDeniedError, match="system-session-controls-hold"):
        await c.act(asked.id, "run_command", {"argv": ["xclip:0"]}, principal=gate.other)
    assert gate.runtime.ran == []
    # unless a permit of the acquire allows it alongside the controls
    await c.release(asked.id, principal=gate.other)
    c.policy.add_policy(
        "other-commands-alongside",
        '@allow_alongside("run_command")\n'
        'permit (principal == Agent::"other", action == Action::"acquire", resource);',
        principal=gate.admin,
    )
    alongside = await c.acquire(
        "p", wait_s=5, request={"controls": {"no_clipboard": True}}, principal=gate.other
    )
    await c.act(alongside.id, "run_command", {"command": "fine:0"}, principal=gate.other)
    with pytest.raises(PermissionDeniedError, match="system-session-no-clipboard"):
        await c.act(alongside.id, "get_clipboard", {}, principal=gate.other)
    assert gate.runtime.ran == ["fine"]
    # an acquire request cannot grant itself the exemption
    with pytest.raises(InvalidInputError, match="allow_alongside"):
        await c.acquire(
            "p",
            wait_s=5,
            request={"controls": {"no_clipboard": True, "allow_alongside": ["run_command"]}},
            principal=gate.bot,
        )


async def test_an_action_held_for_approval(gate: Gate) -> None:
    c = gate.control
    c.policy.assign_pool("p", agent="bot", principal=gate.admin)
    c.policy.add_policy(
        "curl-needs-approval",
        'forbid (principal is Agent, action == Action::"run_command", resource)\n'
        "when { context has args && context.args has command &&\n"
        '  context.args.command like "curl*" }\n'
        "unless { context.approved };",
        principal=gate.admin,
    )
    mine = await c.acquire("p", wait_s=5, principal=gate.bot)
    with pytest.raises(ApprovalPendingError) as held:
        await c.act(mine.id, "run_command", {"argv": ["curl:0"]}, principal=gate.bot)
    assert gate.runtime.ran == []
    c.policy.decide_approval(held.value.approval_id, approve=True, principal=gate.sam)
    await c.act(mine.id, "run_command", {"argv": ["curl:0"]}, principal=gate.bot)
    assert gate.runtime.ran == ["curl"]


async def test_a_held_action_can_wait_for_the_sponsor(gate: Gate) -> None:
    """With a wait, the call blocks (outside the session's lock) until the sponsor answers:
    approved, it runs; denied, it is refused; unanswered, it ends pending."""
    c = gate.control
    c.policy.assign_pool("p", agent="bot", principal=gate.admin)
    c.policy.add_policy(
        "curl-needs-approval",
        'forbid (principal is Agent, action == Action::"run_command", resource)\n'
        "when { context has args && context.args has command &&\n"
        '  context.args.command like "curl*" }\n'
        "unless { context.approved };",
        principal=gate.admin,
    )
    mine = await c.acquire("p", wait_s=5, principal=gate.bot)

    async def sponsor_answers(command: str, approve: bool) -> None:
        while True:  # the sponsor sees the request appear, then answers it
            pending = [
                a
                for a in c.policy.list_approvals(principal=gate.sam)
                if a.detail.get("command") == command and a.state.value == "pending"
            ]
            if pending:
                c.policy.decide_approval(pending[0].id, approve=approve, principal=gate.sam)
                return
            await asyncio.sleep(0.05)

    answering = asyncio.create_task(sponsor_answers("curl:0", True))
    result = await c.act(
        mine.id, "run_command", {"argv": ["curl:0"]}, principal=gate.bot, approval_wait_s=10
    )
    await answering
    assert result is not None and gate.runtime.ran == ["curl"]
    # other actions of the session are not held up meanwhile (the wait is outside the lock)
    answering = asyncio.create_task(sponsor_answers("curl -x:0", False))
    with pytest.raises(PermissionDeniedError) as refused:
        await c.act(
            mine.id,
            "run_command",
            {"argv": ["curl", "-x:0"]},
            principal=gate.bot,
            approval_wait_s=10,
        )
    await answering
    assert not isinstance(refused.value, ApprovalPendingError)
    with pytest.raises(ApprovalPendingError):
        await c.act(
            mine.id,
            "run_command",
            {"argv": ["curl", "-y:0"]},
            principal=gate.bot,
            approval_wait_s=0.3,
        )
    assert gate.runtime.ran == ["curl"]

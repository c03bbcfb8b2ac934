"""The policy service on a real store: authorize with live directory state, admin operations,
versions and the change log, approvals, session controls. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from corral.access import Controls, Decision, EntityRef
from corral.access.service import PolicyService
from corral.domain.access import SYSTEM, Caller, CallerKind
from corral.domain.identity import Risk, Role
from corral.domain.models import PCState, PoolSpec, Session
from corral.domain.policy import ApprovalState, ChangeKind
from corral.errors import (
    ApprovalPendingError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    SessionGoneError,
)
from corral.store import Store

CURL_NEEDS_APPROVAL = (
    'forbid (principal is Agent, action == Action::"run_command", resource)\n'
    "when { context has args && context.args has program && "
    'context.args.program == "curl" }\n'
    "unless { context.approved };"
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.migrate()
    try:
        yield s
    finally:
        s.close()


class World:
    """A directory, two pools with free PCs, and the callers of the tests."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.clock = Clock()
        self.policy = PolicyService(store, now=self.clock)
        assert self.policy.start() is True
        alice = store.create_user("alice", roles=[Role.ADMIN])
        sam = store.create_user("sam", roles=[Role.SPONSOR])
        eve = store.create_user("eve", roles=[Role.SPONSOR])
        store.create_group("team")
        bot = store.create_agent("bot", sponsors=["sam"], groups=["team"])
        other = store.create_agent("other", sponsors=["eve"])
        self.admin = Caller(CallerKind.USER, alice.id, frozenset({Role.ADMIN}))
        self.sam = Caller(CallerKind.USER, sam.id, frozenset({Role.SPONSOR}))
        self.eve = Caller(CallerKind.USER, eve.id, frozenset({Role.SPONSOR}))
        self.bot = Caller(CallerKind.AGENT, bot.id, jkt="thumb")
        self.other = Caller(CallerKind.AGENT, other.id, jkt="thumb")
        for pool in ("main", "gpu"):
            store.create_pool(PoolSpec(name=pool, image="minimal"))
            for i in range(3):
                store.add_pc(pool, f"{pool}-pc{i}", PCState.READY)
        self.policy.assign_pool("main", group="team", principal=self.admin)
        self.policy.assign_pool("gpu", agent="other", principal=self.admin)

    def acquire(self, pool: str, owner: Caller) -> Session:
        now = datetime.now(UTC)
        got = self.store.acquire(
            pool,
            session_id=f"ses-{owner.id}-{pool}",
            expires_at=now + timedelta(hours=1),
            idempotency_key=None,
            request_hash="h",
            now=now,
            owner=owner.id,
        )
        assert got is not None
        return got[0]

    def may(self, caller: Caller, action: str, pool: str) -> bool:
        return self.policy.authorize(caller, action, self.policy.pool(pool)).allowed


@pytest.fixture
def world(store: Store) -> World:
    return World(store)


def test_acquire_follows_pool_assignments(world: World) -> None:
    assert world.may(world.bot, "acquire", "main")  # through its group
    assert not world.may(world.bot, "acquire", "gpu")
    assert world.may(world.other, "acquire", "gpu")  # directly
    assert not world.may(world.other, "acquire", "main")
    assert world.may(world.admin, "acquire", "gpu")
    assert not world.may(world.sam, "acquire", "main")
    world.policy.assign_pool("gpu", agent="bot", principal=world.admin)
    assert world.may(world.bot, "acquire", "gpu")
    world.policy.assign_pool("main", group="team", present=False, principal=world.admin)
    assert not world.may(world.bot, "acquire", "main")
    world.store.set_group_member("team", "agent", "other", present=True)
    world.policy.assign_pool("main", group="team", principal=world.admin)
    assert world.may(world.other, "acquire", "main")  # joined the group: the next request sees it


def test_risk_change_alters_the_next_decision(world: World) -> None:
    session = world.acquire("main", world.bot)
    pc = world.policy.session(session, pc=True)
    assert world.policy.authorize(world.bot, "screenshot", pc).allowed
    world.store.set_agent_risk("bot", Risk.HIGH)
    denied = world.policy.authorize(world.bot, "screenshot", pc)
    assert not denied.allowed and denied.policies == ("high-risk-agents-blocked",)
    world.store.set_agent_risk("bot", Risk.LOW)
    assert world.policy.authorize(world.bot, "screenshot", pc).allowed


def test_agents_act_only_in_their_own_sessions(world: World) -> None:
    mine = world.acquire("main", world.bot)
    theirs = world.acquire("gpu", world.other)
    p = world.policy
    assert p.authorize(world.bot, "run_command", p.session(mine, pc=True)).allowed
    assert not p.authorize(world.bot, "run_command", p.session(theirs, pc=True)).allowed
    assert not p.authorize(world.bot, "release", p.session(theirs)).allowed
    assert p.authorize(world.admin, "release", p.session(theirs)).allowed
    assert p.authorize(world.sam, "observe", p.session(mine)).allowed  # its sponsor
    assert not p.authorize(world.sam, "observe", p.session(theirs)).allowed
    assert not p.authorize(world.sam, "click", p.session(mine, pc=True)).allowed
    # a session token: its own session only, and no admin action even for an admin
    token = Caller(CallerKind.AGENT, world.bot.id, session_id=mine.id, jkt="t")
    assert p.authorize(token, "click", p.session(mine, pc=True)).allowed
    assert p.authorize(token, "release", p.session(mine)).allowed
    assert p.authorize(token, "observe", p.session(mine)).allowed
    assert not p.authorize(token, "observe", p.session(theirs)).allowed
    assert not p.authorize(token, "read_pool", p.pool("main")).allowed
    assert not p.authorize(token, "acquire", p.pool("main")).allowed
    admin_token = Caller(CallerKind.USER, world.admin.id, world.admin.roles, session_id=mine.id)
    assert not p.authorize(admin_token, "create_pool", p.pool("new")).allowed
    assert not p.authorize(admin_token, "click", p.session(theirs, pc=True)).allowed


def test_unknown_or_missing_principal_is_denied(world: World) -> None:
    ghost = Caller(CallerKind.AGENT, "a-0000000000000000")  # no groups, no assignments
    assert not world.policy.authorize(ghost, "acquire", world.policy.pool("main")).allowed
    # a caller the directory does not describe keeps only its authenticated roles
    outsider = Caller(CallerKind.USER, "u-0000000000000000", frozenset({Role.ADMIN}))
    assert world.policy.authorize(outsider, "create_pool", world.policy.pool("x")).allowed
    plain = Caller(CallerKind.USER, "u-0000000000000001")
    assert not world.policy.authorize(plain, "create_pool", world.policy.pool("x")).allowed
    mine = world.acquire("main", world.bot)
    assert not world.policy.authorize(
        ghost, "screenshot", world.policy.session(mine, pc=True)
    ).allowed
    assert not world.policy.authorize(None, "acquire", world.policy.pool("main")).allowed
    assert world.policy.authorize(SYSTEM, "delete_pool", world.policy.pool("main")).allowed


def test_require_raises_with_the_reason(world: World) -> None:
    with pytest.raises(PermissionDeniedError, match="no policy permits it"):
        world.policy.require(world.bot, "acquire", world.policy.pool("gpu"))
    theirs = world.acquire("gpu", world.other)
    with pytest.raises(SessionGoneError):
        world.policy.require(
            world.bot,
            "read_session",
            world.policy.session(theirs),
            deny=lambda d: SessionGoneError(f"no session {theirs.id!r}"),
        )


def test_policy_admin_is_versioned_and_audited(world: World) -> None:
    p = world.policy
    names = [x.name for x in p.list_policies(principal=world.admin)]
    assert "admins-administer" in names and "agents-acquire-assigned-pools" in names
    with pytest.raises(PermissionDeniedError):
        p.list_policies(principal=world.bot)
    with pytest.raises(PermissionDeniedError):
        p.add_policy("x", "permit (principal, action, resource);", principal=world.sam)
    with pytest.raises(InvalidInputError, match='unrecognized action `Action::"fly"`'):
        p.add_policy(
            "x", 'permit (principal, action == Action::"fly", resource);', principal=world.admin
        )
    with pytest.raises(InvalidInputError, match="reserved for system policies"):
        p.add_policy("system-x", "permit (principal, action, resource);", principal=world.admin)
    before = world.store.policy_version()
    p.add_policy(
        "bots-no-gpu",
        'forbid (principal == Agent::"other", action == Action::"acquire",'
        ' resource == Pool::"gpu");',
        principal=world.admin,
    )
    assert world.store.policy_version() == before + 1
    assert not world.may(world.other, "acquire", "gpu")  # the next request sees the new policy
    p.set_policy_enabled("bots-no-gpu", False, principal=world.admin)
    assert world.may(world.other, "acquire", "gpu")
    p.remove_policy("bots-no-gpu", principal=world.admin)
    changes = p.changes(principal=world.admin, since=before)
    assert [(c.kind, c.subject, c.actor) for c in changes] == [
        (ChangeKind.ADD, "bots-no-gpu", world.admin.id),
        (ChangeKind.DISABLE, "bots-no-gpu", world.admin.id),
        (ChangeKind.REMOVE, "bots-no-gpu", world.admin.id),
    ]


def test_empty_policy_set_denies_all_but_policy_repair(world: World) -> None:
    p = world.policy
    for stored in p.list_policies(principal=world.admin):
        p.remove_policy(stored.name, principal=world.admin)
    session = world.acquire("main", world.bot)
    assert not world.may(world.admin, "acquire", "main")
    assert not world.may(world.bot, "acquire", "main")
    assert not p.authorize(world.bot, "screenshot", p.session(session, pc=True)).allowed
    assert not p.authorize(world.admin, "release", p.session(session)).allowed
    # the system policy keeps the way back open
    p.add_policy(
        "admins-administer",
        'permit (principal in Role::"admin", action, resource);',
        principal=world.admin,
    )
    assert world.may(world.admin, "acquire", "main")


def test_an_invalid_stored_policy_fails_closed(world: World) -> None:
    # written behind the service's back (as if a tool were renamed by an upgrade)
    world.store.add_policy(
        "broken", 'permit (principal, action == Action::"gone", resource);', actor="x"
    )
    decision = world.policy.authorize(world.admin, "acquire", world.policy.pool("main"))
    assert not decision.allowed and any("broken" in e for e in decision.errors)
    world.policy.remove_policy("broken", principal=world.admin)  # still possible
    assert world.may(world.admin, "acquire", "main")


def test_policy_test_answers_decision_policies_and_errors(world: World) -> None:
    p = world.policy
    session = world.acquire("main", world.bot)
    bot, pc = EntityRef("Agent", "bot"), EntityRef("PC", session.pc_id)
    allowed = p.test(bot, "run_command", pc, {}, caller=world.admin)
    assert allowed.allowed and allowed.policies == ("owners-use-their-sessions",)
    risky = p.test(bot, "run_command", pc, {"risk_score": 3}, caller=world.admin)
    assert not risky.allowed and risky.policies == ("high-risk-agents-blocked",)
    broken = p.test(bot, "run_command", pc, {"risk": 7}, caller=world.admin)
    assert not broken.allowed and broken.errors
    acquire = p.test(bot, "acquire", EntityRef("Pool", "main"), None, caller=world.admin)
    assert acquire.allowed
    with pytest.raises(PermissionDeniedError):
        p.test(bot, "acquire", EntityRef("Pool", "main"), None, caller=world.bot)


def test_session_controls_from_policy_annotations(world: World) -> None:
    p = world.policy
    p.add_policy(
        "team-read-only",
        '@controls("read_only")\n@allowed_hosts("docs.example.com")\n'
        'permit (principal in Group::"team", action == Action::"acquire", resource);',
        principal=world.admin,
    )
    decision = p.authorize(world.bot, "acquire", p.pool("main"))
    assert set(decision.policies) == {"agents-acquire-assigned-pools", "team-read-only"}
    controls = p.acquire_controls(decision, Controls(no_clipboard=True))
    assert controls == Controls(
        read_only=True, no_clipboard=True, allowed_hosts=("docs.example.com",)
    )
    session = world.acquire("main", world.bot)
    p.fix_controls(session.id, controls)
    fresh = PolicyService(world.store)  # another worker: reads the controls from the store
    pc = fresh.session(session, pc=True)
    assert fresh.authorize(world.bot, "screenshot", pc).allowed
    assert not fresh.authorize(world.bot, "type_text", pc, args={"text": "x"}).allowed
    assert not fresh.authorize(world.admin, "set_clipboard", pc, args={"text": "x"}).allowed
    ok = fresh.authorize(world.bot, "open_url", pc, args={"url": "https://docs.example.com/a"})
    assert not ok.allowed  # open_url drives the desktop: read-only refuses it as well
    other = world.acquire("gpu", world.other)
    p.fix_controls(other.id, Controls(allowed_hosts=("docs.example.com",)))
    pc2 = p.session(other, pc=True)
    assert p.authorize(
        world.other, "open_url", pc2, args={"url": "https://docs.example.com/"}
    ).allowed
    denied = p.authorize(world.other, "open_url", pc2, args={"url": "https://evil.test/"})
    assert not denied.allowed and denied.policies == ("system-session-allowed-hosts",)


def test_approval_flow(world: World) -> None:
    p = world.policy
    p.add_policy("curl-needs-approval", CURL_NEEDS_APPROVAL, principal=world.admin)
    session = world.acquire("main", world.bot)
    pc = p.session(session, pc=True)
    curl = {"argv": ["curl", "https://example.com"]}
    assert p.authorize(world.bot, "run_command", pc, args={"argv": ["ls"]}).allowed
    with pytest.raises(ApprovalPendingError) as pending:
        p.require(world.bot, "run_command", pc, args=curl)
    approval_id = pending.value.approval_id
    again = p.authorize(world.bot, "run_command", pc, args=curl)  # no second request
    assert again.approval_id == approval_id and again.approval_state == "pending"
    # the sponsor sees it, another sponsor does not
    assert [a.id for a in p.list_approvals(principal=world.sam)] == [approval_id]
    assert p.list_approvals(principal=world.eve) == []
    assert [a.id for a in p.list_approvals(principal=world.admin)] == [approval_id]
    with pytest.raises(PermissionDeniedError):
        p.decide_approval(approval_id, approve=True, principal=world.eve)
    with pytest.raises(PermissionDeniedError):
        p.decide_approval(approval_id, approve=True, principal=world.bot)
    approved = p.decide_approval(approval_id, approve=True, principal=world.sam)
    assert approved.state is ApprovalState.APPROVED and approved.decided_by == world.sam.id
    allowed = p.authorize(world.bot, "run_command", pc, args=curl)
    assert allowed.allowed and allowed.approval_id == approval_id
    # the approval covers this request shape only
    with pytest.raises(ApprovalPendingError):
        p.require(world.bot, "run_command", pc, args={"argv": ["curl", "https://other.test"]})
    # and expires
    world.clock.now += timedelta(minutes=16)
    with pytest.raises(ApprovalPendingError) as later:
        p.require(world.bot, "run_command", pc, args=curl)
    assert later.value.approval_id != approval_id
    denied = p.decide_approval(later.value.approval_id, approve=False, principal=world.sam)
    assert denied.state is ApprovalState.DENIED
    with pytest.raises(PermissionDeniedError, match="denied by a sponsor"):
        p.require(world.bot, "run_command", pc, args=curl)
    with pytest.raises(ConflictError):
        p.decide_approval(later.value.approval_id, approve=True, principal=world.sam)
    with pytest.raises(NotFoundError):
        p.decide_approval("ap-nope", approve=True, principal=world.sam)


def test_unanswered_and_denied_approvals_expire(world: World) -> None:
    """A sponsor has `approval_wait` to answer; an answer stands for `approval_valid`. After
    either, the approval is expired: it cannot be answered, and the next request asks anew."""
    p = world.policy
    p.add_policy("curl-needs-approval", CURL_NEEDS_APPROVAL, principal=world.admin)
    pc = p.session(world.acquire("main", world.bot), pc=True)
    curl = {"argv": ["curl", "https://example.com"]}
    with pytest.raises(ApprovalPendingError, match="waits for a sponsor") as first:
        p.require(world.bot, "run_command", pc, args=curl)
    assert "corral approvals approve " + first.value.approval_id in (first.value.hint or "")
    assert "within 15 minutes" in (first.value.hint or "")
    pending = ApprovalState.PENDING
    world.clock.now += timedelta(minutes=14)
    assert [a.id for a in p.list_approvals(principal=world.sam, state=pending)] == [
        first.value.approval_id
    ]
    world.clock.now += timedelta(minutes=2)  # nobody answered in 15 minutes
    assert p.list_approvals(principal=world.sam, state=pending) == []
    (expired,) = p.list_approvals(principal=world.sam, state=ApprovalState.EXPIRED)
    assert expired.id == first.value.approval_id and expired.decided_by is None
    with pytest.raises(ConflictError, match="already expired"):
        p.decide_approval(expired.id, approve=True, principal=world.sam)
    with pytest.raises(ApprovalPendingError) as second:
        p.require(world.bot, "run_command", pc, args=curl)
    assert second.value.approval_id != first.value.approval_id
    denied = p.decide_approval(second.value.approval_id, approve=False, principal=world.sam)
    assert denied.decided_at == world.clock.now
    assert denied.expires_at == world.clock.now + timedelta(minutes=15)
    with pytest.raises(PermissionDeniedError, match="denied by a sponsor") as refused:
        p.require(world.bot, "run_command", pc, args=curl)
    assert not isinstance(refused.value, ApprovalPendingError)
    assert "a sponsor refused this exact request" in (refused.value.hint or "")
    world.clock.now += timedelta(minutes=16)  # the refusal expired: ask again
    with pytest.raises(ApprovalPendingError) as third:
        p.require(world.bot, "run_command", pc, args=curl)
    assert third.value.approval_id not in (first.value.approval_id, second.value.approval_id)


def test_session_control_refusals_say_which_control(world: World) -> None:
    p = world.policy
    session = world.acquire("main", world.bot)
    p.fix_controls(
        session.id, Controls(read_only=True, no_file_transfer=True, allowed_hosts=("a.test",))
    )
    pc = p.session(session, pc=True)
    with pytest.raises(PermissionDeniedError) as typed:
        p.require(world.bot, "type_text", pc, args={"text": "x"})
    assert "system-session-read-only" in typed.value.message
    assert "this session is read-only" in (typed.value.hint or "")
    with pytest.raises(PermissionDeniedError) as read:
        p.require(world.bot, "read_file", pc, args={"path": "/etc/hostname"})
    assert "may not read or write files" in (read.value.hint or "")
    other = world.acquire("gpu", world.other)
    p.fix_controls(other.id, Controls(allowed_hosts=("a.test", "b.test")))
    with pytest.raises(PermissionDeniedError) as opened:
        p.require(world.other, "open_url", p.session(other, pc=True), args={"url": "http://c/"})
    assert opened.value.hint == "this session may open only these hosts: a.test, b.test"


@pytest.mark.anyio
async def test_wait_for_approval_returns_when_answered(world: World) -> None:
    import asyncio

    p = world.policy
    p.add_policy("curl-needs-approval", CURL_NEEDS_APPROVAL, principal=world.admin)
    pc = p.session(world.acquire("main", world.bot), pc=True)
    decision = p.authorize(world.bot, "run_command", pc, args={"argv": ["curl", "x"]})
    assert decision.approval_id
    approval_id = decision.approval_id
    waiting = asyncio.create_task(p.wait_for_approval(approval_id, 10))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await asyncio.to_thread(p.decide_approval, approval_id, approve=True, principal=world.sam)
    answered = await asyncio.wait_for(waiting, 5)
    assert answered.state is ApprovalState.APPROVED
    timed_out = await p.wait_for_approval(approval_id, 0)
    assert timed_out.state is ApprovalState.APPROVED


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- issue 9, section 5: controls and policy arguments mean what they say ---------------------

NO_CURL = (
    'forbid (principal, action in [Action::"run_command", Action::"launch_app"], resource)\n'
    'when { context has args && context.args has program && context.args.program == "curl" };'
)
NO_SSH_KEYS = (
    'forbid (principal, action in [Action::"read_file", Action::"write_file"], resource)\n'
    "when { context has args && context.args has path &&\n"
    '  context.args.path like "/home/user/.ssh/*" };'
)


def _why(decision: Decision) -> tuple[str, ...]:
    return decision.policies


def test_controls_hold_against_the_tools_that_step_around_them(world: World) -> None:
    """A shell or `chromium URL` would read the clipboard, move files out or open any host."""
    p = world.policy
    cases = {
        "no_clipboard": Controls(no_clipboard=True),
        "no_file_transfer": Controls(no_file_transfer=True),
        "allowed_hosts": Controls(allowed_hosts=("allowed.example",)),
    }
    owners = ((world.bot, "main"), (world.other, "gpu"), (world.admin, "gpu"))
    for (name, controls), (caller, pool) in zip(cases.items(), owners, strict=True):
        session = world.acquire(pool, caller)
        p.fix_controls(session.id, controls)
        pc = p.session(session, pc=True)
        for tool, args in (
            ("run_command", {"argv": ["xclip", "-o"]}),
            ("run_command", {"command": "base64 ~/secret"}),
            ("launch_app", {"command": ["chromium", "http://other.example/"]}),
        ):
            for who in (caller, world.admin):  # controls bind admins too
                denied = p.authorize(who, tool, pc, args=args)
                assert not denied.allowed, (name, tool)
                assert "system-session-controls-hold" in _why(denied), (name, denied)
        # a program with no arguments stays (its window takes only mouse and keyboard), but
        # not a bare terminal or browser: typed commands and URLs would step around the controls
        assert p.authorize(caller, "launch_app", pc, args={"command": ["xclock"]}).allowed
        for bare in (["xterm"], ["chromium"], ["x-www-browser"], ["/tmp/xclock"]):
            assert not p.authorize(caller, "launch_app", pc, args={"command": bare}).allowed
        with pytest.raises(PermissionDeniedError, match="allow_alongside"):
            p.require(caller, "run_command", pc, args={"argv": ["xclip", "-o"]})
    # without controls nothing changes
    free = p.session(world.acquire("main", world.other), pc=True)
    assert p.authorize(world.other, "run_command", free, args={"argv": ["ls"]}).allowed


def test_a_permit_may_allow_the_tools_alongside_the_controls(world: World) -> None:
    p = world.policy
    p.add_policy(
        "team-commands-alongside",
        '@allow_alongside("run_command")\n'
        'permit (principal in Group::"team", action == Action::"acquire", resource);',
        principal=world.admin,
    )
    decision = p.authorize(world.bot, "acquire", p.pool("main"))
    controls = p.acquire_controls(decision, Controls(no_clipboard=True))
    assert controls.allow_alongside == ("run_command",)
    session = world.acquire("main", world.bot)
    p.fix_controls(session.id, controls)
    fresh = PolicyService(world.store)  # the exemption is stored with the controls
    pc = fresh.session(session, pc=True)
    assert fresh.authorize(world.bot, "run_command", pc, args={"argv": ["ls"]}).allowed
    assert not fresh.authorize(world.bot, "get_clipboard", pc).allowed
    launched = fresh.authorize(world.bot, "launch_app", pc, args={"command": ["chromium", "x"]})
    assert not launched.allowed  # only what the permit names
    with pytest.raises(InvalidInputError, match="@allow_alongside"):
        p.add_policy(
            "typo",
            '@allow_alongside("run_comand")\n'
            'permit (principal in Group::"team", action == Action::"acquire", resource);',
            principal=world.admin,
        )


@pytest.mark.parametrize(
    "args",
    [
        {"command": "curl https://x/"},
        {"command": "FOO=1 curl https://x/"},
        {"command": "/usr/bin/env curl https://x/"},
        {"command": "sh -c 'curl https://x/'"},
        {"command": "true | curl https://x/"},
        {"command": "c''url https://x/"},
        {"argv": ["curl", "https://x/"]},
        {"argv": ["/usr/bin/curl", "https://x/"]},
        {"argv": ["/usr/bin/../bin/curl", "https://x/"]},
        {"argv": ["/usr/bin/env", "curl", "https://x/"]},
        {"argv": ["sh", "-c", "curl https://x/"]},
        {"argv": ["xargs", "curl"]},
        # found by review: versioned interpreters, launchers, and a copy named otherwise
        {"argv": ["python3.11", "-c", "import os; os.system('curl https://x/')"]},
        {"argv": ["perl5.36.0", "-e", "system('curl https://x/')"]},
        {"argv": ["dbus-run-session", "--", "curl", "https://x/"]},
        {"argv": ["tar", "cf", "/dev/null", "--checkpoint-action=exec=curl https://x/", "."]},
        {"argv": ["/tmp/ls", "https://x/"]},
    ],
)
def test_a_program_rule_holds_against_every_spelling(world: World, args: dict[str, Any]) -> None:
    p = world.policy
    pc = p.session(world.acquire("main", world.bot), pc=True)
    assert p.authorize(world.bot, "run_command", pc, args={"command": "ls"}).allowed
    p.add_policy("no-curl", NO_CURL, principal=world.admin)
    denied = p.authorize(world.bot, "run_command", pc, args=args)
    assert not denied.allowed, denied
    assert set(_why(denied)) & {"no-curl", "system-program-rules-need-argv"}, denied
    # the program itself, named in argv, runs; a shell line no longer does
    assert p.authorize(world.bot, "run_command", pc, args={"argv": ["ls", "-l"]}).allowed
    shell = p.authorize(world.bot, "run_command", pc, args={"command": "ls"})
    assert _why(shell) == ("system-program-rules-need-argv",)
    with pytest.raises(PermissionDeniedError, match="argv"):
        p.require(world.bot, "run_command", pc, args={"command": "ls"})
    # a copy outside the system folders is not the program its name says (cp /bin/sh /tmp/ls)
    copy = p.authorize(world.bot, "run_command", pc, args={"argv": ["/tmp/ls", "-l"]})
    assert _why(copy) == ("system-program-rules-need-argv",)
    # the rule gone, shell mode is back
    p.remove_policy("no-curl", principal=world.admin)
    assert p.authorize(world.bot, "run_command", pc, args={"command": "ls"}).allowed


@pytest.mark.parametrize(
    "path", [".ssh/id_rsa", "~/.ssh/id_rsa", "/home/user/.ssh/id_rsa", "./.ssh//id_rsa"]
)
def test_a_path_rule_holds_for_home_relative_paths(world: World, path: str) -> None:
    p = world.policy
    p.add_policy("no-ssh-keys", NO_SSH_KEYS, principal=world.admin)
    pc = p.session(world.acquire("main", world.bot), pc=True)
    denied = p.authorize(world.bot, "read_file", pc, args={"path": path})
    assert not denied.allowed and _why(denied) == ("no-ssh-keys",)
    assert p.authorize(world.bot, "read_file", pc, args={"path": "notes.txt"}).allowed


def test_open_url_takes_web_schemes_and_the_browsers_host(world: World) -> None:
    p = world.policy
    pc = p.session(world.acquire("main", world.bot), pc=True)
    for url in ("file:///etc/passwd", "javascript:alert(1)", "data:text/html,x", "about:blank"):
        denied = p.authorize(world.bot, "open_url", pc, args={"url": url})
        assert _why(denied) == ("system-open-url-web-schemes",), url
    assert p.authorize(world.bot, "open_url", pc, args={"url": "https://x.example/"}).allowed
    # allowed_hosts sees the host the browser will connect to
    other = world.acquire("gpu", world.other)
    p.fix_controls(other.id, Controls(allowed_hosts=("allowed",)))
    pc2 = p.session(other, pc=True)
    for url in ("http://evil\\@allowed/", "http://allowed@evil/", "http://evil/?allowed"):
        denied = p.authorize(world.other, "open_url", pc2, args={"url": url})
        assert "system-session-allowed-hosts" in _why(denied), url
    for url in ("HTTP://ALLOWED./", "http://Allowed/x"):
        assert p.authorize(world.other, "open_url", pc2, args={"url": url}).allowed, url
    # another scheme needs a permit of the acquire to say so
    p.add_policy(
        "team-files-in-browser",
        '@allow_schemes("file")\n'
        'permit (principal in Group::"team", action == Action::"acquire", resource);',
        principal=world.admin,
    )
    granted = p.acquire_controls(p.authorize(world.bot, "acquire", p.pool("main")))
    third = world.acquire("main", world.admin)
    p.fix_controls(third.id, granted)
    pc3 = p.session(third, pc=True)
    assert p.authorize(world.admin, "open_url", pc3, args={"url": "file:///tmp/a.html"}).allowed
    assert not p.authorize(world.admin, "open_url", pc3, args={"url": "javascript:1"}).allowed

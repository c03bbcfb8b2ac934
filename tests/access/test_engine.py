"""The policy engine on the shipped policies: a decision matrix, forbid over permit, default deny,
session controls, invalid policies refused with Cedar's message. Pure: no store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import cedarpy
import pytest

from corral.access import (
    DEFAULT_POLICIES,
    SYSTEM_POLICIES,
    CompiledPolicies,
    Compliance,
    Controls,
    DirectoryView,
    EntityRef,
    NamedPolicy,
    PolicyEngine,
    PolicyError,
    PoolAssignments,
    RequestFacts,
    ToolAction,
    build_context,
    directory_records,
    pool_record,
    session_records,
    tool_args,
)
from corral.access.schema import ADMIN_ACTIONS, LENDING_ACTIONS, action_ancestors
from corral.domain.identity import Agent, Group, Risk, Role, User
from corral.domain.models import Pool, PoolSpec, Session, SessionState
from corral.lifecycle.tools import TOOLS

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
TOOL_ACTIONS = [ToolAction(t.name, t.input_tool) for t in TOOLS.values()]


def _user(ident: str, name: str, *roles: Role, groups: tuple[str, ...] = ()) -> User:
    return User(ident, name, frozenset(roles), T0, groups=groups)


def _agent(ident: str, name: str, risk: Risk = Risk.NONE, groups: tuple[str, ...] = ()) -> Agent:
    return Agent(ident, name, T0, sponsors=("u-sam",), groups=groups, risk=risk)


USERS = [
    _user("u-alice", "alice", Role.ADMIN),
    _user("u-sam", "sam", Role.SPONSOR),
    _user("u-sec", "sec", Role.SECURITY_ADMIN),
    _user("u-eve", "eve"),
]
AGENTS = [
    _agent("a-bot", "bot", groups=("team",)),
    _agent("a-other", "other"),
    _agent("a-rogue", "rogue", Risk.HIGH, groups=("team",)),
]
GROUPS = [Group("g-team", "team", T0)]
VIEW = DirectoryView.of(USERS, AGENTS, GROUPS)
POOLS = {
    "default": (Pool(PoolSpec("default", "minimal"), T0), PoolAssignments(groups=("g-team",))),
    "gpu": (Pool(PoolSpec("gpu", "desktop"), T0), PoolAssignments(agents=("a-other",))),
    "closed": (Pool(PoolSpec("closed", "minimal"), T0), PoolAssignments()),
}


def _session(ident: str, pc: str, owner: str) -> Session:
    return Session(ident, "default", pc, SessionState.ACTIVE, T0, T0, T0, owner=owner)


SESSIONS = {
    "s-bot": _session("s-bot", "pc-bot", "a-bot"),
    "s-other": _session("s-other", "pc-other", "a-other"),
    "s-alice": _session("s-alice", "pc-alice", "u-alice"),
}


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(TOOL_ACTIONS)


@pytest.fixture(scope="module")
def shipped(engine: PolicyEngine) -> CompiledPolicies:
    return engine.compile([*DEFAULT_POLICIES, *SYSTEM_POLICIES], version=1)


@pytest.fixture(scope="module")
def entities(engine: PolicyEngine) -> cedarpy.Entities:
    records = directory_records(VIEW)
    records += [pool_record(pool, assigned) for pool, assigned in POOLS.values()]
    for s in SESSIONS.values():
        owner = VIEW.principal(s.owner or "")
        agent = VIEW.agents.get(s.owner or "")
        records += session_records(s, owner, VIEW.sponsor_ids(agent) if agent else ())
    return engine.entities(records)


def _risk(principal: EntityRef) -> Risk:
    agent = VIEW.agents.get(principal.id) if principal.type == "Agent" else None
    return agent.risk if agent else Risk.NONE


def decide(
    engine: PolicyEngine,
    policies: CompiledPolicies,
    entities: cedarpy.Entities,
    principal: str,
    action: str,
    resource: str,
    **context: Any,
) -> bool:
    who = EntityRef.parse(principal)
    ctx = build_context(risk=_risk(who), facts=RequestFacts(now=T0), **context)
    decision = engine.decide(policies, who, action, EntityRef.parse(resource), ctx, entities)
    assert not decision.errors, decision.errors
    return decision.allowed


# entities are the directory's ids (names are the `name` attribute)
BOT, OTHER, ROGUE = 'Agent::"a-bot"', 'Agent::"a-other"', 'Agent::"a-rogue"'
ALICE, SAM, SEC, EVE = 'User::"u-alice"', 'User::"u-sam"', 'User::"u-sec"', 'User::"u-eve"'
MATRIX = [
    # acquire: assigned pools only (to the agent or one of its groups); admins anything
    (BOT, "acquire", 'Pool::"default"', True),
    (BOT, "acquire", 'Pool::"gpu"', False),
    (OTHER, "acquire", 'Pool::"gpu"', True),
    (OTHER, "acquire", 'Pool::"default"', False),
    (BOT, "acquire", 'Pool::"closed"', False),
    (ALICE, "acquire", 'Pool::"closed"', True),
    (EVE, "acquire", 'Pool::"default"', False),
    (ROGUE, "acquire", 'Pool::"default"', False),  # assigned via team, but high risk: forbid wins
    # every agent may read pools; a plain user may not
    (BOT, "read_pool", 'Pool::"gpu"', True),
    (EVE, "read_pool", 'Pool::"gpu"', False),
    # tools: in one's own session only
    (BOT, "run_command", 'PC::"pc-bot"', True),
    (BOT, "click", 'PC::"pc-bot"', True),
    (BOT, "run_command", 'PC::"pc-other"', False),
    (OTHER, "screenshot", 'PC::"pc-bot"', False),
    (ALICE, "run_command", 'PC::"pc-bot"', True),
    (SAM, "screenshot", 'PC::"pc-bot"', False),
    # session reads and release
    (BOT, "release", 'Session::"s-bot"', True),
    (BOT, "release", 'Session::"s-other"', False),
    (BOT, "read_session", 'Session::"s-other"', False),
    (ALICE, "release", 'Session::"s-bot"', True),
    # sponsors watch their agents' sessions but do not drive them
    (SAM, "observe", 'Session::"s-bot"', True),
    (SAM, "read_session", 'Session::"s-bot"', True),
    (SAM, "release", 'Session::"s-bot"', False),
    (SAM, "observe", 'Session::"s-alice"', False),
    (EVE, "observe", 'Session::"s-bot"', False),
    (SEC, "observe", 'Session::"s-bot"', True),
    (BOT, "observe", 'Session::"s-other"', False),
    (BOT, "observe", 'Session::"s-bot"', True),  # its own
    # approvals: the agent's sponsors
    (SAM, "approve", BOT, True),
    (EVE, "approve", BOT, False),
    # administration: admins; security admins read
    (ALICE, "create_pool", 'Pool::"new"', True),
    (ALICE, "manage_directory", 'Directory::"directory"', True),
    (SEC, "read_audit", 'AuditLog::"audit"', True),
    (SEC, "manage_policies", 'Policy::"x"', False),
    (SEC, "read_policies", 'Policy::"x"', True),
    (BOT, "create_pool", 'Pool::"new"', False),
    (BOT, "manage_policies", 'Policy::"x"', False),
    (SAM, "delete_pool", 'Pool::"default"', False),
    (EVE, "read_directory", 'Directory::"directory"', False),
]


@pytest.mark.parametrize(("principal", "action", "resource", "expected"), MATRIX)
def test_shipped_policies_matrix(
    engine: PolicyEngine,
    shipped: CompiledPolicies,
    entities: cedarpy.Entities,
    principal: str,
    action: str,
    resource: str,
    expected: bool,
) -> None:
    assert decide(engine, shipped, entities, principal, action, resource) is expected


def test_decision_names_the_determining_policies(
    engine: PolicyEngine, shipped: CompiledPolicies, entities: cedarpy.Entities
) -> None:
    ctx = build_context(risk=Risk.HIGH, facts=RequestFacts(now=T0))
    denied = engine.decide(
        shipped,
        EntityRef("Agent", "a-rogue"),
        "acquire",
        EntityRef("Pool", "default"),
        ctx,
        entities,
    )
    assert not denied.allowed and denied.forbidden
    assert denied.policies == ("high-risk-agents-blocked",)
    assert "denied by high-risk-agents-blocked" in denied.reason
    ctx = build_context(risk=Risk.NONE, facts=RequestFacts(now=T0))
    allowed = engine.decide(
        shipped, EntityRef("Agent", "a-bot"), "acquire", EntityRef("Pool", "default"), ctx, entities
    )
    assert allowed.allowed and allowed.policies == ("agents-acquire-assigned-pools",)
    nobody = engine.decide(
        shipped, EntityRef("Agent", "a-bot"), "acquire", EntityRef("Pool", "gpu"), ctx, entities
    )
    assert not nobody.allowed and not nobody.forbidden and nobody.policies == ()
    assert nobody.reason == "denied: no policy permits it"


def test_risk_in_context_decides(
    engine: PolicyEngine, shipped: CompiledPolicies, entities: cedarpy.Entities
) -> None:
    """The forbid reads the request's risk: the same agent at high risk is refused."""
    who, pc = EntityRef("Agent", "a-bot"), EntityRef("PC", "pc-bot")
    for risk, expected in [(Risk.NONE, True), (Risk.MEDIUM, True), (Risk.HIGH, False)]:
        ctx = build_context(risk=risk, facts=RequestFacts(now=T0))
        assert engine.decide(shipped, who, "screenshot", pc, ctx, entities).allowed is expected


def test_empty_policy_set_denies_everything(
    engine: PolicyEngine, entities: cedarpy.Entities
) -> None:
    empty = engine.compile([], version=0)
    for principal, action, resource, _ in MATRIX:
        assert decide(engine, empty, entities, principal, action, resource) is False


def test_forbid_overrides_permit(engine: PolicyEngine, entities: cedarpy.Entities) -> None:
    both = engine.compile(
        [
            NamedPolicy("everyone", "permit (principal, action, resource);"),
            NamedPolicy(
                "no-curl",
                'forbid (principal, action == Action::"run_command", resource)\n'
                "when { context has args && context.args has program &&\n"
                '  context.args.program == "curl" };',
            ),
        ],
        version=2,
    )
    who, pc = EntityRef("Agent", "a-bot"), EntityRef("PC", "pc-bot")
    for command, expected in [
        ("ls -l", True),
        ("curl http://x", False),
        ("/usr/bin/curl x", False),
    ]:
        ctx = build_context(
            risk=Risk.NONE,
            facts=RequestFacts(now=T0),
            args=tool_args("run_command", {"command": command}),
        )
        decision = engine.decide(both, who, "run_command", pc, ctx, entities)
        assert decision.allowed is expected, command
        assert decision.policies == (("everyone",) if expected else ("no-curl",))


@pytest.mark.parametrize(
    ("controls", "tool", "args", "expected"),
    [
        (Controls(read_only=True), "screenshot", {}, True),
        (Controls(read_only=True), "click", {"x": 1, "y": 1}, False),
        (Controls(read_only=True), "type_text", {"text": "x"}, False),
        (Controls(read_only=True), "run_command", {"command": "ls"}, False),
        (Controls(read_only=True), "write_file", {"path": "a", "content": ""}, False),
        (Controls(read_only=True), "read_file", {"path": "a"}, True),
        (Controls(no_clipboard=True), "get_clipboard", {}, False),
        (Controls(no_clipboard=True), "set_clipboard", {"text": "x"}, False),
        (Controls(no_clipboard=True), "type_text", {"text": "x"}, True),
        (Controls(no_file_transfer=True), "read_file", {"path": "a"}, False),
        (Controls(no_file_transfer=True), "write_file", {"path": "a", "content": ""}, False),
        (Controls(no_file_transfer=True), "list_directory", {"path": "a"}, True),
        (
            Controls(allowed_hosts=("example.com",)),
            "open_url",
            {"url": "https://example.com/x"},
            True,
        ),
        (
            Controls(allowed_hosts=("example.com",)),
            "open_url",
            {"url": "https://EXAMPLE.com:8/"},
            True,
        ),
        (
            Controls(allowed_hosts=("example.com",)),
            "open_url",
            {"url": "https://evil.test/"},
            False,
        ),
        (
            Controls(allowed_hosts=("example.com",)),
            "open_url",
            {"url": "file:///etc/passwd"},
            False,
        ),
        (Controls(allowed_hosts=()), "open_url", {"url": "https://example.com/"}, False),
        (Controls(), "open_url", {"url": "https://evil.test/"}, True),
    ],
)
def test_session_controls(
    engine: PolicyEngine,
    shipped: CompiledPolicies,
    entities: cedarpy.Entities,
    controls: Controls,
    tool: str,
    args: dict[str, Any],
    expected: bool,
) -> None:
    """Controls bind everyone acting in the session, admins included."""
    for who in (EntityRef("Agent", "a-bot"), EntityRef("User", "u-alice")):
        ctx = build_context(
            risk=Risk.NONE,
            facts=RequestFacts(now=T0),
            controls=controls,
            args=tool_args(tool, args),
        )
        decision = engine.decide(shipped, who, tool, EntityRef("PC", "pc-bot"), ctx, entities)
        assert decision.allowed is expected, (who, decision.reason)


def test_context_facts_reach_policies(engine: PolicyEngine, entities: cedarpy.Entities) -> None:
    """Client network, time, token binding and PC compliance are there to write policies on."""
    policies = engine.compile(
        [
            NamedPolicy(
                "office-hours",
                'permit (principal, action == Action::"screenshot", resource)\n'
                'when { context has client_ip && context.client_ip.isInRange(ip("10.0.0.0/8"))'
                " && context.hour >= 8 && context.hour < 18 };",
            ),
            NamedPolicy(
                "dpop-only",
                'forbid (principal, action, resource)\nunless { context.token_binding == "dpop" };',
            ),
            NamedPolicy(
                "healthy-pcs",
                "forbid (principal, action, resource)\n"
                "when { context has pc && !(context.pc.healthy && context.pc.image_current) };",
            ),
        ],
        version=3,
    )
    who, pc = EntityRef("Agent", "a-bot"), EntityRef("PC", "pc-bot")

    def ok(facts: RequestFacts, compliance: Compliance | None = None) -> bool:
        ctx = build_context(risk=Risk.NONE, facts=facts, pc=compliance)
        decision = engine.decide(policies, who, "screenshot", pc, ctx, entities)
        assert not decision.errors
        return decision.allowed

    inside = RequestFacts(now=T0, client_ip="10.1.2.3")
    assert ok(inside)
    assert ok(inside, Compliance())
    assert not ok(replace(inside, client_ip="192.0.2.7"))
    assert not ok(replace(inside, client_ip=None))
    assert not ok(replace(inside, client_ip="not-an-ip"))
    assert not ok(inside.at(T0.replace(hour=22)))
    assert not ok(replace(inside, binding="bearer"))
    assert not ok(inside, Compliance(healthy=False))
    assert not ok(inside, Compliance(image_current=False))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'permit (principal, action == Action::"fly", resource);',
            'unrecognized action `Action::"fly"`',
        ),
        (
            "permit (principal, action, resource) when { context.nope };",
            "attribute `nope` in context not found",
        ),
        (
            'permit (principal, action, resource) when { context.args.path == "/" };',
            "unable to guarantee safety of access to optional attribute `args`",
        ),
        ('permit (principal == Robot::"x", action, resource);', "unrecognized entity type `Robot`"),
        ("permit (principal, action, resource) whn { true };", "does not parse"),
        ("permit (principal == ?principal, action, resource);", "is a template"),
        ("// only a comment", "has no statement"),
        ("   ", "is empty"),
    ],
)
def test_invalid_policy_refused_with_cedars_message(
    engine: PolicyEngine, text: str, message: str
) -> None:
    with pytest.raises(PolicyError) as err:
        engine.parse(NamedPolicy("mine", text))
    assert message in str(err.value)
    assert "policy0" not in str(err.value)  # Cedar's positional id is replaced by the name


def test_policy_with_several_statements_gets_numbered_ids(engine: PolicyEngine) -> None:
    parsed = engine.parse(
        NamedPolicy(
            "two", "permit (principal, action, resource);\nforbid (principal, action, resource);"
        )
    )
    assert list(parsed) == ["two#1", "two#2"]
    with pytest.raises(PolicyError, match="two policies are named 'x'"):
        engine.compile([NamedPolicy("x", "permit (principal, action, resource);")] * 2, version=1)


def test_schema_has_one_action_per_tool_and_groups_resolve() -> None:
    """Tool actions come from the catalogue: a new tool is a new action, never a missing one."""
    ancestors = action_ancestors(TOOL_ACTIONS)
    assert set(TOOLS) | set(LENDING_ACTIONS) | set(ADMIN_ACTIONS) <= set(ancestors)
    for name, tool in TOOLS.items():
        assert "computer" in ancestors[name]
        assert ("input" in ancestors[name]) is tool.input_tool
        if tool.input_tool:
            assert "modify" in ancestors[name]
    assert {"run_command", "write_file", "set_clipboard"} <= {
        n for n, a in ancestors.items() if "modify" in a
    }
    for name in ADMIN_ACTIONS:
        assert "admin" in ancestors[name]


def test_slices_keep_decisions(engine: PolicyEngine, entities: cedarpy.Entities) -> None:
    """Leaving out policies whose action scope cannot match changes no decision."""
    policies = engine.compile(
        [
            *DEFAULT_POLICIES,
            NamedPolicy("a", 'permit (principal, action == Action::"wait", resource);'),
            NamedPolicy("b", 'forbid (principal, action in Action::"input", resource);'),
            NamedPolicy(
                "c",
                'permit (principal, action in [Action::"observe", Action::"screenshot"],'
                " resource);",
            ),
        ],
        version=4,
    )
    assert len(policies.for_action("click")) < len(policies.statements)
    whole = cedarpy.PolicySet.from_str(
        "\n".join(p.text for p in DEFAULT_POLICIES) + "\n"
        'permit (principal, action == Action::"wait", resource);\n'
        'forbid (principal, action in Action::"input", resource);\n'
        'permit (principal, action in [Action::"observe", Action::"screenshot"], resource);'
    )
    for principal, action, resource, _ in [
        *MATRIX,
        (BOT, "wait", 'PC::"pc-other"', None),
        (BOT, "click", 'PC::"pc-bot"', None),
        (EVE, "screenshot", 'PC::"pc-bot"', None),
        (EVE, "observe", 'Session::"s-bot"', None),
    ]:
        who = EntityRef.parse(principal)
        request = {
            "principal": who.to_json(),
            "action": {"type": "Action", "id": action},
            "resource": EntityRef.parse(resource).to_json(),
            "context": build_context(risk=_risk(who), facts=RequestFacts(now=T0)),
        }
        expected = cedarpy.is_authorized(request, whole, entities).allowed
        assert decide(engine, policies, entities, principal, action, resource) is expected


def test_engine_fails_closed(
    engine: PolicyEngine, shipped: CompiledPolicies, entities: cedarpy.Entities
) -> None:
    ctx = build_context(risk=Risk.NONE, facts=RequestFacts(now=T0))
    who, pool = EntityRef("User", "u-alice"), EntityRef("Pool", "default")
    unknown = engine.decide(shipped, who, "fly", pool, ctx, entities)
    assert not unknown.allowed and unknown.errors
    # strict: a context that does not match the schema is an error, hence a denial, even for
    # an admin whom no policy reads the context of
    broken = engine.decide(shipped, who, "acquire", pool, {**ctx, "risk": 3}, entities, strict=True)
    assert not broken.allowed and broken.errors
    # not strict: a badly typed attribute a policy reads is an evaluation error: denied too
    bot, pc = EntityRef("Agent", "a-bot"), EntityRef("PC", "pc-bot")
    assert engine.decide(shipped, bot, "screenshot", pc, ctx, entities).allowed
    typo = engine.decide(shipped, bot, "screenshot", pc, {**ctx, "risk_score": "3"}, entities)
    assert not typo.allowed and typo.errors
    missing = {k: v for k, v in ctx.items() if k != "risk_score"}
    gone = engine.decide(shipped, bot, "screenshot", pc, missing, entities)
    assert not gone.allowed and gone.errors
    group = engine.decide(shipped, who, "computer", pc, ctx, entities)
    assert not group.allowed and "unknown action" in group.errors[0]
    robot = engine.decide(shipped, EntityRef("Robot", "r"), "screenshot", pc, ctx, entities)
    assert not robot.allowed and robot.errors
    wrong_type = engine.decide(shipped, who, "acquire", EntityRef("PC", "pc-bot"), ctx, entities)
    assert not wrong_type.allowed and wrong_type.errors


def test_entity_ref_parsing() -> None:
    assert EntityRef.parse('Agent::"bot"') == EntityRef("Agent", "bot")
    assert str(EntityRef("PC", 'odd"id')) == 'PC::"odd\\"id"'
    for bad in ["Agent", "Agent::bot", '::"x"', 'Agent::"x', 'A b::"x"']:
        with pytest.raises(Exception, match="bad entity"):
            EntityRef.parse(bad)


def test_tool_args() -> None:
    assert tool_args("run_command", {"command": "/usr/bin/curl -s 'x y'"}) == {
        "command": "/usr/bin/curl -s 'x y'",
        "program": "curl",
        "program_path": "/usr/bin/curl",
        "argv": ["/usr/bin/curl", "-s", "x y"],
        "argc": 3,
        "shell": True,
    }
    assert tool_args("run_command", {"command": "echo 'unbalanced"})["program"] == "echo"
    assert tool_args("launch_app", {"command": ["/usr/bin/xterm", "-e", "top"]}) == {
        "program": "xterm",
        "program_path": "/usr/bin/xterm",
        "argv": ["/usr/bin/xterm", "-e", "top"],
        "argc": 3,
        "command": "/usr/bin/xterm -e top",
        "shell": True,  # a terminal runs what -e names
    }
    assert (
        tool_args("open_url", {"url": "https://Docs.Example.com:8443/a"})["host"]
        == "docs.example.com"
    )
    assert tool_args("read_file", {"path": "/tmp/../etc/passwd"}) == {"path": "/etc/passwd"}
    assert tool_args("write_file", {"path": "//etc//x", "content": ""}) == {"path": "/etc/x"}
    assert tool_args("screenshot", None) == {}


def test_controls_merge_and_parse() -> None:
    a = Controls.from_annotations(
        {"controls": "read_only, no_clipboard", "allowed_hosts": "a.test b.test"}
    )
    b = Controls.from_annotations({"allowed_hosts": "B.test c.test"})
    merged = a.merge(b)
    assert merged == Controls(read_only=True, no_clipboard=True, allowed_hosts=("b.test",))
    assert Controls().merge(Controls()) == Controls() and not Controls().any
    assert Controls.from_json(merged.to_json()) == merged
    with pytest.raises(Exception, match="unknown session control"):
        Controls.from_json({"read_only": True, "no_network": True})
    with pytest.raises(Exception, match="unknown session control"):
        Controls.from_annotations({"controls": "read_only sometimes"})
    with pytest.raises(Exception, match="true or false"):
        Controls.from_json({"read_only": "yes"})


def test_built_contexts_fit_the_schema(
    engine: PolicyEngine, shipped: CompiledPolicies, entities: cedarpy.Entities
) -> None:
    """The service decides without re-validating its own contexts: prove they always fit."""
    everything = build_context(
        risk=Risk.MEDIUM,
        facts=RequestFacts(now=T0, client_ip="2001:db8::1", binding="bearer", session_token=True),
        approved=True,
        pc=Compliance(healthy=False),
        controls=Controls(read_only=True, allowed_hosts=("a.test",)),
        args=tool_args("open_url", {"url": "https://a.test/x", "path": "/tmp/x"}),
    )
    minimal = build_context(risk=Risk.NONE, facts=RequestFacts(now=T0))
    bot, pc = EntityRef("Agent", "a-bot"), EntityRef("PC", "pc-bot")
    for ctx in (everything, minimal):
        for name in TOOLS:
            decision = engine.decide(shipped, bot, name, pc, ctx, entities, strict=True)
            assert not decision.errors, (name, decision.errors)
    for name in ("run_command", "launch_app", "read_file", "write_file", "list_directory"):
        raw = {"command": ["ls"]} if name == "launch_app" else {"command": "ls -l", "path": "a/b"}
        ctx = build_context(risk=Risk.NONE, facts=RequestFacts(now=T0), args=tool_args(name, raw))
        decision = engine.decide(shipped, bot, name, pc, ctx, entities, strict=True)
        assert not decision.errors, (name, decision.errors)

"""The act stage's routes: each catalogue operation to the pillar service that does it.

`lifecycle_gate(control)` is the server's Gate (REST, both MCP servers, the console): pools,
sessions and the computer tools over the `ControlPlane`, whose services decide policy with the
object in hand (`Route.decides`). `corral.gate.host` builds the host CLI's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from corral.access import EntityRef
from corral.access.service import PolicyService
from corral.domain.models import PoolSpec
from corral.domain.policy import ApprovalState
from corral.errors import InvalidInputError
from corral.gate._gate import Gate, GateCall, PolicyAuthorizer, Route
from corral.gate.operations import (
    Acquire,
    AddPolicy,
    AgentRisk,
    AssignPool,
    AuditConsistency,
    AuditEntries,
    AuditInclusion,
    CreateAgent,
    CreateGroup,
    CreateUser,
    DecideApproval,
    DisableAgent,
    GroupMember,
    ListApprovals,
    ListSessions,
    PolicyChanges,
    PolicyEnabled,
    PoolCreate,
    RevokeKey,
    RotateKey,
    Sponsor,
    TestPolicy,
    UserRoles,
    parse_model,
)

if TYPE_CHECKING:
    from corral.audit.service import AuditService
    from corral.identity.directory_service import DirectoryService
    from corral.lifecycle.control import ControlPlane

__all__ = [
    "audit_routes",
    "control_routes",
    "directory_routes",
    "lifecycle_gate",
    "policy_routes",
]


def _model(call: GateCall, model: type[Any]) -> Any:
    """The arguments as `model`: adapters pass the model they validated; a mapping (or
    nothing) is validated here."""
    args = call.args
    if isinstance(args, model):
        return args
    return parse_model(call.operation.name, model, args)


def control_routes(control: ControlPlane) -> tuple[dict[str, Route], Route]:
    """(routes by operation name, the computer tools' route) over `control`."""

    async def list_pools(call: GateCall) -> Any:
        return await asyncio.to_thread(lambda: control.list_pools(principal=call.caller))

    async def show_pool(call: GateCall) -> Any:
        name = call.target or ""
        return await asyncio.to_thread(lambda: control.get_pool(name, principal=call.caller))

    async def list_pool_pcs(call: GateCall) -> Any:
        name = call.target or ""
        return await asyncio.to_thread(lambda: control.list_pool_pcs(name, principal=call.caller))

    async def create_pool(call: GateCall) -> Any:
        body: PoolCreate = _model(call, PoolCreate)
        return await control.create_pool(PoolSpec(**body.model_dump()), principal=call.caller)

    async def delete_pool(call: GateCall) -> Any:
        return await control.delete_pool(call.target or "", principal=call.caller)

    async def acquire(call: GateCall) -> Any:
        a: Acquire = _model(call, Acquire)
        # What an Idempotency-Key stands for: the whole request (REST's body, the gateway's
        # arguments but the pool, which is the target).
        request = a.model_dump(exclude_none=True, include={"wait_s", "controls"})
        return await control.acquire_grant(
            call.target or "",
            idempotency_key=a.idempotency_key,
            request=request,
            wait_s=a.wait_s,
            principal=call.caller,
        )

    async def release(call: GateCall) -> Any:
        return await control.release(
            call.target or "",
            call.reason or "released",
            principal=call.caller,
            on_behalf_of=call.on_behalf_of,
        )

    async def list_sessions(call: GateCall) -> Any:
        a: ListSessions = _model(call, ListSessions)
        return await asyncio.to_thread(
            lambda: control.list_sessions(a.active, principal=call.caller)
        )

    async def show_session(call: GateCall) -> Any:
        sid = call.target or ""
        return await asyncio.to_thread(lambda: control.describe(sid, principal=call.caller))

    async def session_grant(call: GateCall) -> Any:
        sid = call.target or ""
        return await asyncio.to_thread(lambda: control.grant(sid, principal=call.caller))

    async def observe(call: GateCall) -> Any:
        return await control.peek_screenshot(call.target or "", principal=call.caller)

    async def list_approvals(call: GateCall) -> Any:
        a: ListApprovals = _model(call, ListApprovals)
        state = ApprovalState(a.state) if a.state else None
        return await asyncio.to_thread(
            lambda: control.policy.list_approvals(principal=call.caller, state=state)
        )

    async def decide_approval(call: GateCall) -> Any:
        a: DecideApproval = _model(call, DecideApproval)
        approval_id = call.target or ""
        return await asyncio.to_thread(
            lambda: control.policy.decide_approval(
                approval_id, approve=a.approve, principal=call.caller
            )
        )

    async def tool(call: GateCall) -> Any:
        # The hot path: straight to the control plane, which validates the arguments and runs
        # the session's actions one at a time, in order.
        return await control.act(
            call.target or "",
            call.operation.name,
            call.args,
            principal=call.caller,
            approval_wait_s=call.wait_s,
        )

    routes = {
        "list_pools": Route(list_pools),
        "show_pool": Route(show_pool),
        "list_pool_pcs": Route(list_pool_pcs),
        "create_pool": Route(create_pool),
        "delete_pool": Route(delete_pool),
        "acquire": Route(acquire),
        "release": Route(release),
        "list_sessions": Route(list_sessions),
        "show_session": Route(show_session),
        "session_grant": Route(session_grant),
        "observe": Route(observe),
        "list_approvals": Route(list_approvals),
        "decide_approval": Route(decide_approval),
    }
    return routes, Route(tool)


def _threaded(fn: Callable[[GateCall], Any]) -> Route:
    """A route over a blocking service call that decides policy itself."""

    async def run(call: GateCall) -> Any:
        return await asyncio.to_thread(fn, call)

    return Route(run)


def directory_routes(service: DirectoryService) -> dict[str, Route]:
    """The directory operations over `DirectoryService` (it asks policy for each)."""

    def ref(call: GateCall) -> str:
        return call.target or ""

    def create_user(call: GateCall) -> Any:
        a: CreateUser = _model(call, CreateUser)
        return service.create_user(
            a.name, roles=a.roles, email=a.email, password=a.password, principal=call.caller
        )

    def create_agent(call: GateCall) -> Any:
        a: CreateAgent = _model(call, CreateAgent)
        life = None if a.key_lifetime_s is None else timedelta(seconds=a.key_lifetime_s)
        return service.create_agent(
            a.name, sponsors=a.sponsors, groups=a.groups, key_lifetime=life, principal=call.caller
        )

    def rotate_key(call: GateCall) -> Any:
        a: RotateKey = _model(call, RotateKey)
        grace = timedelta(seconds=a.grace_s)
        return service.rotate_key(ref(call), grace, principal=call.caller)

    def set_member(call: GateCall) -> Any:
        a: GroupMember = _model(call, GroupMember)
        return service.set_member(ref(call), a.kind, a.member, a.present, principal=call.caller)

    def create_group(call: GateCall) -> Any:
        a: CreateGroup = _model(call, CreateGroup)
        return service.create_group(a.name, a.description, principal=call.caller)

    routes: dict[str, Callable[[GateCall], Any]] = {
        "list_users": lambda c: service.list_users(principal=c.caller),
        "show_user": lambda c: service.get_user(ref(c), principal=c.caller),
        "create_user": create_user,
        "set_user_roles": lambda c: service.set_user_roles(
            ref(c), _model(c, UserRoles).roles, principal=c.caller
        ),
        "disable_user": lambda c: service.disable_user(ref(c), principal=c.caller),
        "enable_user": lambda c: service.enable_user(ref(c), principal=c.caller),
        "revoke_user_tokens": lambda c: service.revoke_user_tokens(ref(c), principal=c.caller),
        "list_agents": lambda c: service.list_agents(principal=c.caller),
        "show_agent": lambda c: service.get_agent(ref(c), principal=c.caller),
        "create_agent": create_agent,
        "disable_agent": lambda c: service.disable_agent(
            ref(c), _model(c, DisableAgent).reason, principal=c.caller
        ),
        "enable_agent": lambda c: service.enable_agent(ref(c), principal=c.caller),
        "set_risk": lambda c: service.set_risk(
            ref(c), _model(c, AgentRisk).level, principal=c.caller
        ),
        "add_sponsor": lambda c: service.add_sponsor(
            ref(c), _model(c, Sponsor).user, principal=c.caller
        ),
        "remove_sponsor": lambda c: service.remove_sponsor(
            ref(c), _model(c, Sponsor).user, principal=c.caller
        ),
        "list_keys": lambda c: service.list_keys(ref(c), principal=c.caller),
        "rotate_key": rotate_key,
        "revoke_key": lambda c: service.revoke_key(
            ref(c), _model(c, RevokeKey).kid, principal=c.caller
        ),
        "revoke_agent_tokens": lambda c: service.revoke_agent_tokens(ref(c), principal=c.caller),
        "list_groups": lambda c: service.list_groups(principal=c.caller),
        "show_group": lambda c: service.get_group(ref(c), principal=c.caller),
        "create_group": create_group,
        "delete_group": lambda c: service.delete_group(ref(c), principal=c.caller),
        "set_member": set_member,
    }
    return {name: _threaded(fn) for name, fn in routes.items()}


def _action(text: str) -> str:
    """An action as `name` or `Action::"name"`."""
    text = text.strip()
    if "::" not in text:
        return text
    ref = EntityRef.parse(text)
    if ref.type != "Action":
        raise InvalidInputError(f"bad action {text!r}", hint='write it as Action::"name"')
    return ref.id


def policy_routes(policy: PolicyService) -> dict[str, Route]:
    """Policy administration and pool assignments over `PolicyService` (it decides)."""

    def listing(call: GateCall) -> Any:
        stored = policy.list_policies(principal=call.caller)
        return {
            "version": policy.store.policy_version(),
            "policies": [p.to_json() for p in stored],
            "system": [{"name": p.name, "text": p.text} for p in policy.system_policies()],
        }

    def add(call: GateCall) -> Any:
        a: AddPolicy = _model(call, AddPolicy)
        return policy.add_policy_explained(a.name, a.text, principal=call.caller, replace=a.replace)

    def schema(call: GateCall) -> Any:
        policy.list_policies(principal=call.caller)  # read_policies
        return policy.engine.schema_text

    def test(call: GateCall) -> Any:
        a: TestPolicy = _model(call, TestPolicy)
        return policy.test(
            EntityRef.parse(a.principal),
            _action(a.action),
            EntityRef.parse(a.resource),
            a.context,
            caller=call.caller,
        )

    def assign(call: GateCall) -> Any:
        a: AssignPool = _model(call, AssignPool)
        return policy.assign_pool(
            call.target or "",
            agent=a.agent,
            group=a.group,
            present=a.present,
            principal=call.caller,
        )

    routes: dict[str, Callable[[GateCall], Any]] = {
        "list_policies": listing,
        "show_policy": lambda c: policy.get_policy(c.target or "", principal=c.caller),
        "add_policy": add,
        "set_policy_enabled": lambda c: policy.set_policy_enabled(
            c.target or "", _model(c, PolicyEnabled).enabled, principal=c.caller
        ),
        "remove_policy": lambda c: policy.remove_policy(c.target or "", principal=c.caller),
        "policy_changes": lambda c: policy.changes(
            principal=c.caller, since=_model(c, PolicyChanges).since
        ),
        "policy_schema": schema,
        "test_policy": test,
        "pool_assignments": lambda c: policy.pool_assignments(c.target or "", principal=c.caller),
        "assign_pool": assign,
    }
    return {name: _threaded(fn) for name, fn in routes.items()}


def audit_routes(audit: AuditService) -> dict[str, Route]:
    """The audit log's records and proofs; `read_audit` is decided by the authorize stage
    (on the `AuditLog` collection), so these routes do not decide (`decides=False`)."""

    def reading(read: Callable[[GateCall], Any]) -> Route:
        async def run(call: GateCall) -> Any:
            return await asyncio.to_thread(read, call)

        return Route(run, decides=False)

    def entries(call: GateCall) -> Any:
        a: AuditEntries = _model(call, AuditEntries)
        return audit.entries(a.start, a.limit, a.session)

    def inclusion(call: GateCall) -> Any:
        a: AuditInclusion = _model(call, AuditInclusion)
        return audit.inclusion(a.index, a.size)

    def consistency(call: GateCall) -> Any:
        a: AuditConsistency = _model(call, AuditConsistency)
        return audit.consistency(a.first, a.second)

    return {
        "audit_entries": reading(entries),
        "audit_record": reading(lambda call: audit.record(call.target or "")),
        "audit_inclusion": reading(inclusion),
        "audit_consistency": reading(consistency),
        "audit_trace": reading(lambda call: audit.trace(call.target or "")),
        "audit_entry_bundle": reading(lambda call: audit.entry_bundle(call.target or "")),
    }


def lifecycle_gate(
    control: ControlPlane,
    directory: DirectoryService | None = None,
    audit: AuditService | None = None,
) -> Gate:
    """The server's Gate over `control`, the directory and the audit log (each if given);
    their services decide policy (`Route.decides`), but for the audit log's reads."""
    routes, tools = control_routes(control)
    policy = getattr(control, "policy", None)
    if isinstance(policy, PolicyService):
        routes.update(policy_routes(policy))
    if directory is not None:
        routes.update(directory_routes(directory))
    if audit is not None:
        routes.update(audit_routes(audit))
    return Gate(
        routes,
        tools=tools,
        authorizer=PolicyAuthorizer(policy),
        recorder=audit.recorder if audit is not None else None,
    )

"""The act stage's routes: each catalogue operation to the pillar service that does it.

`lifecycle_gate(control)` is the server's Gate (REST, both MCP servers, the console): pools,
sessions and the computer tools over the `ControlPlane`, whose services decide policy with the
object in hand (`Route.decides`). `corral.gate.host` builds the host CLI's.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from corral.domain.models import PoolSpec
from corral.domain.policy import ApprovalState
from corral.gate._gate import Gate, GateCall, PolicyAuthorizer, Route
from corral.gate.operations import (
    Acquire,
    DecideApproval,
    ListApprovals,
    ListSessions,
    PoolCreate,
)

if TYPE_CHECKING:
    from corral.service.control import ControlPlane

__all__ = ["control_routes", "lifecycle_gate"]


def _model(call: GateCall, model: type[Any]) -> Any:
    """The arguments as `model`: adapters pass the model they validated; a mapping (or
    nothing) is validated here."""
    args = call.args
    if isinstance(args, model):
        return args
    from corral.mcp._tools import parse_model  # the same message as the MCP tools' (lazy)

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


def lifecycle_gate(control: ControlPlane) -> Gate:
    """The server's Gate over `control` (its policy service decides)."""
    routes, tools = control_routes(control)
    return Gate(routes, tools=tools, authorizer=PolicyAuthorizer(getattr(control, "policy", None)))

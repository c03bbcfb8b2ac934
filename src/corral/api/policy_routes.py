"""REST for least privilege: /v1/policies, pool assignments and sponsor approvals.

Thin: every route hands the Gate its operation, whose act stage calls the PolicyService, which
authorizes the caller itself (reading and
changing policies are policy-governed actions, `read_policies` and `manage_policies`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from corral.api._answers import (
    ApprovalOut,
    AssignmentChanged,
    AssignmentOut,
    DecisionOut,
    PolicyAdded,
    PolicyChangeOut,
    PolicyList,
    PolicyOut,
    ok,
)
from corral.api._problem import problems
from corral.api.deps import Principal
from corral.domain.access import Caller
from corral.domain.policy import ApprovalState
from corral.errors import InvalidInputError
from corral.gate import Gate
from corral.gate import operations as ops

__all__ = ["include_policies"]

INT64_MAX = 2**63 - 1  # the largest integer the store keeps
PolicyName = Annotated[str, Path(min_length=1, max_length=63)]
PoolName = Annotated[str, Path(min_length=1, max_length=63)]
ApprovalId = Annotated[str, Path(min_length=1, max_length=128)]


def _ok(model: Any, status: int, *errors: int) -> dict[int | str, Any]:
    return {**ok(model, status), **problems(*errors)}


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)
    text: str = Field(min_length=1, max_length=256 * 1024, description="Cedar policy text")
    replace: bool = Field(False, description="replace the text of an existing policy")


class PolicyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool


class TestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    principal: str = Field(max_length=300, description='e.g. Agent::"bot"')
    action: str = Field(max_length=300, description='e.g. Action::"run_command" or run_command')
    resource: str = Field(max_length=300, description='e.g. PC::"pc-1"')
    context: dict[str, Any] = Field(
        default_factory=dict, description="the request context, as Cedar sees it (docs/policies.md)"
    )


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent: str | None = Field(None, max_length=128, description="id or name")
    group: str | None = Field(None, max_length=128, description="id or name")


async def _do(
    gate: Gate, who: Caller, name: str, target: str | None = None, args: Any = None
) -> Any:
    """One policy operation through the Gate (PolicyService decides, off the loop)."""
    return await gate.handle(who, ops.operation(name), target, args)


def include_policies(app: FastAPI, gate: Gate) -> None:
    """Add the policy, assignment and approval routes to `app`."""

    @app.get("/v1/policies", response_model=None, responses=ok(PolicyList))
    async def list_policies(who: Principal) -> dict[str, Any]:
        return await _do(gate, who, "list_policies")  # type: ignore[no-any-return]

    @app.post(
        "/v1/policies", status_code=201, response_model=None, responses=_ok(PolicyAdded, 201, 409)
    )
    async def add_policy(body: PolicyBody, who: Principal) -> dict[str, Any]:
        args = ops.AddPolicy.model_construct(name=body.name, text=body.text, replace=body.replace)
        added, rewritten = await _do(gate, who, "add_policy", None, args)
        # notes: names stored as ids; warnings: entities that match nothing in the directory
        return {**added.to_json(), "notes": rewritten.notes(), "warnings": rewritten.warnings()}

    @app.get("/v1/policies/changes", response_model=None, responses=ok(list[PolicyChangeOut]))
    async def changes(
        who: Principal,
        since: Annotated[
            int, Query(ge=0, le=INT64_MAX, description="changes after this version")
        ] = 0,
    ) -> list[dict[str, Any]]:
        args = ops.PolicyChanges.model_construct(since=since)
        found = await _do(gate, who, "policy_changes", None, args)
        return [c.to_json() for c in found]

    @app.get("/v1/policies/schema", response_class=PlainTextResponse)
    async def schema(who: Principal) -> str:
        return await _do(gate, who, "policy_schema")  # type: ignore[no-any-return]

    @app.post("/v1/policies/test", response_model=None, responses=ok(DecisionOut))
    async def test(body: TestBody, who: Principal) -> dict[str, Any]:
        args = ops.TestPolicy.model_construct(
            principal=body.principal,
            action=body.action,
            resource=body.resource,
            context=body.context,
        )
        decision = await _do(gate, who, "test_policy", None, args)
        return decision.to_json()  # type: ignore[no-any-return]

    @app.get("/v1/policies/{name}", response_model=None, responses=_ok(PolicyOut, 200, 404))
    async def get_policy(name: PolicyName, who: Principal) -> dict[str, Any]:
        return (await _do(gate, who, "show_policy", name)).to_json()  # type: ignore[no-any-return]

    @app.patch("/v1/policies/{name}", response_model=None, responses=_ok(PolicyOut, 200, 404))
    async def patch_policy(name: PolicyName, body: PolicyPatch, who: Principal) -> dict[str, Any]:
        args = ops.PolicyEnabled.model_construct(enabled=body.enabled)
        changed = await _do(gate, who, "set_policy_enabled", name, args)
        return changed.to_json()  # type: ignore[no-any-return]

    @app.delete("/v1/policies/{name}", response_model=None, responses=_ok(PolicyOut, 200, 404))
    async def remove_policy(name: PolicyName, who: Principal) -> dict[str, Any]:
        removed = await _do(gate, who, "remove_policy", name)
        return removed.to_json()  # type: ignore[no-any-return]

    @app.get(
        "/v1/pools/{pool}/assignments",
        response_model=None,
        responses=_ok(list[AssignmentOut], 200, 404),
    )
    async def assignments(pool: PoolName, who: Principal) -> list[dict[str, Any]]:
        found = await _do(gate, who, "pool_assignments", pool)
        return [a.to_json() for a in found]

    @app.post(
        "/v1/pools/{pool}/assignments",
        response_model=None,
        responses=_ok(AssignmentChanged, 200, 404, 409),
    )
    async def assign(pool: PoolName, body: AssignBody, who: Principal) -> dict[str, Any]:
        args = ops.AssignPool.model_construct(agent=body.agent, group=body.group, present=True)
        changed = await _do(gate, who, "assign_pool", pool, args)
        return {"pool": pool, "agent": body.agent, "group": body.group, "changed": changed}

    @app.delete(
        "/v1/pools/{pool}/assignments",
        response_model=None,
        responses=_ok(AssignmentChanged, 200, 404, 409),
    )
    async def unassign(
        pool: PoolName,
        who: Principal,
        agent: Annotated[str | None, Query(max_length=128)] = None,
        group: Annotated[str | None, Query(max_length=128)] = None,
    ) -> dict[str, Any]:
        args = ops.AssignPool.model_construct(agent=agent, group=group, present=False)
        changed = await _do(gate, who, "assign_pool", pool, args)
        return {"pool": pool, "agent": agent, "group": group, "changed": changed}

    @app.get("/v1/approvals", response_model=None, responses=ok(list[ApprovalOut]))
    async def approvals(
        who: Principal,
        state: Annotated[
            str | None,
            Query(max_length=16, description="pending, approved, denied, expired or all"),
        ] = "pending",
    ) -> list[dict[str, Any]]:
        try:
            wanted = ApprovalState(state) if state and state != "all" else None
        except ValueError:
            raise InvalidInputError(
                f"unknown approval state {state!r}",
                hint="use pending, approved, denied, expired or all",
            ) from None
        args = ops.ListApprovals.model_construct(state=wanted.value if wanted else None)
        found = await _do(gate, who, "list_approvals", None, args)
        return [a.to_json() for a in found]

    @app.post(
        "/v1/approvals/{approval_id}/approve",
        response_model=None,
        responses=_ok(ApprovalOut, 200, 404, 409),
    )
    async def approve(approval_id: ApprovalId, who: Principal) -> dict[str, Any]:
        args = ops.DecideApproval.model_construct(approve=True)
        done = await _do(gate, who, "decide_approval", approval_id, args)
        return done.to_json()  # type: ignore[no-any-return]

    @app.post(
        "/v1/approvals/{approval_id}/deny",
        response_model=None,
        responses=_ok(ApprovalOut, 200, 404, 409),
    )
    async def deny(approval_id: ApprovalId, who: Principal) -> dict[str, Any]:
        args = ops.DecideApproval.model_construct(approve=False)
        done = await _do(gate, who, "decide_approval", approval_id, args)
        return done.to_json()  # type: ignore[no-any-return]

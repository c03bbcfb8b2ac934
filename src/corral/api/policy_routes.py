"""REST for least privilege: /v1/policies, pool assignments and sponsor approvals.

Thin: every route calls the PolicyService, which authorizes the caller itself (reading and
changing policies are policy-governed actions, `read_policies` and `manage_policies`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from corral.access import EntityRef
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
from corral.domain.policy import ApprovalState
from corral.errors import InvalidInputError
from corral.service.policy import PolicyService

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


def _action(text: str) -> str:
    text = text.strip()
    if "::" not in text:
        return text
    ref = EntityRef.parse(text)
    if ref.type != "Action":
        raise InvalidInputError(f"bad action {text!r}", hint='write it as Action::"name"')
    return ref.id


def include_policies(app: FastAPI, policy: PolicyService) -> None:
    """Add the policy, assignment and approval routes to `app`."""

    @app.get("/v1/policies", response_model=None, responses=ok(PolicyList))
    async def list_policies(who: Principal) -> dict[str, Any]:
        stored = await asyncio.to_thread(lambda: policy.list_policies(principal=who))
        version = await asyncio.to_thread(policy.store.policy_version)
        return {
            "version": version,
            "policies": [p.to_json() for p in stored],
            "system": [{"name": p.name, "text": p.text} for p in policy.system_policies()],
        }

    @app.post(
        "/v1/policies", status_code=201, response_model=None, responses=_ok(PolicyAdded, 201, 409)
    )
    async def add_policy(body: PolicyBody, who: Principal) -> dict[str, Any]:
        added, rewritten = await asyncio.to_thread(
            lambda: policy.add_policy_explained(
                body.name, body.text, principal=who, replace=body.replace
            )
        )
        # notes: names stored as ids; warnings: entities that match nothing in the directory
        return {**added.to_json(), "notes": rewritten.notes(), "warnings": rewritten.warnings()}

    @app.get("/v1/policies/changes", response_model=None, responses=ok(list[PolicyChangeOut]))
    async def changes(
        who: Principal,
        since: Annotated[
            int, Query(ge=0, le=INT64_MAX, description="changes after this version")
        ] = 0,
    ) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(lambda: policy.changes(principal=who, since=since))
        return [c.to_json() for c in found]

    @app.get("/v1/policies/schema", response_class=PlainTextResponse)
    async def schema(who: Principal) -> str:
        await asyncio.to_thread(lambda: policy.list_policies(principal=who))  # read_policies
        return policy.engine.schema_text

    @app.post("/v1/policies/test", response_model=None, responses=ok(DecisionOut))
    async def test(body: TestBody, who: Principal) -> dict[str, Any]:
        decision = await asyncio.to_thread(
            lambda: policy.test(
                EntityRef.parse(body.principal),
                _action(body.action),
                EntityRef.parse(body.resource),
                body.context,
                caller=who,
            )
        )
        return decision.to_json()

    @app.get("/v1/policies/{name}", response_model=None, responses=_ok(PolicyOut, 200, 404))
    async def get_policy(name: PolicyName, who: Principal) -> dict[str, Any]:
        return (await asyncio.to_thread(lambda: policy.get_policy(name, principal=who))).to_json()

    @app.patch("/v1/policies/{name}", response_model=None, responses=_ok(PolicyOut, 200, 404))
    async def patch_policy(name: PolicyName, body: PolicyPatch, who: Principal) -> dict[str, Any]:
        changed = await asyncio.to_thread(
            lambda: policy.set_policy_enabled(name, body.enabled, principal=who)
        )
        return changed.to_json()

    @app.delete("/v1/policies/{name}", response_model=None, responses=_ok(PolicyOut, 200, 404))
    async def remove_policy(name: PolicyName, who: Principal) -> dict[str, Any]:
        removed = await asyncio.to_thread(lambda: policy.remove_policy(name, principal=who))
        return removed.to_json()

    @app.get(
        "/v1/pools/{pool}/assignments",
        response_model=None,
        responses=_ok(list[AssignmentOut], 200, 404),
    )
    async def assignments(pool: PoolName, who: Principal) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(lambda: policy.pool_assignments(pool, principal=who))
        return [a.to_json() for a in found]

    @app.post(
        "/v1/pools/{pool}/assignments",
        response_model=None,
        responses=_ok(AssignmentChanged, 200, 404, 409),
    )
    async def assign(pool: PoolName, body: AssignBody, who: Principal) -> dict[str, Any]:
        changed = await asyncio.to_thread(
            lambda: policy.assign_pool(pool, agent=body.agent, group=body.group, principal=who)
        )
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
        changed = await asyncio.to_thread(
            lambda: policy.assign_pool(pool, agent=agent, group=group, present=False, principal=who)
        )
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
        found = await asyncio.to_thread(lambda: policy.list_approvals(principal=who, state=wanted))
        return [a.to_json() for a in found]

    @app.post(
        "/v1/approvals/{approval_id}/approve",
        response_model=None,
        responses=_ok(ApprovalOut, 200, 404, 409),
    )
    async def approve(approval_id: ApprovalId, who: Principal) -> dict[str, Any]:
        done = await asyncio.to_thread(
            lambda: policy.decide_approval(approval_id, approve=True, principal=who)
        )
        return done.to_json()

    @app.post(
        "/v1/approvals/{approval_id}/deny",
        response_model=None,
        responses=_ok(ApprovalOut, 200, 404, 409),
    )
    async def deny(approval_id: ApprovalId, who: Principal) -> dict[str, Any]:
        done = await asyncio.to_thread(
            lambda: policy.decide_approval(approval_id, approve=False, principal=who)
        )
        return done.to_json()

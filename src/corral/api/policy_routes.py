"""REST for least privilege: /v1/policies, pool assignments and sponsor approvals.

Thin: every route calls the PolicyService, which authorizes the caller itself (reading and
changing policies are policy-governed actions, `read_policies` and `manage_policies`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from corral.access import EntityRef
from corral.api.deps import Principal
from corral.domain.policy import ApprovalState
from corral.errors import InvalidInputError
from corral.gate import Gate, operation
from corral.gate.operations import DecideApproval, ListApprovals
from corral.service.policy import PolicyService

__all__ = ["include_policies"]


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
    principal: str = Field(description='e.g. Agent::"bot"')
    action: str = Field(description='e.g. Action::"run_command" or run_command')
    resource: str = Field(description='e.g. PC::"pc-1"')
    context: dict[str, Any] = Field(default_factory=dict)


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent: str | None = None
    group: str | None = None


def _action(text: str) -> str:
    text = text.strip()
    if "::" not in text:
        return text
    ref = EntityRef.parse(text)
    if ref.type != "Action":
        raise InvalidInputError(f"bad action {text!r}", hint='write it as Action::"name"')
    return ref.id


_LIST_APPROVALS = operation("list_approvals")
_DECIDE_APPROVAL = operation("decide_approval")


def include_policies(app: FastAPI, policy: PolicyService, gate: Gate) -> None:
    """Add the policy, assignment and approval routes to `app`."""

    @app.get("/v1/policies")
    async def list_policies(who: Principal) -> dict[str, Any]:
        stored = await asyncio.to_thread(lambda: policy.list_policies(principal=who))
        version = await asyncio.to_thread(policy.store.policy_version)
        return {
            "version": version,
            "policies": [p.to_json() for p in stored],
            "system": [{"name": p.name, "text": p.text} for p in policy.system_policies()],
        }

    @app.post("/v1/policies", status_code=201)
    async def add_policy(body: PolicyBody, who: Principal) -> dict[str, Any]:
        added, rewritten = await asyncio.to_thread(
            lambda: policy.add_policy_explained(
                body.name, body.text, principal=who, replace=body.replace
            )
        )
        # notes: names stored as ids; warnings: entities that match nothing in the directory
        return {**added.to_json(), "notes": rewritten.notes(), "warnings": rewritten.warnings()}

    @app.get("/v1/policies/changes")
    async def changes(who: Principal, since: int = 0) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(lambda: policy.changes(principal=who, since=since))
        return [c.to_json() for c in found]

    @app.get("/v1/policies/schema", response_class=PlainTextResponse)
    async def schema(who: Principal) -> str:
        await asyncio.to_thread(lambda: policy.list_policies(principal=who))  # read_policies
        return policy.engine.schema_text

    @app.post("/v1/policies/test")
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

    @app.get("/v1/policies/{name}")
    async def get_policy(name: str, who: Principal) -> dict[str, Any]:
        return (await asyncio.to_thread(lambda: policy.get_policy(name, principal=who))).to_json()

    @app.patch("/v1/policies/{name}")
    async def patch_policy(name: str, body: PolicyPatch, who: Principal) -> dict[str, Any]:
        changed = await asyncio.to_thread(
            lambda: policy.set_policy_enabled(name, body.enabled, principal=who)
        )
        return changed.to_json()

    @app.delete("/v1/policies/{name}")
    async def remove_policy(name: str, who: Principal) -> dict[str, Any]:
        removed = await asyncio.to_thread(lambda: policy.remove_policy(name, principal=who))
        return removed.to_json()

    @app.get("/v1/pools/{pool}/assignments")
    async def assignments(pool: str, who: Principal) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(lambda: policy.pool_assignments(pool, principal=who))
        return [a.to_json() for a in found]

    @app.post("/v1/pools/{pool}/assignments")
    async def assign(pool: str, body: AssignBody, who: Principal) -> dict[str, Any]:
        changed = await asyncio.to_thread(
            lambda: policy.assign_pool(pool, agent=body.agent, group=body.group, principal=who)
        )
        return {"pool": pool, "agent": body.agent, "group": body.group, "changed": changed}

    @app.delete("/v1/pools/{pool}/assignments")
    async def unassign(
        pool: str, who: Principal, agent: str | None = None, group: str | None = None
    ) -> dict[str, Any]:
        changed = await asyncio.to_thread(
            lambda: policy.assign_pool(pool, agent=agent, group=group, present=False, principal=who)
        )
        return {"pool": pool, "agent": agent, "group": group, "changed": changed}

    @app.get("/v1/approvals")
    async def approvals(who: Principal, state: str | None = "pending") -> list[dict[str, Any]]:
        try:
            wanted = ApprovalState(state) if state and state != "all" else None
        except ValueError:
            raise InvalidInputError(
                f"unknown approval state {state!r}",
                hint="use pending, approved, denied, expired or all",
            ) from None
        args = ListApprovals.model_construct(state=wanted.value if wanted else None)
        found = await gate.handle(who, _LIST_APPROVALS, None, args)
        return [a.to_json() for a in found]

    @app.post("/v1/approvals/{approval_id}/approve")
    async def approve(approval_id: str, who: Principal) -> dict[str, Any]:
        args = DecideApproval.model_construct(approve=True)
        done = await gate.handle(who, _DECIDE_APPROVAL, approval_id, args)
        return done.to_json()  # type: ignore[no-any-return]

    @app.post("/v1/approvals/{approval_id}/deny")
    async def deny(approval_id: str, who: Principal) -> dict[str, Any]:
        args = DecideApproval.model_construct(approve=False)
        done = await gate.handle(who, _DECIDE_APPROVAL, approval_id, args)
        return done.to_json()  # type: ignore[no-any-return]

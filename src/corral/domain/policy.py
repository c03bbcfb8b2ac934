"""Policy records: stored policies and their change log, pool assignments, sponsor approvals.

Pure (no I/O). The store keeps these; the policy service (corral.access.service) decides with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "Approval",
    "ApprovalState",
    "ChangeKind",
    "PolicyChange",
    "PoolAssignment",
    "StoredPolicy",
]


@dataclass(frozen=True)
class StoredPolicy:
    """An admin's (or the shipped) Cedar policy; `name` is its id in every decision."""

    id: str
    name: str
    text: str
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "text": self.text,
            "enabled": self.enabled,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


class ChangeKind(StrEnum):
    SEED = "seed"  # the shipped defaults, installed on first start
    ADD = "add"
    REPLACE = "replace"
    REMOVE = "remove"
    ENABLE = "enable"
    DISABLE = "disable"
    ASSIGN = "assign"  # a pool assigned to an agent or group
    UNASSIGN = "unassign"


@dataclass(frozen=True)
class PolicyChange:
    """One entry of the change log: who changed what, when, and the policy-set version it made."""

    version: int
    kind: ChangeKind
    subject: str  # a policy name, or "pool/<pool> agent/<name>" for assignments
    actor: str  # a user or agent id, or "system"
    at: datetime
    text: str | None = None  # the policy text after the change (None when removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": self.kind.value,
            "subject": self.subject,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "text": self.text,
        }


@dataclass(frozen=True)
class PoolAssignment:
    """Pool `pool` is assigned to the agent or the group (exactly one is set): names to show,
    ids to decide with (a group re-created under a deleted one's name is not assigned)."""

    pool: str
    agent: str | None
    group: str | None
    created_by: str
    created_at: datetime
    agent_id: str | None = None
    group_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "agent": self.agent,
            "group": self.group,
            "agent_id": self.agent_id,
            "group_id": self.group_id,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
        }


class ApprovalState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Approval:
    """A request a policy held for a sponsor's answer.

    It covers exactly one request (`digest`: agent, action, resource and every tool argument,
    content included); `detail` is what the sponsor was shown (the arguments, long content as
    a preview with its size and hash). An approved one lets `max_uses` identical requests
    through (one by default; None: any number) until `expires_at`, which an answer sets to
    `window_s` after it.
    """

    id: str
    agent_id: str
    action: str
    resource: str  # the Cedar entity, e.g. PC::"pc-1"
    digest: str
    detail: dict[str, str]  # the tool arguments the sponsor decides on
    state: ApprovalState
    requested_at: datetime
    expires_at: datetime
    session_id: str | None = None
    policies: tuple[str, ...] = ()  # the forbids that asked for approval
    decided_by: str | None = None
    decided_at: datetime | None = None
    uses: int = 0  # identical requests it let through so far
    max_uses: int | None = 1
    window_s: int = 15 * 60

    def live(self, now: datetime) -> bool:
        return now < self.expires_at and self.state is not ApprovalState.EXPIRED

    @property
    def used_up(self) -> bool:
        return self.max_uses is not None and self.uses >= self.max_uses

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "session_id": self.session_id,
            "action": self.action,
            "resource": self.resource,
            "detail": self.detail,
            "policies": list(self.policies),
            "state": self.state.value,
            "requested_at": self.requested_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "uses": self.uses,
            "max_uses": self.max_uses,
            "window_s": self.window_s,
            "used_up": self.used_up,
        }

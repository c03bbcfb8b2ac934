"""The control plane's records as plain data: what the store keeps and the services pass around.

Pure (no I/O): the store maps these to tables, the adapters to JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from corral.domain.sizes import SIZES
from corral.errors import InvalidInputError

__all__ = [
    "PC",
    "PCState",
    "Pool",
    "PoolSpec",
    "Session",
    "SessionState",
    "default_sessions_per_agent",
    "validate_pool_spec",
]

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class PCState(StrEnum):
    BOOTING = "booting"  # the runtime is booting it
    READY = "ready"  # warm, healthy, lendable
    IN_USE = "in_use"  # bound to exactly one active session
    RESETTING = "resetting"  # released, going back to the image baseline
    QUARANTINED = "quarantined"  # failed its health check: kept for inspection, never lent
    DESTROYING = "destroying"


class SessionState(StrEnum):
    ACTIVE = "active"
    RELEASED = "released"


@dataclass(frozen=True)
class PoolSpec:
    name: str
    image: str
    region: str = "local"
    size: str = "small"
    warm: int = 2
    max: int = 10
    idle_timeout_s: int = 1800
    max_lifetime_s: int = 8 * 3600
    # accept plain bearer tokens (no proof of possession) for this pool's sessions: an admin's
    # opt-in for MCP clients that cannot do DPoP; off by default
    allow_bearer: bool = False
    # active sessions one agent may hold in this pool at once, so one agent cannot take the
    # whole pool; None (not given) means the default, half of `max` (at least one)
    max_sessions_per_agent: int | None = None

    def __post_init__(self) -> None:
        if self.max_sessions_per_agent is None:
            object.__setattr__(self, "max_sessions_per_agent", default_sessions_per_agent(self.max))

    @property
    def agent_limit(self) -> int:
        """The per-agent limit in force (always set once the spec exists)."""
        limit = self.max_sessions_per_agent
        return default_sessions_per_agent(self.max) if limit is None else limit


def default_sessions_per_agent(max_pcs: int) -> int:
    """Half the pool (at least one PC): one agent never holds a pool of two or more alone."""
    return max(1, max_pcs // 2)


@dataclass(frozen=True)
class Pool:
    spec: PoolSpec
    created_at: datetime
    deleting: bool = False

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class PC:
    id: str  # the runtime's PC id
    pool: str
    state: PCState
    session_id: str | None
    created_at: datetime
    detail: str = ""  # why it is quarantined, and similar


@dataclass(frozen=True)
class Session:
    id: str
    pool: str
    pc_id: str
    state: SessionState
    created_at: datetime
    expires_at: datetime  # the maximum lifetime
    last_activity: datetime
    idempotency_key: str | None = None
    released_at: datetime | None = None
    release_reason: str | None = None
    #: the agent or user id that acquired it (None: made before owners were recorded)
    owner: str | None = None
    #: who ended it: a user or agent id, or "system" (eviction, recovery, shutdown)
    released_by: str | None = None


def validate_pool_spec(spec: PoolSpec) -> PoolSpec:
    """Refuse a pool spec that cannot work, saying which field to change."""
    if not _NAME.match(spec.name):
        raise InvalidInputError(
            f"bad pool name {spec.name!r}",
            hint="use 1-63 lowercase letters, digits and '-', starting with a letter",
        )
    if spec.size not in SIZES:
        raise InvalidInputError(
            f"unknown size {spec.size!r}", hint=f"use one of: {', '.join(SIZES)}"
        )
    if not 0 <= spec.warm <= spec.max:
        raise InvalidInputError(f"warm ({spec.warm}) must be between 0 and max ({spec.max})")
    if not 1 <= spec.max <= 1000:
        raise InvalidInputError(f"max ({spec.max}) must be between 1 and 1000")
    if not 1 <= spec.idle_timeout_s <= 7 * 86400:
        raise InvalidInputError("idle_timeout_s must be between 1 and 604800 seconds")
    if not 1 <= spec.max_lifetime_s <= 30 * 86400:
        raise InvalidInputError("max_lifetime_s must be between 1 and 2592000 seconds")
    if not 1 <= spec.agent_limit <= spec.max:
        raise InvalidInputError(
            f"max_sessions_per_agent ({spec.max_sessions_per_agent}) must be between 1 and "
            f"max ({spec.max})",
            hint="omit it for the default: half the pool's max",
        )
    if not spec.region or len(spec.region) > 64:
        raise InvalidInputError("region must be 1-64 characters")
    return spec

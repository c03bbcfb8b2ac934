"""Who is calling, as the Gate sees it: the caller of one request and what decides its access.

Pure (no I/O). Roles and status are read live from the store on every request, never taken
from a token, so a change counts on the very next request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from corral.domain.identity import Risk, Role

__all__ = ["OPERATOR", "SYSTEM", "Caller", "CallerKind", "PrincipalStatus"]


class CallerKind(StrEnum):
    AGENT = "agent"
    USER = "user"
    #: the server itself (eviction, shutdown, an MCP session's teardown); never from a request
    SYSTEM = "system"
    #: whoever runs the host CLI with the data folder's rights (root on the host); never from
    #: a request: policy sees it as `User::"host-operator"`, allowed by a system policy
    OPERATOR = "operator"


@dataclass(frozen=True)
class PrincipalStatus:
    """What the store says about a token's subject right now."""

    kind: CallerKind
    id: str
    enabled: bool
    risk: Risk
    roles: frozenset[Role]
    tokens_revoked_before: datetime | None


@dataclass(frozen=True)
class Caller:
    """The authenticated principal of one request, handed by adapters to the ControlPlane."""

    kind: CallerKind
    id: str
    roles: frozenset[Role] = frozenset()
    #: set for a session token: the one session it may touch
    session_id: str | None = None
    #: thumbprint of the DPoP key of this request's proof (session tokens are bound to it)
    jkt: str | None = None
    #: the client's network address as the server saw it (policy context `client_ip`)
    address: str | None = None
    #: when the token of this request was issued (epoch seconds; None for the server's own
    #: callers): a call that waited is checked again against revocations made meanwhile
    issued_at: float | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind is CallerKind.SYSTEM or Role.ADMIN in self.roles

    @property
    def is_agent(self) -> bool:
        return self.kind is CallerKind.AGENT


SYSTEM = Caller(CallerKind.SYSTEM, "system")
#: the host CLI's caller (`corral user|agent|federation|events ...`)
OPERATOR = Caller(CallerKind.OPERATOR, "host-operator")

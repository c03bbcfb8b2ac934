"""REST adapter of the directory: `/v1/users`, `/v1/agents` and `/v1/groups`.

Thin: each route reads its typed request, hands the Gate its operation (whose act stage calls
`DirectoryService`, which decides who may do what, see docs/identity.md "REST", off the event
loop), and shapes the answer. No answer carries
a password hash, a TOTP secret or a private key, except the one-time agent credential of
`POST /v1/agents` and `POST /v1/agents/{ref}/keys/rotate` (sent with `Cache-Control: no-store`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, FastAPI, Path, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.json_schema import SkipJsonSchema

from corral.api._problem import problems
from corral.api.deps import Principal
from corral.domain.access import Caller
from corral.domain.identity import AgentKey, Group, Risk, Role, User
from corral.gate import Gate
from corral.gate import operations as ops

if TYPE_CHECKING:
    from corral.identity.directory import Credential
    from corral.identity.directory_service import AgentView, GroupMembers

__all__ = ["directory_router", "include_directory"]

T = TypeVar("T")
NAME = Field(min_length=1, max_length=63, description="lowercase letters, digits, '.', '_', '-'")
Ref = Annotated[str, Path(min_length=1, max_length=128, description="id or name")]
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


# requests


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(_Request):
    name: str = NAME
    email: str | None = Field(None, max_length=254)
    roles: list[Role] = Field(default_factory=list, max_length=len(Role))
    password: SecretStr | None = Field(
        None, description="console password (at least 12 characters); never echoed back"
    )


class UserRoles(_Request):
    roles: list[Role] = Field(max_length=len(Role), description="the complete new set of roles")


class AgentCreate(_Request):
    name: str = NAME
    sponsors: list[str] = Field(
        min_length=1, max_length=32, description="users (ids or names) who answer for the agent"
    )
    groups: list[str] = Field(default_factory=list, max_length=64)
    key_lifetime_s: int | None = Field(
        None, ge=60, le=10 * 365 * 86400, description="the first key expires after this"
    )


class AgentDisable(_Request):
    reason: str | None = Field(None, max_length=200, description="why, for the record")


class AgentRisk(_Request):
    level: Risk


class SponsorAdd(_Request):
    user: str = Field(min_length=1, max_length=128, description="id or name of the sponsor")


class KeyRotate(_Request):
    grace_s: int = Field(3600, ge=0, le=30 * 86400, description="how long the old keys still work")


class GroupCreate(_Request):
    name: str = NAME
    description: str = Field("", max_length=500)


class MemberAdd(_Request):
    kind: Literal["user", "agent"]
    member: str = Field(min_length=1, max_length=128, description="id or name")


# answers: built field by field from the records, so nothing secret can slip in


class UserOut(BaseModel):
    id: str
    name: str
    email: str | None
    roles: list[Role]
    enabled: bool
    totp_enabled: bool
    groups: list[str]
    created_at: datetime


class UserChanged(UserOut):
    agents_disabled: list[str] = Field(
        description="ids of agents this change left without an able sponsor (now disabled)"
    )


class SponsorOut(BaseModel):
    id: str
    name: str


class KeyOut(BaseModel):
    """A public key's bookkeeping; the private half never reaches the server."""

    kid: str
    kty: str | None
    crv: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    usable: bool


class AgentOut(BaseModel):
    id: str
    client_id: str
    name: str
    enabled: bool
    disabled_reason: str | None
    risk: Risk
    sponsors: list[SponsorOut]
    groups: list[str]
    created_at: datetime


class AgentDetail(AgentOut):
    keys: list[KeyOut]


class PrivateJwk(BaseModel):
    """The private key of a new credential (RFC 7517): Ed25519 (OKP) or P-256 (EC)."""

    kty: Literal["OKP", "EC"]
    crv: str
    x: str
    y: str | SkipJsonSchema[None] = Field(None, exclude_if=lambda v: v is None)  # EC only
    d: str
    kid: str = Field(description="the key's thumbprint (RFC 7638)")
    alg: str


class CredentialOut(BaseModel):
    """The agent's credential file, as `corral agent create` writes it; `key` is the private
    JWK. Shown once: the server does not keep it."""

    agent_id: str
    client_id: str
    token_endpoint: str
    key: PrivateJwk


class AgentIssued(BaseModel):
    agent: AgentDetail
    credential: CredentialOut


class Revoked(BaseModel):
    id: str
    tokens_revoked: bool


class GroupOut(BaseModel):
    id: str
    name: str
    description: str
    created_at: datetime


class Members(BaseModel):
    users: list[str]
    agents: list[str]


class GroupDetail(GroupOut, Members):
    pass


def _user(u: User) -> UserOut:
    return UserOut(
        id=u.id,
        name=u.name,
        email=u.email,
        roles=sorted(u.roles),
        enabled=u.enabled,
        totp_enabled=u.totp_enabled,
        groups=list(u.groups),
        created_at=u.created_at,
    )


def _key(k: AgentKey, now: datetime) -> KeyOut:
    kty, crv = k.public_jwk.get("kty"), k.public_jwk.get("crv")
    return KeyOut(
        kid=k.kid,
        kty=kty if isinstance(kty, str) else None,
        crv=crv if isinstance(crv, str) else None,
        created_at=k.created_at,
        expires_at=k.expires_at,
        revoked_at=k.revoked_at,
        usable=k.usable(now),
    )


def _agent_fields(view: AgentView) -> dict[str, Any]:
    a = view.agent
    return {
        "id": a.id,
        "client_id": a.client_id,
        "name": a.name,
        "enabled": a.enabled,
        "disabled_reason": a.disabled_reason,
        "risk": a.risk,
        "sponsors": [SponsorOut(id=i, name=n) for i, n in view.sponsors],
        "groups": list(a.groups),
        "created_at": a.created_at,
    }


def _agent(view: AgentView) -> AgentOut:
    return AgentOut(**_agent_fields(view))


def _detail(view: AgentView) -> AgentDetail:
    now = datetime.now(UTC)
    return AgentDetail(**_agent_fields(view), keys=[_key(k, now) for k in view.keys or ()])


def _issued(view: AgentView, credential: Credential, response: Response) -> AgentIssued:
    response.headers.update(_NO_STORE)
    return AgentIssued(
        agent=_detail(view),
        credential=CredentialOut(
            agent_id=credential["agent_id"],
            client_id=credential["client_id"],
            token_endpoint=credential["token_endpoint"],
            key=PrivateJwk.model_validate(credential["key"]),
        ),
    )


def _group(g: Group) -> GroupOut:
    return GroupOut(id=g.id, name=g.name, description=g.description, created_at=g.created_at)


def _members(m: GroupMembers) -> GroupDetail:
    return GroupDetail(**_group(m.group).model_dump(), users=list(m.users), agents=list(m.agents))


async def _do(
    gate: Gate, who: Caller, name: str, target: str | None = None, args: Any = None
) -> Any:
    """One directory operation through the Gate (DirectoryService decides, off the loop)."""
    return await gate.handle(who, ops.operation(name), target, args)


# 400, 401, 403 and 503 every route answers are added by corral.api._openapi.
_ERRORS = problems(404, 409)


def directory_router(gate: Gate) -> APIRouter:
    router = APIRouter(prefix="/v1", responses=_ERRORS)
    users = APIRouter(prefix="/users", tags=["users"])
    agents = APIRouter(prefix="/agents", tags=["agents"])
    groups = APIRouter(prefix="/groups", tags=["groups"])

    # users

    @users.get("")
    async def list_users(who: Principal) -> list[UserOut]:
        """Admin or security admin: every user."""
        return [_user(u) for u in await _do(gate, who, "list_users")]

    @users.post("", status_code=201)
    async def create_user(body: UserCreate, who: Principal) -> UserOut:
        """Admin: a new human user (admin, security_admin or sponsor)."""
        password = body.password.get_secret_value() if body.password is not None else None
        args = ops.CreateUser.model_construct(
            name=body.name, roles=list(body.roles), email=body.email, password=password
        )
        user = await _do(gate, who, "create_user", None, args)
        return _user(user)

    @users.get("/{ref}")
    async def get_user(ref: Ref, who: Principal) -> UserOut:
        return _user(await _do(gate, who, "show_user", ref))

    @users.put("/{ref}/roles")
    async def set_user_roles(ref: Ref, body: UserRoles, who: Principal) -> UserChanged:
        """Admin: replace the roles. Losing the sponsor role counts like being disabled for
        the agents the user sponsors; the last enabled admin keeps the admin role."""
        user, disabled = await _do(
            gate, who, "set_user_roles", ref, ops.UserRoles.model_construct(roles=list(body.roles))
        )
        return UserChanged(**_user(user).model_dump(), agents_disabled=[a.id for a in disabled])

    @users.post("/{ref}/disable")
    async def disable_user(ref: Ref, who: Principal) -> UserChanged:
        """Admin or security admin: agents left without an able sponsor are disabled too."""
        user, disabled = await _do(gate, who, "disable_user", ref)
        return UserChanged(**_user(user).model_dump(), agents_disabled=[a.id for a in disabled])

    @users.post("/{ref}/enable")
    async def enable_user(ref: Ref, who: Principal) -> UserOut:
        """Admin: the agents the user sponsors stay as they are (enable them one by one)."""
        return _user(await _do(gate, who, "enable_user", ref))

    @users.post("/{ref}/revoke")
    async def revoke_user(ref: Ref, who: Principal) -> Revoked:
        """Admin or security admin: every token issued so far to this user is refused from
        the next request."""
        revoked = await _do(gate, who, "revoke_user_tokens", ref)
        return Revoked(id=revoked, tokens_revoked=True)

    # agents

    @agents.get("")
    async def list_agents(who: Principal) -> list[AgentOut]:
        return [_agent(v) for v in await _do(gate, who, "list_agents")]

    @agents.post("", status_code=201)
    async def create_agent(body: AgentCreate, who: Principal, response: Response) -> AgentIssued:
        """Admin: a new agent and its first key pair. The answer holds the credential with the
        private key, once: save it to a file only its owner can read."""
        args = ops.CreateAgent.model_construct(
            name=body.name,
            sponsors=body.sponsors,
            groups=body.groups,
            token_endpoint=None,
            key_lifetime_s=body.key_lifetime_s,
        )
        view, credential = await _do(gate, who, "create_agent", None, args)
        return _issued(view, credential, response)

    @agents.get("/{ref}")
    async def get_agent(ref: Ref, who: Principal) -> AgentDetail:
        """The agent with its sponsors, groups, risk, state and keys (public bookkeeping only)."""
        return _detail(await _do(gate, who, "show_agent", ref))

    @agents.post("/{ref}/disable")
    async def disable_agent(
        ref: Ref, who: Principal, body: Annotated[AgentDisable | None, Body()] = None
    ) -> AgentDetail:
        """Admin or security admin: its tokens stop working on the next request."""
        reason = body.reason if body else None
        return _detail(
            await _do(
                gate, who, "disable_agent", ref, ops.DisableAgent.model_construct(reason=reason)
            )
        )

    @agents.post("/{ref}/enable")
    async def enable_agent(ref: Ref, who: Principal) -> AgentDetail:
        """Admin: only while the agent has an able sponsor (409 otherwise)."""
        return _detail(await _do(gate, who, "enable_agent", ref))

    @agents.put("/{ref}/risk")
    async def set_risk(ref: Ref, body: AgentRisk, who: Principal) -> AgentDetail:
        """Admin or security admin: at `high` the agent's tokens are refused."""
        return _detail(
            await _do(gate, who, "set_risk", ref, ops.AgentRisk.model_construct(level=body.level))
        )

    @agents.post("/{ref}/sponsors")
    async def add_sponsor(ref: Ref, body: SponsorAdd, who: Principal) -> AgentDetail:
        """Admin: the user needs the sponsor or admin role and must be enabled."""
        return _detail(
            await _do(gate, who, "add_sponsor", ref, ops.Sponsor.model_construct(user=body.user))
        )

    @agents.delete("/{ref}/sponsors/{user}")
    async def remove_sponsor(
        ref: Ref,
        user: Annotated[str, Path(min_length=1, max_length=128, description="id or name")],
        who: Principal,
    ) -> AgentDetail:
        """Admin: removing the last able sponsor disables the agent (reason "no sponsor")."""
        return _detail(
            await _do(gate, who, "remove_sponsor", ref, ops.Sponsor.model_construct(user=user))
        )

    @agents.get("/{ref}/keys")
    async def list_keys(ref: Ref, who: Principal) -> list[KeyOut]:
        now = datetime.now(UTC)
        return [_key(k, now) for k in await _do(gate, who, "list_keys", ref)]

    @agents.post("/{ref}/keys/rotate")
    async def rotate_key(
        ref: Ref,
        who: Principal,
        response: Response,
        body: Annotated[KeyRotate | None, Body()] = None,
    ) -> AgentIssued:
        """Admin: a new key pair, answered once as a new credential; the old keys keep working
        for `grace_s` seconds (default one hour), then expire."""
        args = ops.RotateKey.model_construct(grace_s=body.grace_s if body else 3600)
        view, credential = await _do(gate, who, "rotate_key", ref, args)
        return _issued(view, credential, response)

    @agents.post("/{ref}/keys/{kid}/revoke")
    async def revoke_key(
        ref: Ref,
        kid: Annotated[str, Path(min_length=1, max_length=128)],
        who: Principal,
    ) -> KeyOut:
        """Admin or security admin: the key signs no further client assertion."""
        key = await _do(gate, who, "revoke_key", ref, ops.RevokeKey.model_construct(kid=kid))
        return _key(key, datetime.now(UTC))

    @agents.post("/{ref}/revoke")
    async def revoke_agent(ref: Ref, who: Principal) -> Revoked:
        """Admin or security admin: every token issued so far to this agent is refused from
        the next request."""
        revoked = await _do(gate, who, "revoke_agent_tokens", ref)
        return Revoked(id=revoked, tokens_revoked=True)

    # groups

    @groups.get("")
    async def list_groups(who: Principal) -> list[GroupOut]:
        return [_group(g) for g in await _do(gate, who, "list_groups")]

    @groups.post("", status_code=201)
    async def create_group(body: GroupCreate, who: Principal) -> GroupDetail:
        args = ops.CreateGroup.model_construct(name=body.name, description=body.description)
        made = await _do(gate, who, "create_group", None, args)
        return _members(made)

    @groups.get("/{ref}")
    async def get_group(ref: Ref, who: Principal) -> GroupDetail:
        return _members(await _do(gate, who, "show_group", ref))

    @groups.delete("/{ref}", status_code=204)
    async def delete_group(ref: Ref, who: Principal) -> Response:
        """Admin: memberships go with the group; its members stay."""
        await _do(gate, who, "delete_group", ref)
        return Response(status_code=204)

    @groups.get("/{ref}/members")
    async def list_members(ref: Ref, who: Principal) -> Members:
        m = await _do(gate, who, "show_group", ref)
        return Members(users=list(m.users), agents=list(m.agents))

    @groups.post("/{ref}/members")
    async def add_member(ref: Ref, body: MemberAdd, who: Principal) -> GroupDetail:
        """Admin: add a user or an agent (adding a member twice changes nothing)."""
        args = ops.GroupMember.model_construct(kind=body.kind, member=body.member, present=True)
        m = await _do(gate, who, "set_member", ref, args)
        return _members(m)

    @groups.delete("/{ref}/members/{kind}/{member}")
    async def remove_member(
        ref: Ref,
        kind: Literal["user", "agent"],
        member: Annotated[str, Path(min_length=1, max_length=128, description="id or name")],
        who: Principal,
    ) -> GroupDetail:
        """Admin: remove a user or an agent (removing a non-member changes nothing)."""
        args = ops.GroupMember.model_construct(kind=kind, member=member, present=False)
        m = await _do(gate, who, "set_member", ref, args)
        return _members(m)

    for sub in (users, agents, groups):
        router.include_router(sub)
    return router


def include_directory(app: FastAPI, gate: Gate) -> None:
    """Serve the directory API on `app`, every route through `gate` (whose DirectoryService
    asks policy, the one enforcement point)."""
    app.include_router(directory_router(gate))

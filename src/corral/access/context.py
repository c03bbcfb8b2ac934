"""Pure builders: Corral's records into Cedar entities, and a request's facts into its context.

No I/O: the service reads the store and hands the records in. Users, agents and groups are
entities of their stable ids (`Agent::"a-1f2e..."`, the name is the `name` attribute), so a
policy means one identity for its whole life; pools are their names, sessions and PCs their ids.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import posixpath
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from corral.access.engine import EntityRef
from corral.access.rewrite import DirectoryNames
from corral.access.schema import RISK_SCORES
from corral.domain.identity import Agent, Group, Risk, User
from corral.domain.models import Pool, Session
from corral.errors import InvalidInputError

__all__ = [
    "CONTROL_FLAGS",
    "Compliance",
    "Controls",
    "DirectoryView",
    "PoolAssignments",
    "RequestFacts",
    "approval_preview",
    "build_context",
    "directory_records",
    "pool_record",
    "request_digest",
    "session_records",
    "tool_args",
]

CONTROL_FLAGS = ("read_only", "no_clipboard", "no_file_transfer")


def _ref(kind: str, ident: str) -> dict[str, Any]:
    return {"__entity": {"type": kind, "id": ident}}


def _uid(kind: str, ident: str) -> dict[str, str]:
    return {"type": kind, "id": ident}


@dataclass(frozen=True)
class DirectoryView:
    """The directory as one request check needs it: records by id, group ids by name."""

    users: Mapping[str, User]
    agents: Mapping[str, Agent]
    groups: Mapping[str, Group]

    @classmethod
    def of(
        cls, users: Iterable[User], agents: Iterable[Agent], groups: Iterable[Group]
    ) -> DirectoryView:
        return cls({u.id: u for u in users}, {a.id: a for a in agents}, {g.id: g for g in groups})

    def principal(self, ident: str) -> EntityRef | None:
        """The entity of the user or agent with id `ident` (None if unknown)."""
        if ident in self.agents:
            return EntityRef("Agent", ident)
        if ident in self.users:
            return EntityRef("User", ident)
        return None

    def group_ids(self, names: Iterable[str]) -> list[str]:
        """The ids of the groups named (members are recorded by name; names are unique)."""
        found = {g.name: g.id for g in self.groups.values()}
        return sorted(found[n] for n in names if n in found)

    def names(self) -> DirectoryNames:
        return DirectoryNames.of(
            agents=((a.id, a.name) for a in self.agents.values()),
            users=((u.id, u.name) for u in self.users.values()),
            groups=((g.id, g.name) for g in self.groups.values()),
        )

    def agent_named(self, name: str) -> Agent | None:
        return next((a for a in self.agents.values() if a.name == name), None)

    def user_named(self, name: str) -> User | None:
        return next((u for u in self.users.values() if u.name == name), None)

    def sponsor_ids(self, agent: Agent) -> list[str]:
        return sorted(s for s in agent.sponsors if s in self.users)


def directory_records(view: DirectoryView) -> list[dict[str, Any]]:
    """Entity records for every group, role, user and agent (parsed once per directory version).

    A disabled identity is still described (enabled = false): refusing it is authentication's job,
    and a policy may look at it.
    """
    records: list[dict[str, Any]] = [
        {"uid": _uid("Group", g.id), "attrs": {"name": g.name}, "parents": []}
        for g in view.groups.values()
    ]
    roles = sorted({r.value for u in view.users.values() for r in u.roles})
    records += [{"uid": _uid("Role", r), "attrs": {}, "parents": []} for r in roles]
    for user in view.users.values():
        groups = view.group_ids(user.groups)
        records.append(
            {
                "uid": _uid("User", user.id),
                "attrs": {
                    "name": user.name,
                    "enabled": user.enabled,
                    "groups": [_ref("Group", g) for g in groups],
                },
                "parents": [_uid("Group", g) for g in groups]
                + [_uid("Role", r.value) for r in sorted(user.roles)],
            }
        )
    for agent in view.agents.values():
        groups = view.group_ids(agent.groups)
        records.append(
            {
                "uid": _uid("Agent", agent.id),
                "attrs": {
                    "name": agent.name,
                    "enabled": agent.enabled,
                    "risk": agent.risk.value,
                    "risk_score": RISK_SCORES[agent.risk.value],
                    "groups": [_ref("Group", g) for g in groups],
                    "sponsors": [_ref("User", s) for s in view.sponsor_ids(agent)],
                },
                "parents": [_uid("Group", g) for g in groups],
            }
        )
    return records


@dataclass(frozen=True)
class PoolAssignments:
    """Who may acquire from a pool under the default policy: agent and group ids."""

    agents: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


def pool_record(pool: Pool, assigned: PoolAssignments) -> dict[str, Any]:
    return {
        "uid": _uid("Pool", pool.name),
        "attrs": {
            "image": pool.spec.image,
            "region": pool.spec.region,
            "size": pool.spec.size,
            "agents": [_ref("Agent", a) for a in sorted(assigned.agents)],
            "groups": [_ref("Group", g) for g in sorted(assigned.groups)],
        },
        "parents": [],
    }


def session_records(
    session: Session, owner: EntityRef | None, sponsors: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The Session (child of its owner) and its PC (child of the session); `sponsors` are the
    owner agent's sponsors' ids."""
    pool = _ref("Pool", session.pool)
    return [
        {
            "uid": _uid("Session", session.id),
            "attrs": {"pool": pool, "sponsors": [_ref("User", s) for s in sorted(sponsors)]},
            "parents": [owner.to_json()] if owner is not None else [],
        },
        {
            "uid": _uid("PC", session.pc_id),
            "attrs": {"pool": pool},
            "parents": [_uid("Session", session.id)],
        },
    ]


@dataclass(frozen=True)
class Compliance:
    """What the control plane knows about a PC's state at the time of the request."""

    healthy: bool = True
    sensor_running: bool = False
    image_current: bool = True

    def to_context(self) -> dict[str, bool]:
        return {
            "healthy": self.healthy,
            "sensor_running": self.sensor_running,
            "image_current": self.image_current,
        }


@dataclass(frozen=True)
class Controls:
    """Session controls, fixed at acquire: what the session may never do, whoever asks.

    `allowed_hosts` None means any host; a tuple (maybe empty) restricts open_url to those hosts.
    """

    read_only: bool = False
    no_clipboard: bool = False
    no_file_transfer: bool = False
    allowed_hosts: tuple[str, ...] | None = None

    def merge(self, other: Controls) -> Controls:
        """Both sets of restrictions at once: flags add up, host lists intersect."""
        if self.allowed_hosts is None:
            hosts = other.allowed_hosts
        elif other.allowed_hosts is None:
            hosts = self.allowed_hosts
        else:
            hosts = tuple(sorted(set(self.allowed_hosts) & set(other.allowed_hosts)))
        return Controls(
            self.read_only or other.read_only,
            self.no_clipboard or other.no_clipboard,
            self.no_file_transfer or other.no_file_transfer,
            hosts,
        )

    @property
    def any(self) -> bool:
        return self != Controls()

    def to_context(self) -> dict[str, Any]:
        return {
            "read_only": self.read_only,
            "no_clipboard": self.no_clipboard,
            "no_file_transfer": self.no_file_transfer,
            "restrict_hosts": self.allowed_hosts is not None,
            "allowed_hosts": sorted(self.allowed_hosts or ()),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "read_only": self.read_only,
            "no_clipboard": self.no_clipboard,
            "no_file_transfer": self.no_file_transfer,
            "allowed_hosts": list(self.allowed_hosts) if self.allowed_hosts is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Controls:
        """From an acquire request or the store; unknown keys are refused, not ignored."""
        if not data:
            return cls()
        unknown = set(data) - {*CONTROL_FLAGS, "allowed_hosts"}
        if unknown:
            raise InvalidInputError(
                f"unknown session control(s): {', '.join(sorted(unknown))}",
                hint=f"use {', '.join(CONTROL_FLAGS)} and allowed_hosts",
            )
        flags = {}
        for name in CONTROL_FLAGS:
            value = data.get(name, False)
            if not isinstance(value, bool):
                raise InvalidInputError(f"session control {name} must be true or false")
            flags[name] = value
        hosts = data.get("allowed_hosts")
        if hosts is not None and (
            not isinstance(hosts, list | tuple) or not all(isinstance(h, str) for h in hosts)
        ):
            raise InvalidInputError("allowed_hosts must be a list of host names")
        return cls(
            **flags,
            allowed_hosts=(
                tuple(sorted({h.strip().lower() for h in hosts if h.strip()}))
                if hosts is not None
                else None
            ),
        )

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> Controls:
        """A permit's grant controls: `@controls("read_only no_clipboard")` and
        `@allowed_hosts("example.com docs.example.com")`."""
        words = annotations.get("controls", "").replace(",", " ").split()
        unknown = set(words) - set(CONTROL_FLAGS)
        if unknown:
            raise InvalidInputError(
                f"unknown session control(s) in @controls: {', '.join(sorted(unknown))}",
                hint=f"use {', '.join(CONTROL_FLAGS)}",
            )
        hosts = annotations.get("allowed_hosts")
        return cls(
            read_only="read_only" in words,
            no_clipboard="no_clipboard" in words,
            no_file_transfer="no_file_transfer" in words,
            allowed_hosts=(
                tuple(sorted({h.lower() for h in hosts.replace(",", " ").split()}))
                if hosts is not None
                else None
            ),
        )


@dataclass(frozen=True)
class RequestFacts:
    """How a request arrived: when, from where, with what kind of token."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    client_ip: str | None = None
    #: how the token is bound: "dpop" (proof of possession), "bearer", or "none" (the server's
    #: own calls); the context's `token_binding`
    binding: str = "dpop"
    session_token: bool = False

    def at(self, now: datetime) -> RequestFacts:
        return replace(self, now=now)


def _normpath(path: str) -> str:
    normal = posixpath.normpath(path)
    return normal[1:] if normal.startswith("//") else normal


def tool_args(tool: str, args: Mapping[str, Any] | None) -> dict[str, str]:
    """The arguments policy may look at: the program for run_command and launch_app, the host
    (and URL) for open_url, the normalised path for file tools."""
    args = args or {}
    out: dict[str, str] = {}
    if tool == "run_command" and isinstance(args.get("command"), str):
        command = args["command"]
        out["command"] = command
        try:
            words = shlex.split(command)
        except ValueError:  # unbalanced quotes: the shell will refuse it; use the first word
            words = command.split()
        if words:
            out["program"] = posixpath.basename(words[0])
    elif tool == "launch_app" and isinstance(args.get("command"), list) and args["command"]:
        argv = [str(a) for a in args["command"]]
        out["program"] = posixpath.basename(argv[0])
        out["command"] = shlex.join(argv)
    elif tool == "open_url" and isinstance(args.get("url"), str):
        out["url"] = args["url"]
        try:
            host = urlsplit(args["url"]).hostname
        except ValueError:
            host = None
        out["host"] = (host or "").lower()
    if isinstance(args.get("path"), str):
        out["path"] = _normpath(args["path"])
    return out


def _ip(value: str) -> dict[str, Any]:
    ip_address(value)  # refuse what Cedar's ip() would refuse, with a clear error
    return {"__extn": {"fn": "ip", "arg": value}}


def build_context(
    *,
    risk: Risk,
    facts: RequestFacts,
    approved: bool = False,
    pc: Compliance | None = None,
    controls: Controls | None = None,
    args: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The context record of one request (see the schema's `Context` type)."""
    now = facts.now.astimezone(UTC)
    ctx: dict[str, Any] = {
        "risk": risk.value,
        "risk_score": RISK_SCORES[risk.value],
        "now": int(now.timestamp()),
        "hour": now.hour,
        "weekday": now.isoweekday(),
        "token_binding": facts.binding,
        "session_token": facts.session_token,
        "approved": approved,
    }
    if facts.client_ip:
        # not an IP address (say a unix socket peer): the policy sees no address
        with contextlib.suppress(ValueError):
            ctx["client_ip"] = _ip(facts.client_ip)
    if pc is not None:
        ctx["pc"] = pc.to_context()
    if controls is not None:
        ctx["controls"] = controls.to_context()
    if args:
        ctx["args"] = dict(args)
    return ctx


def request_digest(
    principal: EntityRef, action: str, resource: EntityRef, args: Mapping[str, Any] | None
) -> str:
    """What an approval is for: the same principal, action, resource and every argument of
    the request in its canonical form (the tool's validated arguments, defaults filled in),
    content included, so approving one text approves no other."""
    body = json.dumps(
        [str(principal), action, str(resource), dict(args or {})],
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()


PREVIEW_CHARS = 300  # of a text shown to a sponsor; longer ones are cut, with size and hash
PREVIEW_LINES = 5  # first lines of a file's content shown


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cut(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "..."


def approval_preview(
    tool: str, args: Mapping[str, Any], policy_args: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a sponsor reads before answering: the arguments policy saw, and every argument of
    the request, long text cut with its size and hash (typed or clipboard text: the text; a
    file: its path, size in bytes and first lines). The approval covers the full arguments
    (`request_digest`), so the hash names exactly what was approved."""
    out: dict[str, str] = {k: _cut(v) for k, v in (policy_args or {}).items()}
    for key, value in sorted(args.items()):
        if value is None or key in out:
            continue
        if tool == "write_file" and key == "content" and isinstance(value, str):
            data: bytes
            if args.get("base64"):
                try:
                    data = base64.b64decode(value, validate=True)
                except ValueError:
                    data = value.encode()
            else:
                data = value.encode()
            out["size"] = f"{len(data)} bytes"
            out["content_sha256"] = _sha256(data)
            try:
                lines = data.decode("utf-8").splitlines()
            except UnicodeDecodeError:
                out["first_lines"] = "(binary)"
            else:
                shown = "\n".join(lines[:PREVIEW_LINES])
                more = len(lines) > PREVIEW_LINES
                out["first_lines"] = _cut(shown) + (" ..." if more else "")
            continue
        if isinstance(value, str):
            out[key] = _cut(value)
            if len(value) > PREVIEW_CHARS or key == "text":
                out[f"{key}_chars"] = str(len(value))
                out[f"{key}_sha256"] = _sha256(value.encode())
        elif isinstance(value, bool | int | float):
            out[key] = json.dumps(value)
        else:
            out[key] = _cut(json.dumps(value, ensure_ascii=False))
    return out

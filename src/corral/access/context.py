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
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any

from corral.access.engine import EntityRef
from corral.access.rewrite import DirectoryNames
from corral.access.schema import RISK_SCORES
from corral.domain.identity import Agent, Group, Risk, User
from corral.domain.models import Pool, Session
from corral.domain.urls import normalize_host_name, parse_web_url
from corral.errors import InvalidInputError

__all__ = [
    "BYPASS_TOOLS",
    "CONTROL_FLAGS",
    "PC_HOME",
    "PC_PATH",
    "PROGRAM_ATTRS",
    "RUNS_OTHER_PROGRAMS",
    "WEB_SCHEMES",
    "Compliance",
    "Controls",
    "DirectoryView",
    "PoolAssignments",
    "RequestFacts",
    "approval_preview",
    "build_context",
    "directory_records",
    "pool_record",
    "reads_program",
    "request_digest",
    "session_records",
    "tool_args",
]

CONTROL_FLAGS = ("read_only", "no_clipboard", "no_file_transfer")
#: tools that can step around no_clipboard, no_file_transfer and allowed_hosts (a shell can run
#: xclip or base64, a program started with arguments can be `chromium URL`): refused in a session
#: with any of those controls unless a permit of its acquire says `@allow_alongside(...)`
BYPASS_TOOLS = ("run_command", "launch_app")
#: the schemes open_url takes without a permit's `@allow_schemes(...)`
WEB_SCHEMES = ("http", "https")
#: the desktop user's home in Corral's images: relative and `~` paths start there (as in pcd)
PC_HOME = "/home/user"
#: the PATH of every PC (corral.runtime.oci): where pcd finds a program given by bare name
PC_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
#: the context.args attributes that describe the program: a stored policy that reads any of
#: them "restricts programs", and then commands whose program cannot be known are refused
PROGRAM_ATTRS = frozenset({"program", "program_path", "argv", "command"})
#: programs whose arguments name another program to run (shells, launchers, interpreters,
#: terminals): with them the program a policy sees is not the one that runs, so they count as
#: `shell` (refused while a policy restricts programs)
RUNS_OTHER_PROGRAMS = frozenset(
    {
        # shells
        "sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox", "toybox",
        # launchers
        "env", "nice", "nohup", "timeout", "stdbuf", "setsid", "ionice", "chrt", "taskset",
        "xargs", "time", "sudo", "su", "runuser", "doas", "flock", "script", "watch", "unbuffer",
        "strace", "ltrace", "gdb", "parallel", "find", "unshare", "nsenter", "chroot", "setpriv",
        "systemd-run", "dbus-launch", "xdg-open", "x-terminal-emulator", "xterm", "uxterm",
        "gnome-terminal", "konsole", "xfce4-terminal", "lxterminal", "st", "urxvt",
        # interpreters
        "python", "python3", "perl", "ruby", "node", "nodejs", "php", "lua", "tclsh", "wish",
        "awk", "gawk", "mawk", "nawk", "expect", "vim", "vi", "nvim", "emacs", "ed", "sed",
        # programs that run a command or open anything from their options or their input
        "dbus-run-session", "tar", "zip", "git", "make", "ssh", "rsync", "less", "more", "man",
        "xdotool", "openbox", "startx", "xinit",
        # browsers: a bare one still takes any typed URL
        "chromium", "chromium-browser", "x-www-browser", "www-browser", "sensible-browser",
        "firefox", "firefox-esr",
    }
)  # fmt: skip
#: versioned interpreter names (python3.11, perl5.36.0, ...): they run other programs too
_VERSIONED_INTERPRETER = re.compile(r"(python|perl|ruby|php|lua|node|tclsh|wish)[0-9.]*")


def runs_other_programs(program: str) -> bool:
    """Whether what `program` runs is decided by its arguments or input, not by its name."""
    return program in RUNS_OTHER_PROGRAMS or _VERSIONED_INTERPRETER.fullmatch(program) is not None


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

    `allowed_hosts` None means any host; a tuple (maybe empty) restricts open_url to those hosts
    (normalised: lowercase, IDNA, no trailing dot).
    `allow_alongside` and `allow_schemes` are exemptions only a permit of the acquire grants
    (`@allow_alongside("run_command launch_app")`, `@allow_schemes("file about")`): the bypass
    tools in a session with controls, and open_url schemes besides http and https.
    """

    read_only: bool = False
    no_clipboard: bool = False
    no_file_transfer: bool = False
    allowed_hosts: tuple[str, ...] | None = None
    allow_alongside: tuple[str, ...] = ()
    allow_schemes: tuple[str, ...] = ()

    def merge(self, other: Controls) -> Controls:
        """Both sets of restrictions at once: flags add up, host lists intersect; exemptions
        (each granted by a permit) add up."""
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
            tuple(sorted({*self.allow_alongside, *other.allow_alongside})),
            tuple(sorted({*self.allow_schemes, *other.allow_schemes})),
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
            "allow_alongside": sorted(self.allow_alongside),
            "allow_schemes": sorted(self.allow_schemes),
        }

    def to_json(self) -> dict[str, Any]:
        """The stored and shown form; the exemptions appear only when a permit granted them."""
        out: dict[str, Any] = {
            "read_only": self.read_only,
            "no_clipboard": self.no_clipboard,
            "no_file_transfer": self.no_file_transfer,
            "allowed_hosts": list(self.allowed_hosts) if self.allowed_hosts is not None else None,
        }
        if self.allow_alongside:
            out["allow_alongside"] = list(self.allow_alongside)
        if self.allow_schemes:
            out["allow_schemes"] = list(self.allow_schemes)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, *, stored: bool = False) -> Controls:
        """From an acquire request or (`stored`) the store; unknown keys are refused, not
        ignored. An acquire request cannot grant itself exemptions: only the store (which got
        them from permits) holds them."""
        if not data:
            return cls()
        known = {*CONTROL_FLAGS, "allowed_hosts"}
        if stored:
            known |= {"allow_alongside", "allow_schemes"}
        unknown = set(data) - known
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
                tuple(sorted({normalize_host_name(h) for h in hosts if h.strip()}))
                if hosts is not None
                else None
            ),
            allow_alongside=tuple(sorted(str(t) for t in data.get("allow_alongside") or ())),
            allow_schemes=tuple(sorted(str(t) for t in data.get("allow_schemes") or ())),
        )

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> Controls:
        """A permit's grant controls: `@controls("read_only no_clipboard")` and
        `@allowed_hosts("example.com docs.example.com")`; and its exemptions:
        `@allow_alongside("run_command launch_app")`, `@allow_schemes("file about")`."""
        words = annotations.get("controls", "").replace(",", " ").split()
        unknown = set(words) - set(CONTROL_FLAGS)
        if unknown:
            raise InvalidInputError(
                f"unknown session control(s) in @controls: {', '.join(sorted(unknown))}",
                hint=f"use {', '.join(CONTROL_FLAGS)}",
            )
        hosts = annotations.get("allowed_hosts")
        alongside = annotations.get("allow_alongside", "").replace(",", " ").split()
        if set(alongside) - set(BYPASS_TOOLS):
            raise InvalidInputError(
                f"unknown tool(s) in @allow_alongside: "
                f"{', '.join(sorted(set(alongside) - set(BYPASS_TOOLS)))}",
                hint=f"use {', '.join(BYPASS_TOOLS)}",
            )
        schemes = annotations.get("allow_schemes", "").replace(",", " ").split()
        return cls(
            read_only="read_only" in words,
            no_clipboard="no_clipboard" in words,
            no_file_transfer="no_file_transfer" in words,
            allowed_hosts=(
                tuple(sorted({normalize_host_name(h) for h in hosts.replace(",", " ").split()}))
                if hosts is not None
                else None
            ),
            allow_alongside=tuple(sorted(set(alongside))),
            allow_schemes=tuple(sorted({x.lower().rstrip(":") for x in schemes})),
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


def _normpath(path: str, home: str = PC_HOME) -> str:
    """A path as pcd resolves it (corral.pcd.safepath): `~` and relative paths start at the
    home folder; then lexically normalised, so `.ssh/id_rsa`, `~/.ssh/id_rsa` and
    `/home/user/./.ssh/id_rsa` all read `/home/user/.ssh/id_rsa`."""
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    elif not path.startswith("/"):
        path = home.rstrip("/") + "/" + path
    normal = posixpath.normpath(path)
    return normal[1:] if normal.startswith("//") else normal


def _is_assignment(word: str) -> bool:
    name, eq, _ = word.partition("=")
    return bool(eq) and name.replace("_", "a").isalnum() and not name[:1].isdigit()


def _program(word: str, home: str) -> tuple[str, str]:
    """(program, program_path) of an argv[0]: a word with a slash is a path (relative ones start
    at home, as pcd's working directory), normalised; a bare word is looked up by pcd on the
    PC's PATH (PC_PATH: system folders only the image writes), and program_path is the word."""
    if "/" in word:
        path = posixpath.normpath(word if word.startswith("/") else f"{home}/{word}")
        if posixpath.dirname(path) in PC_PATH:
            return posixpath.basename(path), path
        # outside the system folders (a copy in /tmp named `ls`): the name proves nothing, so
        # the program is its whole path, which no rule on a bare name matches
        return path, path
    return word, word


def _command_args(argv: list[str], *, line: bool, home: str) -> dict[str, Any]:
    """program, program_path, argv, argc, command and shell of one command: `argv`, or with
    `line` a shell line (`argv[0]`, run by /bin/sh -c). `shell` is also true when the program
    runs other programs named in its arguments (RUNS_OTHER_PROGRAMS): then what runs cannot be
    read off the argv."""
    out: dict[str, Any] = {"argv": list(dict.fromkeys(argv)), "argc": len(argv), "shell": line}
    if line:
        out["command"] = argv[0] if len(argv) == 1 else shlex.join(argv)
        # best effort for the shell's first word: skip FOO=1 assignments
        words = []
        try:
            words = shlex.split(argv[0])
        except ValueError:  # unbalanced quotes: the shell will refuse it
            words = argv[0].split()
        out["argv"] = list(dict.fromkeys(words))
        out["argc"] = len(words)
        first = next((w for w in words if not _is_assignment(w)), "")
        argv = [first] if first else []
    else:
        out["command"] = shlex.join(argv)
    if argv and argv[0]:
        out["program"], out["program_path"] = _program(argv[0], home)
        if runs_other_programs(out["program"]) or "/" in out["program"]:
            out["shell"] = True  # what runs is decided by arguments, input or an unknown file
    return out


def tool_args(tool: str, args: Mapping[str, Any] | None, *, home: str = PC_HOME) -> dict[str, Any]:
    """The arguments policy may look at (the schema's ToolArgs): for run_command and launch_app
    the program, its path, the argv and whether a shell (or a program that runs others) decides
    what runs; for open_url the URL, its scheme and host as the browser parses them; for file
    tools the path as pcd resolves it."""
    args = args or {}
    out: dict[str, Any] = {}
    if tool == "run_command":
        if isinstance(args.get("argv"), list) and args["argv"]:
            out.update(_command_args([str(a) for a in args["argv"]], line=False, home=home))
        elif isinstance(args.get("command"), str):
            out.update(_command_args([args["command"]], line=True, home=home))
    elif tool == "launch_app" and isinstance(args.get("command"), list) and args["command"]:
        out.update(_command_args([str(a) for a in args["command"]], line=False, home=home))
    elif tool == "open_url" and isinstance(args.get("url"), str):
        out["url"] = args["url"]
        try:
            parsed = parse_web_url(args["url"])
        except InvalidInputError:  # not a URL: no scheme, no host (refused by the system)
            out["scheme"], out["host"] = "", ""
        else:
            out["scheme"], out["host"] = parsed.scheme, parsed.host
    if isinstance(args.get("path"), str):
        out["path"] = _normpath(args["path"], home)
    return out


def _reads_program(node: Any) -> bool:
    if isinstance(node, dict):
        dot = node.get(".")
        if (
            isinstance(dot, dict)
            and dot.get("attr") in PROGRAM_ATTRS
            and dot.get("left") == {".": {"left": {"Var": "context"}, "attr": "args"}}
        ):
            return True
        return any(_reads_program(v) for v in node.values())
    if isinstance(node, list):
        return any(_reads_program(v) for v in node)
    return False


def reads_program(statements: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any of these policies (Cedar's JSON form) reads `context.args.program` (or
    program_path, argv, command): such a policy restricts programs, and a command whose program
    a shell decides would step around it. Read once per policy-set version."""
    return any(_reads_program(est.get("conditions", [])) for est in statements)


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
    args: Mapping[str, Any] | None = None,
    program_rules: bool = False,
) -> dict[str, Any]:
    """The context record of one request (see the schema's `Context` type). `program_rules`:
    some stored policy reads the program of a command (see PROGRAM_ATTRS)."""
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
        "program_rules": program_rules,
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
    tool: str, args: Mapping[str, Any], policy_args: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """What a sponsor reads before answering: the arguments policy saw, and every argument of
    the request, long text cut with its size and hash (typed or clipboard text: the text; a
    file: its path, size in bytes and first lines). The approval covers the full arguments
    (`request_digest`), so the hash names exactly what was approved."""
    out: dict[str, str] = {  # policy sees argv, argc and shell too: shown as JSON
        k: _cut(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
        for k, v in (policy_args or {}).items()
    }
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
